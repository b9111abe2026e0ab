"""The verifier as a Ray Serve deployment: each replica loads the target and serves gRPC directly.

A replica loads the target (`verifier_service.target`), starts its own `VerifierServer` (a
grpc.aio server on a free port), and reports its address and open sessions to the verifier
directory every `heartbeat_s`. Drafters dial replicas directly; Serve handles only carry the
once-a-second heartbeat. When Serve stops a replica (scale-down, redeploy), the replica leaves
the directory, refuses new sessions and lets open ones finish for up to the grace period.
`check_health` fails if the gRPC server has stopped, so Serve replaces the replica.

Serve's own autoscaling signal (requests through its handles) never sees the verifier's traffic,
so each replica reports its open sessions and waiting work as custom autoscaling metrics
(`record_autoscaling_stats`), which `verifier_service.autoscale.scale_on_sessions` reads.

A replica receives its own settings: the target's `core.hf.ModelLoadConfig` (validated here,
where the weights are), its `VerifierServerConfig`, the heartbeat interval and where its compute
threads run, and how it writes its logs (`core.logs.LogSettings`: the component is "verifier", the
replica its Serve replica id; each session's lines carry its request's id). It records the
verifier's metrics (`verifier_service.metrics`) through the server's observer; the heartbeat also
sets the gauges (open sessions, KV slots) each beat. This module only hosts; the protocol is
`verifier_service.server`.
"""

from __future__ import annotations

import logging
import threading

import ray
import torch
from ray import serve

from core.hf import ModelLoadConfig
from core.logs import LogSettings, configure_logging
from verifier_service.metrics import VerifierMetrics
from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.target import TargetModel

log = logging.getLogger(__name__)


@serve.deployment(name="Verifier")
class VerifierDeployment:
    def __init__(self, target: ModelLoadConfig, server: VerifierServerConfig, directory, heartbeat_s: float = 1.0,
                 torch_threads: int | None = None, cpus: list[int] | None = None, logs: LogSettings = LogSettings()):
        replica = serve.get_replica_context().replica_id.unique_id
        configure_logging(logs, component="verifier", replica=replica)
        if torch_threads:  # unset: Ray's OMP_NUM_THREADS (see drafter_service/deployment.py)
            torch.set_num_threads(torch_threads)
        self.model = TargetModel(ModelLoadConfig.model_validate(target.model_dump()))
        if server.host in ("0.0.0.0", "::") and not server.advertise_host:
            # drafters on other nodes dial this
            server = server.model_copy(update={"advertise_host": ray.util.get_node_ip_address()})
        self.config = server
        self.heartbeat_s = heartbeat_s
        self.metrics = VerifierMetrics()
        self.server = VerifierServer(self.model, self.config, replica=replica, cpus=cpus, observer=self.metrics).start()
        self.directory = directory
        self._stop = threading.Event()
        # Heartbeats block on the directory's reply, so they run on a thread of their own (the
        # constructor runs on Serve's event loop, where blocking calls are refused).
        threading.Thread(target=self._heartbeats, name="verifier-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        servicer = self.server.servicer
        servicer.report_gauges()
        self.directory.heartbeat.remote(self.server.address, servicer.replica, self.server.active_sessions,
                                        self.config.max_sessions, servicer.stats()).result(timeout_s=10)

    def _heartbeats(self) -> None:
        while True:
            try:
                self._beat()
            except Exception as err:  # the directory restarting: try again next beat
                log.warning("verifier heartbeat failed: %s", err)
            if self._stop.wait(self.heartbeat_s):
                return

    def address(self) -> str:
        return self.server.address

    def active_sessions(self) -> int:
        return self.server.active_sessions

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics (Ray Serve calls this on each replica periodically)."""
        servicer = self.server.servicer
        return {"sessions": float(servicer.active_sessions), "queued": float(servicer.waiting)}

    def check_health(self) -> None:
        if not self.server._thread.is_alive():
            raise RuntimeError("the verifier's gRPC server has stopped")

    def __del__(self):
        self._stop.set()
        self.server.drain()
        try:
            self.directory.remove.remote(self.server.address)
        except Exception:
            pass
        self.server.stop(grace_s=10.0)
