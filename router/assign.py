"""The routing table: per sampling mode, each task's drafter, its eligible drafters and their priors.

Drafter assignment (`specroute.offline.assign`) measures every drafter on every task's sample
prompts, greedy and sampled at T=1, and writes `routing.json`: per mode, the table (each task's
fastest drafter, or `plain` when none is faster than plain decoding), the eligible lists (every
drafter faster than plain, best first, whose measured tokens/s are the policy's priors), the
whole measured matrix and the default drafter for unsure prompts; how to load every drafter;
and the task artifact's version it was made for. `RoutingTable.load` reads it back and refuses
another schema.
This module knows nothing about measuring, drafters' code, Redis or serving.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA = 2
ROUTING_FILE = "routing.json"
GREEDY, SAMPLED = "greedy", "sampled"
MODES = (GREEDY, SAMPLED)
PLAIN_DRAFTER = {"kind": "plain", "options": {}}  # the route when no drafter is faster than none


def mode_of(greedy: bool) -> str:
    """The routing mode of a request: GREEDY for greedy decoding, SAMPLED for any temperature."""
    return GREEDY if greedy else SAMPLED


@dataclass
class Routes:
    """One sampling mode's routes."""

    table: dict[str, str]  # task -> drafter (PLAIN when none is faster than plain decoding)
    eligible: dict[str, list[str]]  # task -> the drafters faster than plain, best first (else [PLAIN])
    matrix: dict[str, dict[str, dict]]  # task -> drafter -> {tau, tokens_per_s, speedup, ...}
    default: str  # for prompts of no known task, or classified without confidence

    def prior(self, task: str, drafter: str) -> float:
        return self.matrix.get(task, {}).get(drafter, {}).get("tokens_per_s", 0.0)


@dataclass
class RoutingTable:
    modes: dict[str, Routes]  # GREEDY and SAMPLED
    drafters: dict[str, dict]  # name -> {"kind", "options"}; PLAIN among them
    tasks_version: str
    target: str

    def routes(self, mode: str) -> Routes:
        return self.modes[mode]

    @property
    def tasks(self) -> list[str]:
        """The tasks with routes (the same in every mode)."""
        return list(self.modes[GREEDY].table)

    def routed(self) -> set[str]:
        """Every drafter some route or default names, in any mode."""
        return {d for r in self.modes.values() for d in [r.default, *r.table.values()]}

    def save(self, path: Path) -> None:
        data = {"schema": SCHEMA, "modes": {m: asdict(r) for m, r in self.modes.items()}, "drafters": self.drafters,
                "tasks_version": self.tasks_version, "target": self.target}
        Path(path).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> "RoutingTable":
        path = Path(path)
        if path.is_dir():
            path = path / ROUTING_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no routing table at {path}: run `specroute tasks assign` first")
        data = json.loads(path.read_text())
        if data.pop("schema", None) != SCHEMA:
            raise ValueError(f"{path} is not a routing table of schema {SCHEMA}: run `specroute tasks assign` again")
        if set(data.get("modes", {})) != set(MODES):
            raise ValueError(f"{path} must route both modes {MODES}")
        return cls({m: Routes(**r) for m, r in data.pop("modes").items()}, **data)
