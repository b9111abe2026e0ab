"""Drafter assignment: per detected task, the drafter with the best measured speedup.

TaskSpec's second step. For each task of a task artifact (`router.detect`) and each candidate
drafter, generates greedily from the task's sample prompts through the engine, beside plain
decoding (`specroute.measure.compare_engines`), and records tau, tokens/s and the speedup over
plain. The routing table maps every task to its fastest drafter; every drafter that ran is kept
per task, best first, as the policy's eligible arms with their measured tokens/s as priors.
Sample prompts too long for the target's context (with room for the new tokens) are skipped and
counted; a task left with no prompt to measure gets no entry, so prompts classified into it go to
the default drafter (and a request naming it is refused as an unknown task).

`routing.json` holds the table, the eligible lists, the whole measured matrix, the default
(generic) drafter, how to load every drafter, and the task artifact's version it was made for.
This module knows nothing about Redis or serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.measure import PLAIN, compare_engines, fit_prompts
from verifier_service.target import TargetModel

SCHEMA = 1
ROUTING_FILE = "routing.json"


@dataclass(frozen=True)
class DrafterRef:
    """How to load a drafter: its kind and its settings for `create_drafter`."""

    name: str
    kind: str
    options: dict

    def load(self):
        return create_drafter(self.kind, dict(self.options))

    def as_dict(self) -> dict:
        return {"kind": self.kind, "options": {k: str(v) for k, v in self.options.items()}}


def zoo_drafters(zoo: Path) -> tuple[Path, list[DrafterRef], str | None]:
    """(target dir, every drafter of a built zoo, the generic drafter's name if it has one)."""
    from specroute.zoo.manifest import drafter_options, generic_drafter, load_manifest
    zoo = Path(zoo)
    manifest = load_manifest(zoo)
    refs = [DrafterRef(d["name"], d["kind"], drafter_options(zoo, d)) for d in manifest["drafters"]]
    return zoo / manifest["target"]["path"], refs, generic_drafter(manifest)


@dataclass
class RoutingTable:
    table: dict[str, str]  # task -> drafter
    eligible: dict[str, list[str]]  # task -> drafters, best first
    matrix: dict[str, dict[str, dict]]  # task -> drafter -> {tau, tokens_per_s, speedup, ...}
    default: str
    drafters: dict[str, dict]  # name -> {"kind", "options"}
    tasks_version: str
    target: str

    def prior(self, task: str, drafter: str) -> float:
        return self.matrix.get(task, {}).get(drafter, {}).get("tokens_per_s", 0.0)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"schema": SCHEMA, **self.__dict__}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "RoutingTable":
        path = Path(path)
        if path.is_dir():
            path = path / ROUTING_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no routing table at {path}: run `specroute tasks assign` first")
        data = json.loads(path.read_text())
        if data.pop("schema", None) != SCHEMA:
            raise ValueError(f"{path} is not a routing table of schema {SCHEMA}")
        return cls(**data)


def assign_drafters(samples: dict[str, list[str]], target_dir: Path, drafters: list[DrafterRef], default: str | None,
                    tasks_version: str, prompts_per_task: int = 8, max_new_tokens: int = 64,
                    device: str = "auto") -> RoutingTable:
    """Measures every drafter on every task's sample prompts; the fastest per task wins."""
    names = [d.name for d in drafters]
    if default is None:
        raise ValueError("no default drafter for unsure prompts: name one (--default)")
    if default not in names:
        raise ValueError(f"default drafter {default!r} is not among the drafters {names}")
    target = TargetModel.from_dir(target_dir, device=device)
    engines = {PLAIN: Engine(target), **{d.name: Engine(target, d.load()) for d in drafters}}
    matrix, table, eligible = {}, {}, {}
    prompts, skipped = {}, {}
    for task, texts in samples.items():
        fitting, skipped[task] = fit_prompts([target.tokenizer.encode(p) for p in texts], target.max_context,
                                             max_new_tokens)
        if fitting:
            prompts[task] = fitting[:prompts_per_task]
    if any(skipped.values()):
        print(f"tasks assign: skipped {sum(skipped.values())} sample prompts too long for the target's context "
              f"({target.max_context} tokens, {max_new_tokens} of them for new tokens): "
              + ", ".join(f"{task} {n}" for task, n in skipped.items() if n))
    with tqdm(total=sum(map(len, prompts.values())) * len(engines), desc="tasks assign") as bar:
        for task, ids in prompts.items():
            cells, mismatches = compare_engines(engines, ids, max_new_tokens, bar)
            if mismatches:
                raise RuntimeError(f"task {task!r}: {mismatches} differ from plain decoding; this is a bug")
            matrix[task] = cells
            ranked = sorted(names, key=lambda n: cells[n]["speedup"], reverse=True)
            table[task], eligible[task] = ranked[0], ranked
    return RoutingTable(table, eligible, matrix, default, {d.name: d.as_dict() for d in drafters}, tasks_version,
                        str(target_dir))


def routing_summary(table: RoutingTable) -> str:
    lines = [f"{'task':<28} {'drafter':<26} {'speedup':>8} {'tau':>6}   runner-up"]
    for task, drafter in table.table.items():
        cell = table.matrix[task][drafter]
        runner = table.eligible[task][1] if len(table.eligible[task]) > 1 else "-"
        runner_cell = table.matrix[task].get(runner, {})
        runner_text = f"{runner} {runner_cell['speedup']:.2f}x" if runner_cell else "-"
        lines.append(f"{task:<28} {drafter:<26} {cell['speedup']:>7.2f}x {cell['tau']:>6.2f}   {runner_text}")
    lines.append(f"default (unsure prompts): {table.default}")
    return "\n".join(lines)
