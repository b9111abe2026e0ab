"""Starting and stopping the whole system: `specroute serve --config FILE [--address ADDR]`.

`LocalSystem.start(config)`:
1. starts Redis when the config names none (the embedded server, `router.redis_server`);
2. connects to Ray: a local Ray started here (the default), or an existing cluster (`address`).
   With the config's `ray_cpus`, Redis and a Ray started here start on those CPUs
   (`core.cpus`);
3. starts Serve with HTTP on `endpoints.host:http_port` and the gRPC proxy on `grpc_port`,
   registered for `specroute.v1.SpecRoute`;
4. deploys the application (`specroute.app.build_app`) and waits until it is running.
`stop()` deletes the application and, for what it started itself, shuts Serve, Ray and Redis down
(Redis's working directory included). A start that fails part way stops what it had started.

This module knows how to start things, not what they do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass

from specroute.config import SystemConfig
from core import cpus as cpu_affinity

log = logging.getLogger("specroute")


@dataclass
class LocalSystem:
    config: SystemConfig
    address: str | None = None
    started_ray: bool = False
    redis: object | None = None
    startup_s: float = 0.0

    @property
    def grpc_address(self) -> str:
        return f"{self.config.endpoints.host}:{self.config.endpoints.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.endpoints.tls else "http"
        return f"{scheme}://{self.config.endpoints.host}:{self.config.endpoints.http_port}"

    @property
    def metrics_url(self) -> str | None:
        """Ray's Prometheus endpoint on this node (every replica's metrics on it), once connected."""
        import ray
        if not ray.is_initialized():
            return None
        node = ray.get_runtime_context().get_node_id()
        info = next((n for n in ray.nodes() if n["NodeID"] == node), None)
        return f"http://{info['NodeManagerAddress']}:{info['MetricsExportPort']}/metrics" if info else None

    @property
    def grpc_tls_address(self) -> str | None:
        ep = self.config.endpoints
        return f"{ep.host}:{ep.grpc_tls_port}" if ep.grpc_tls_port else None

    @classmethod
    def start(cls, config: SystemConfig, address: str | None = None, num_cpus: int | None = None,
              ready_timeout_s: float = 600.0) -> "LocalSystem":
        import ray
        from ray import serve
        from ray.serve.config import gRPCOptions, HTTPOptions

        from router.grpc_api import TLS_ENV
        from specroute.app import GRPC_SERVICER, build_app

        t0 = time.perf_counter()
        system = cls(config, address)
        try:
            # Processes started here inherit this thread's CPUs: with `ray_cpus`, Redis, Ray's daemons
            # and so every replica start on them; only compute threads with `deployment.cpus` leave.
            local_cpus = config.ray_cpus if address is None and not ray.is_initialized() else None
            if config.ray_cpus and local_cpus is None:
                log.warning("ray_cpus %s ignored: it applies to a Ray started here, not to one already running",
                            config.ray_cpus)
            ep = config.endpoints
            if ep.grpc_tls_port:
                # Read by the gRPC proxy's servicer function (router.grpc_api): Ray's processes
                # inherit it from a Ray started here; one already running must have it already.
                if (address is not None or ray.is_initialized()) and TLS_ENV not in os.environ:
                    raise ValueError(f"endpoints.grpc_tls_port: Ray is already running, so its processes do not "
                                     f"get {TLS_ENV} from here; set it in their environment (router/grpc_api.py)")
                os.environ[TLS_ENV] = json.dumps({"host": ep.host, "port": ep.grpc_tls_port,
                                                  "files": ep.tls.model_dump(mode="json")})
            try:
                with cpu_affinity.starting_on(local_cpus, "ray_cpus"):
                    system._connect(num_cpus)
            finally:
                os.environ.pop(TLS_ENV, None)
            config, ep = system.config, system.config.endpoints
            ssl = {} if ep.tls is None else {"ssl_certfile": str(ep.tls.cert), "ssl_keyfile": str(ep.tls.key),
                                             **({"ssl_ca_certs": str(ep.tls.ca)} if ep.tls.ca else {})}
            serve.start(http_options=HTTPOptions(host=ep.host, port=ep.http_port, **ssl),
                        grpc_options=gRPCOptions(port=ep.grpc_port, grpc_servicer_functions=[GRPC_SERVICER]))
            serve.run(build_app(config), name=config.app_name, route_prefix="/", blocking=False)
            system._wait_ready(ready_timeout_s)
        except BaseException:
            # A start that fails part way (a deployment that does not come up, a port in use) must
            # not leave Redis, Ray or Serve behind: nobody else holds a handle to stop them.
            with contextlib.suppress(Exception):
                system.stop()
            raise
        system.startup_s = time.perf_counter() - t0
        return system

    def _connect(self, num_cpus: int | None) -> None:
        """Starts the embedded Redis when the config names none, and connects to Ray (starting a
        local one unless `address` names a cluster)."""
        import ray
        if self.config.redis.url is None:
            from router.redis_server import EmbeddedRedis
            self.redis = EmbeddedRedis(supervise=True).start()  # restarted, with its data, if it dies
            self.config = self.config.model_copy(update={"redis": self.config.redis.model_copy(
                update={"url": self.redis.url})})
        if not ray.is_initialized():
            repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}}
            if self.address is None:
                # Logical CPUs: deployments ask for fractions; a laptop's cores are shared, not split. At
                # least what the app's replicas ask for, so that a zoo with many drafters still starts.
                logical = max(4, os.cpu_count() or 1, math.ceil(self.config.starting_cpus()))
                ray.init(num_cpus=num_cpus or logical, include_dashboard=False,
                         runtime_env=env, logging_level=logging.WARNING, log_to_driver=False,
                         _metrics_export_port=self.config.endpoints.metrics_port)
                self.started_ray = True
            else:
                ray.init(address=self.address, runtime_env=env, logging_level=logging.WARNING)

    def _wait_ready(self, timeout_s: float) -> None:
        from ray import serve
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            app = serve.status().applications.get(self.config.app_name)
            if app is not None and app.status == "RUNNING":
                return
            if app is not None and app.status == "DEPLOY_FAILED":
                raise RuntimeError(f"deploying {self.config.app_name} failed: {app.message}")
            time.sleep(0.5)
        raise TimeoutError(f"{self.config.app_name} was not running after {timeout_s:.0f} s")

    def replica_counts(self) -> dict[str, int]:
        from ray import serve
        app = serve.status().applications[self.config.app_name]
        return {name: sum(d.replica_states.values()) for name, d in app.deployments.items()}

    def stop(self) -> None:
        import ray
        from ray import serve
        try:
            if ray.is_initialized():
                serve.delete(self.config.app_name)
        finally:
            if self.started_ray:
                serve.shutdown()
                ray.shutdown()
            if self.redis is not None:
                self.redis.close()  # the server and its working directory

    def __enter__(self) -> "LocalSystem":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
