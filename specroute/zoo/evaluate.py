"""`specroute zoo eval`: the task x drafter matrix of a built zoo.

For every task family in the zoo and every drafter it names, generates from the task's held-out
test prompts through the engine, greedily and sampled at T=1 (prompt i seeded i), and records tau
(mean tokens per verification round, bonus included), the acceptance rate, tokens/s and the
outputs' repeat share, beside plain target decoding in the same run. Prints the tau matrices,
writes them as JSON and draws them as heatmaps in one PNG. Every greedy output is checked against
plain decoding: a mismatch would be a bug, and it is reported.

This is the measurement TaskSpec's routing rests on (which drafter is best for which task).
This module knows nothing about how the zoo was built.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from specroute.engine import Engine
from specroute.measure import PLAIN, TEMPERATURES, compare_engines, sampling_at, temperature_key
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import generic_drafter, load_drafters, load_manifest
from verifier_service.target import TargetModel


def evaluate_zoo(zoo: Path, prompts_per_task: int, max_new_tokens: int, out: Path | None = None) -> dict:
    """Writes `eval.json` and `eval_tau.png` into `out` (default: the zoo); returns the results."""
    torch.set_num_threads(2)
    zoo, out = Path(zoo), Path(out or zoo)
    manifest = load_manifest(zoo)
    target = TargetModel.from_dir(zoo / manifest["target"]["path"])
    engines = {PLAIN: Engine(target), **{name: Engine(target, d) for name, d in load_drafters(zoo, manifest).items()}}
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    tasks = manifest["corpus"]["families"]
    prompts = {task: [target.tokenizer.encode(ex.prompt) for ex in tests if ex.task == task][:prompts_per_task]
               for task in tasks}

    by_temperature = {}
    with tqdm(total=sum(map(len, prompts.values())) * len(engines) * len(TEMPERATURES), desc="zoo eval") as bar:
        for temperature in TEMPERATURES:
            cells: dict[str, dict[str, dict]] = {}
            mismatches = []
            for task in tasks:
                cells[task], wrong = compare_engines(engines, prompts[task], max_new_tokens, bar,
                                                     sampling=sampling_at(temperature))
                mismatches.extend({"task": task, "drafter": name} for name in wrong)
            by_temperature[temperature_key(temperature)] = {
                "cells": cells, "specialists": specialist_gains(manifest, cells), "lossless_mismatches": mismatches}

    greedy = by_temperature[temperature_key(0.0)]
    results = {"zoo": str(zoo), "preset": manifest["preset"], "prompts_per_task": prompts_per_task,
               "max_new_tokens": max_new_tokens, "temperatures": list(TEMPERATURES), "tasks": tasks,
               "drafters": [n for n in engines if n != PLAIN], **greedy, "by_temperature": by_temperature}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    _heatmap(results, out / "eval_tau.png")
    print(matrix_table(results))
    return results


def specialist_gains(manifest: dict, cells: dict[str, dict[str, dict]]) -> dict:
    """Per task, its specialist's tau against the generic drafter's (the first model drafter with
    no task), and the relative gain; with the mean gain over the tasks that have a specialist."""
    generic = generic_drafter(manifest)
    per_task = {}
    for task, row in cells.items():
        specialist = next((d["name"] for d in manifest["drafters"] if d["task"] == task), None)
        if generic is None or specialist is None:
            continue
        tau_s, tau_g = row[specialist]["tau"], row[generic]["tau"]
        per_task[task] = {"specialist": specialist, "generic": generic, "tau_specialist": tau_s, "tau_generic": tau_g,
                          "gain": tau_s / tau_g - 1 if tau_g else 0.0}
    gains = [v["gain"] for v in per_task.values()]
    return {"per_task": per_task, "mean_gain": sum(gains) / len(gains) if gains else None}


def matrix_table(results: dict) -> str:
    """Per temperature, the matrix as text: one row per task, one column per drafter, each cell
    tau / speedup over plain; then the plain outputs' repeat share per task."""
    drafters = results["drafters"]
    width = max(14, *(len(d) + 2 for d in drafters))
    lines = []
    for key, r in results["by_temperature"].items():
        lines += [f"T={key}: tau / speedup over plain", f"{'':<12}" + "".join(f"{d:>{width}}" for d in drafters)
                  + f"{'repeat':>8}"]
        for task in results["tasks"]:
            row = r["cells"][task]
            lines.append(f"{task:<12}" + "".join(f"{row[d]['tau']:>{width - 7}.2f} {row[d]['speedup']:>5.2f}x"
                                                 for d in drafters) + f"{row[PLAIN]['repeat_share']:>8.2f}")
        gains = r["specialists"]
        for task, g in gains["per_task"].items():
            lines.append(f"{task}: specialist {g['specialist']} tau {g['tau_specialist']:.2f} vs {g['generic']} "
                         f"{g['tau_generic']:.2f}: {g['gain']:+.1%}")
        if gains["mean_gain"] is not None:
            lines.append(f"mean specialist gain over the generic drafter: {gains['mean_gain']:+.1%}")
        lines.append("")
    lines.append(f"({results['prompts_per_task']} test prompts per task, {results['max_new_tokens']} new tokens; "
                 f"T=1 seeded; repeat: plain output's share of tokens completing a 6-gram seen before; greedy "
                 f"outputs identical to plain decoding: {not results['lossless_mismatches']})")
    return "\n".join(lines)


def _heatmap(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks, drafters = results["tasks"], results["drafters"]
    panels = results["by_temperature"]
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (1.6 + 1.3 * len(drafters)), 1.2 + 0.55 * len(tasks)),
                             squeeze=False)
    for ax, (key, r) in zip(axes[0], panels.items()):
        values = [[r["cells"][t][d]["tau"] for d in drafters] for t in tasks]
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(drafters)), drafters, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), tasks)
        top = max(map(max, values))
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < top * 0.7 else "black")
        fig.colorbar(image, ax=ax, label="tau (tokens per round, bonus included)")
        ax.set_title(f"zoo '{results['preset']}', T={key}: tau per task and drafter")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
