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

This module only hosts; the protocol is `verifier_service.server`.
"""

from __future__ import annotations

import logging
import threading

import ray
import torch
from ray import serve

from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.target import TargetModel

log = logging.getLogger("ray.serve")


@serve.deployment(name="Verifier")
class VerifierDeployment:
    def __init__(self, target: dict, verifier: dict, directory, torch_threads: int | None = None,
                 cpus: list[int] | None = None):
        if torch_threads:  # unset: Ray's OMP_NUM_THREADS (see drafter_service/deployment.py)
            torch.set_num_threads(torch_threads)
        self.model = TargetModel.from_dir(target["path"], device=target.get("device", "auto"),
                                          dtype=target.get("dtype", "float32"))
        server_fields = set(VerifierServerConfig.model_fields)
        settings = {k: v for k, v in verifier.items() if k in server_fields}
        if settings.get("host") in ("0.0.0.0", "::") and not settings.get("advertise_host"):
            settings["advertise_host"] = ray.util.get_node_ip_address()  # drafters on other nodes dial this
        self.config = VerifierServerConfig(**settings)
        self.heartbeat_s = verifier.get("heartbeat_s", 1.0)
        replica = serve.get_replica_context().replica_id.unique_id
        self.server = VerifierServer(self.model, self.config, replica=replica, cpus=cpus).start()
        self.directory = directory
        self._stop = threading.Event()
        # Heartbeats block on the directory's reply, so they run on a thread of their own (the
        # constructor runs on Serve's event loop, where blocking calls are refused).
        threading.Thread(target=self._heartbeats, name="verifier-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        servicer = self.server.servicer
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
