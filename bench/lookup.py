"""`python -m bench lookup`: what each part of a hybrid specialist adds, task by task.

On each task's held-out test prompts, through the engine beside plain decoding, one run greedy
and one sampled at T=1 (prompt i seeded i). Under sampling a hybrid grafts no lookups (a copied
token was not drawn from the model's distribution, `drafter_service.hybrid`), so at T=1 the
lookup columns measure what the lookups cost when they cannot help. Beside tau, the plain
outputs' repeat share: how much of the text copies earlier text, which lookups predict exactly.
- `generic`: the generic drafter (the single-drafter baseline);
- `generic + prompt lookup`: the generic drafter as a hybrid with no datastore;
- `generic + all datastores`: the generic drafter as a hybrid with one datastore of every task's
  text (what a drafter without routing could use);
- `specialist model`: the task's specialist model alone;
- `specialist + prompt lookup`: that model as a hybrid with no datastore;
- `specialist + task datastore`: that model as a hybrid with its task's datastore (the zoo's
  hybrid specialist).
So the matrix separates distillation on the task, lookups in the context, and the datastore,
and shows what a task's own datastore adds over one of every task's. Needs a zoo built with
task datastores (`DIR/datastores`). Knows nothing about how the zoo was built.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench.common import check_sampled_generation, load_zoo, provenance, provenance_lines, write_results
from drafter_service.base import create_drafter
from drafter_service.datastore import Datastore
from specroute.engine import Engine
from specroute.measure import PLAIN, TEMPERATURES, compare_engines, sampling_at, temperature_key
from specroute.zoo.build import DATASTORES
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import generic_drafter

METHODS = ("generic", "generic + prompt lookup", "generic + all datastores", "specialist model",
           "specialist + prompt lookup", "specialist + task datastore")


def run_lookup_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, out: Path) -> dict:
    manifest, target = load_zoo(zoo, preset, check_sampling=False)
    tasks = manifest["corpus"]["families"]
    stores = {task: zoo / DATASTORES / f"{task}.npz" for task in tasks}
    missing = [str(p) for p in stores.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{zoo} has no task datastores ({missing[0]}): rebuild it with a preset using lookup")
    check_sampled_generation(zoo, manifest, target)  # once the zoo is known to have what this bench needs
    generic = zoo / next(d["path"] for d in manifest["drafters"] if d["name"] == generic_drafter(manifest))
    specialists = {d["task"]: d for d in manifest["drafters"] if d["task"] and d["path"]}
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    by_temperature = {temperature_key(t): {} for t in TEMPERATURES}
    with tempfile.TemporaryDirectory() as tmp:
        merged = [Datastore.load(p) for p in stores.values()]
        everything = Path(tmp) / "all.npz"
        Datastore(np.concatenate([s.tokens for s in merged]), merged[0].eos).save(everything)
        # The generic drafters are the same for every task: loaded (and the big index built) once.
        generics = {"generic": create_drafter("model", {"path": generic}),
                    "generic + prompt lookup": create_drafter("hybrid", {"path": generic}),
                    "generic + all datastores": create_drafter("hybrid", {"path": generic, "datastore": everything})}
        with tqdm(total=len(specialists) * prompts_per_task * (len(METHODS) + 1) * len(TEMPERATURES),
                  desc="bench lookup") as bar:
            for task, spec in specialists.items():
                model = zoo / spec["path"]
                drafters = {
                    **generics,
                    "specialist model": create_drafter("model", {"path": model}),
                    "specialist + prompt lookup": create_drafter("hybrid", {"path": model}),
                    "specialist + task datastore": create_drafter("hybrid", {"path": model, "datastore": stores[task]}),
                }
                engines = {PLAIN: Engine(target), **{name: Engine(target, d) for name, d in drafters.items()}}
                prompts = [target.tokenizer.encode(ex.prompt) for ex in tests if ex.task == task][:prompts_per_task]
                for temperature in TEMPERATURES:
                    cells, mismatches = compare_engines(engines, prompts, max_new_tokens, bar,
                                                        sampling=sampling_at(temperature))
                    if mismatches:
                        raise RuntimeError(f"task {task!r}: {mismatches} differ from plain decoding; this is a bug")
                    by_temperature[temperature_key(temperature)][task] = {**cells, "specialist": spec["name"]}
    result = {**provenance("lookup", zoo), "zoo": str(zoo), "prompts_per_task": prompts_per_task,
              "max_new_tokens": max_new_tokens, "methods": list(METHODS), "temperatures": list(TEMPERATURES),
              "cells": by_temperature[temperature_key(0.0)], "by_temperature": by_temperature}
    write_results(out, "lookup", result, _markdown(result))
    return result


def _markdown(r: dict) -> str:
    lines = ["# What a hybrid specialist's parts add", "", *provenance_lines(r),
             f"Zoo: `{r['zoo']}`; {r['prompts_per_task']} test prompts per task, {r['max_new_tokens']} new tokens, "
             "greedy (every output identical to plain decoding) and sampled at T=1 (prompt i seeded i).", "",
             "tau (tokens per verification round, bonus included), and in brackets the speedup over plain decoding "
             "measured in the same run; repeat: the plain output's share of tokens that complete a 6-gram already "
             "seen in the prompt or the output (copying, which lookups predict exactly).", ""]
    for key, cells in r["by_temperature"].items():
        lines += [f"## T={key}", "", "| task | " + " | ".join(r["methods"]) + " | repeat |",
                  "|---|" + "---|" * (len(r["methods"]) + 1)]
        means = {m: [] for m in r["methods"]}
        for task, row in cells.items():
            lines.append(f"| {task} | " + " | ".join(f"{row[m]['tau']:.2f} ({row[m]['speedup']:.2f}x)"
                                                    for m in r["methods"]) + f" | {row[PLAIN]['repeat_share']:.2f} |")
            for m in r["methods"]:
                means[m].append(row[m]["tau"] / row["generic"]["tau"])
        lines += ["| **tau / generic's, mean** | " + " | ".join(f"{sum(v) / len(v):.2f}x" for v in means.values())
                  + " | |", ""]
    return "\n".join(lines)
