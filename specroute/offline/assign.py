"""Drafter assignment: per detected task and sampling mode, the drafter with the best measured speedup.

TaskSpec's second step. For each task of a task artifact (`specroute.offline.detect`) and each candidate
drafter, generates from the task's sample prompts through the engine, beside plain decoding
(`specroute.measure.compare_engines`), and records tau, tokens/s and the speedup over plain. It
does so twice, once per sampling mode: greedy, and sampled at T=1 (seeded): a drafter's tokens
are accepted far less often under sampling, so the fastest drafter at T=0 may be slower than no
speculation at T=1.

Per mode, the routing table maps every task to its fastest drafter, and keeps every drafter
faster than plain decoding per task, best first, as the policy's eligible arms with their
measured tokens/s as priors. A drafter that measured slower than plain decoding is never routed
to: when none is faster, the task's route is `plain` (`drafter_service.plain`), which drafts
nothing. The default drafter for unsure prompts is likewise the generic drafter in a mode where
it is faster than plain on average over the tasks, and `plain` otherwise.

Sample prompts too long for the target's context (with room for the new tokens) are skipped and
counted; a task left with no prompt to measure gets no entry, so prompts classified into it go to
the default drafter (and a request naming it is refused as an unknown task).

`routing.json` holds, per mode, the table, the eligible lists, the whole measured matrix and the
default; how to load every drafter; and the task artifact's version it was made for.
The table's types and file are the router's (`router.assign`). This module knows nothing about Redis or serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from drafter_service.base import create_drafter
from router.assign import GREEDY, MODES, PLAIN_DRAFTER, SAMPLED, RoutingTable, Routes
from specroute.engine import Engine
from specroute.measure import PLAIN, compare_engines, fit_prompts, sampling_at
from specroute.zoo.manifest import drafter_options, generic_drafter, load_manifest, routed_drafters
from verifier_service.target import TargetModel


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
    """(target dir, every routed drafter of a built zoo (its model, hybrid and ngram drafters, and the
    feature specialists its build routed: `routed_drafters`), the generic drafter's name if it has one)."""
    zoo = Path(zoo)
    manifest = load_manifest(zoo)
    refs = [DrafterRef(d["name"], d["kind"], drafter_options(zoo, d)) for d in routed_drafters(manifest)]
    return zoo / manifest["target"]["path"], refs, generic_drafter(manifest)


def assign_drafters(samples: dict[str, list[str]], target_dir: Path, drafters: list[DrafterRef], default: str | None,
                    tasks_version: str, prompts_per_task: int = 8, max_new_tokens: int = 64,
                    device: str = "auto", seed: int = 0) -> RoutingTable:
    """Measures every drafter on every task's sample prompts, greedy and sampled at T=1 (prompt i
    seeded `seed + i`); per mode, the fastest per task wins, if it is faster than plain."""
    names = [d.name for d in drafters]
    if default is None:
        raise ValueError("no default drafter for unsure prompts: name one (--default)")
    if default not in names:
        raise ValueError(f"default drafter {default!r} is not among the drafters {names}")
    if PLAIN in names:
        raise ValueError(f"{PLAIN!r} names plain decoding in a routing table; rename that drafter")
    target = TargetModel.from_dir(target_dir, device=device)
    engines = {PLAIN: Engine(target), **{d.name: Engine(target, d.load()) for d in drafters}}
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
    sampling = {GREEDY: None, SAMPLED: sampling_at(1.0, seed)}
    modes = {}
    with tqdm(total=sum(map(len, prompts.values())) * len(engines) * len(MODES), desc="tasks assign") as bar:
        for mode in MODES:
            matrix = {}
            for task, ids in prompts.items():
                cells, mismatches = compare_engines(engines, ids, max_new_tokens, bar, sampling=sampling[mode])
                if mismatches:
                    raise RuntimeError(f"task {task!r}: {mismatches} differ from plain decoding; this is a bug")
                matrix[task] = cells
            modes[mode] = routes_from(matrix, default)
    return RoutingTable(modes, {**{d.name: d.as_dict() for d in drafters}, PLAIN: PLAIN_DRAFTER}, tasks_version,
                        str(target_dir))


def routes_from(matrix: dict[str, dict[str, dict]], default: str) -> Routes:
    """One mode's routes from its measured matrix (every cell holds PLAIN, speedup 1 by definition):
    per task, the drafters faster than plain, best first, or PLAIN alone; the default drafter if
    its mean speedup over the tasks is above 1, else PLAIN."""
    table, eligible = {}, {}
    for task, cells in matrix.items():
        ranked = sorted(cells, key=lambda n: cells[n]["speedup"], reverse=True)
        eligible[task] = ranked[:ranked.index(PLAIN)] or [PLAIN]
        table[task] = eligible[task][0]
    speedups = [cells[default]["speedup"] for cells in matrix.values()]
    faster = not speedups or sum(speedups) / len(speedups) > 1.0  # unmeasured: no evidence against it
    return Routes(table, eligible, matrix, default if faster else PLAIN)


def routing_summary(table: RoutingTable) -> str:
    lines = []
    for mode, routes in table.modes.items():
        lines.append(f"{mode}:")
        lines.append(f"  {'task':<28} {'drafter':<26} {'speedup':>8} {'tau':>6}   runner-up")
        for task, drafter in routes.table.items():
            cell = routes.matrix[task][drafter]
            others = [d for d in sorted(routes.matrix[task], key=lambda n: routes.matrix[task][n]["speedup"],
                                         reverse=True) if d != drafter]
            runner = others[0] if others else None
            runner_text = f"{runner} {routes.matrix[task][runner]['speedup']:.2f}x" if runner else "-"
            lines.append(f"  {task:<28} {drafter:<26} {cell['speedup']:>7.2f}x {cell['tau']:>6.2f}   {runner_text}")
        lines.append(f"  default (unsure prompts): {routes.default}")
    return "\n".join(lines)
