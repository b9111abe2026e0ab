"""The whole system on the tiny zoo, for the integration tests that need a real local Ray cluster, and
the one local Ray (with one Serve) that the test modules listed in tests/conftest.py share.

It does not know which test modules share Ray: tests/conftest.py decides, and brings `SHARED` up and down.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY_CPUS = 8  # logical CPUs of every local Ray the tests start: deployments ask for fractions


class SharedRay:
    """One local Ray for a run of test modules, started as `LocalSystem` starts its own, and the ports
    of the one Serve on it. While it is up, `start_tiny_system` serves every system on those ports:
    `LocalSystem` then neither starts nor stops Ray, its `stop()` deletes only its application, and
    Serve (started by the first system) stays up for the next one."""

    def __init__(self) -> None:
        self.endpoints: dict[str, int] | None = None  # http_port, grpc_port; None while down

    def up(self) -> None:
        import ray
        from router.redis_server import free_port
        if self.endpoints is not None:
            return
        if ray.is_initialized():
            raise RuntimeError("a Ray this process did not start through SharedRay is still running")
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        # Metrics on a port of their own, reported every second (Ray's default is every 10 s) so that
        # the metrics test reads its counters soon after its requests.
        ray.init(num_cpus=RAY_CPUS, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}},
                 logging_level=logging.WARNING, log_to_driver=False, _metrics_export_port=free_port(),
                 _system_config={"metrics_report_interval_ms": 1000})
        self.endpoints = {"http_port": free_port(), "grpc_port": free_port()}

    def down(self) -> None:
        import ray
        from ray import serve
        if self.endpoints is None:
            return
        self.endpoints = None
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


SHARED = SharedRay()


def start_tiny_system(built_zoo, drafters: tuple[str, ...], drafter_updates: dict | None = None,
                      drafter_options: dict | None = None, ready_timeout_s: float = 600.0, **overrides):
    """`LocalSystem` serving the tiny zoo with only `drafters` deployed (the routing default among
    them), and `plain` (no drafting; where the zoo's table routes when no drafter is faster), on
    free ports. overrides: config sections (as for `config_for_zoo`); drafter_updates:
    {drafter name: fields to replace in its settings}; drafter_options: {drafter name: options to
    add to its kind's options}."""
    from specroute.config import DrafterSettings
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem
    if SHARED.endpoints is not None:
        if "endpoints" in overrides:
            raise ValueError("endpoints: this test module sets its own, so it needs a Ray of its own "
                             "(OWN_RAY_MODULES in tests/conftest.py), not the shared one")
        overrides["endpoints"] = dict(SHARED.endpoints)
    config = local_config_for_zoo(built_zoo, **overrides)
    updates = {name: dict(fields) for name, fields in (drafter_updates or {}).items()}
    for name, options in (drafter_options or {}).items():
        base = next(d.options for d in config.drafters if d.name == name)
        updates.setdefault(name, {})["options"] = {**base, **options}
    chosen = [d.model_copy(update=updates.get(d.name, {})) for d in config.drafters
              if d.name in drafters and d.kind != "plain"]
    chosen.append(DrafterSettings(name="plain", kind="plain"))
    return LocalSystem.start(config.model_copy(update={"drafters": chosen}), num_cpus=RAY_CPUS,
                             ready_timeout_s=ready_timeout_s)


def served_drafters(drafters: tuple[str, ...]) -> set[str]:
    """What `start_tiny_system(built_zoo, drafters)` deploys."""
    return {*drafters, "plain"}
