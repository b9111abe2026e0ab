"""The system config of a built zoo: its target, every drafter, and its task artifact and routing.

    config = local_config_for_zoo(Path("zoo/demo"))   # a SystemConfig, ready for `specroute serve`

`config_for_zoo` lists the zoo's target and routed drafters (from its manifest: every model, hybrid and
ngram drafter, and each feature specialist the build routed for its task), points the router at
`zoo/tasks`, and adds `plain` (no drafting) where the routing table routes some requests to it.
`local_config_for_zoo` also makes the zoo's routing if it is missing and picks free loopback
ports. The config itself is validated by `specroute.config`, which knows nothing about zoos.
"""

from __future__ import annotations

from pathlib import Path

from router.assign import ROUTING_FILE, RoutingTable
from router.redis_server import free_port
from specroute.config import SystemConfig, validate_config
from specroute.measure import PLAIN
from specroute.zoo.manifest import drafter_options, load_manifest, routed_drafters
from specroute.zoo.routing import ensure_routing


def config_for_zoo(zoo: Path, with_plain: bool = False, **overrides) -> SystemConfig:
    """The system config of a built zoo: its target, every routed drafter, and zoo/tasks for routing;
    and `plain` (no drafting) where the zoo's routing table routes some requests to it, or always
    `with_plain` (so that a request can name it: the demo compares every answer with plain decoding)."""
    zoo = Path(zoo).resolve()
    manifest = load_manifest(zoo)
    drafters = [{"name": d["name"], "kind": d["kind"],
                 "options": {k: str(v) for k, v in drafter_options(zoo, d).items()},
                 "specialised_for": d.get("task"), "family": d.get("family"), "params": d.get("params", 0)}
                for d in routed_drafters(manifest)]
    routing = zoo / "tasks" / ROUTING_FILE
    if with_plain or (routing.is_file() and PLAIN in RoutingTable.load(routing).routed()):
        drafters.append({"name": PLAIN, "kind": "plain"})
    data = {"target": {"path": str(zoo / manifest["target"]["path"])}, "drafters": drafters,
            "router": {"tasks": str(zoo / "tasks")}}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_config(data)


def local_config_for_zoo(zoo: Path, with_plain: bool = False, **overrides) -> SystemConfig:
    """`config_for_zoo` for a system on this machine: the zoo's routing made first if it is missing
    (`specroute.zoo.routing.ensure_routing`), HTTP and gRPC on free loopback ports."""
    ensure_routing(zoo)
    endpoints = {"http_port": free_port(), "grpc_port": free_port(), **overrides.pop("endpoints", {})}
    return config_for_zoo(zoo, with_plain, endpoints=endpoints, **overrides)
