"""`python -m bench stopping`: when to stop drafting, five ways, on the zoo's drafters with stop models.

Lu et al. 2024, "Improving Multi-candidate Speculative Decoding" (DynaSD, arXiv 2409.10644);
SpecDec++ (Huang et al. 2024, arXiv 2405.19715); DSpark. Methods, per drafter that has a stop model
of both variants in the manifest's `stop_models` (the bench preset trains both for the generic
drafters), each with the drafter's default tree shape:
- static: no early stop, full depth (`budget.adaptive` off);
- adaptive: today's budget (top-token probability under greedy, AdaEDL's entropy bound under
  sampling, and the adaptive depth);
- decision-mlp: DynaSD's MLP on the drafter's hidden state, the frontier rule, at the frontier
  threshold the zoo's validation sweep found fastest;
- decision-hard: the hard variant (entropy and top-10 of q), the frontier rule, likewise;
- survival: the MLP with the survival-product rule (SpecDec++, DSpark), at the survival threshold
  the sweep found fastest.
Plain decoding is the baseline every speedup divides by. Thresholds come from validation prompts;
this benchmark reads test prompts only.

Per task and over all tasks, greedy and seeded T=1, methods interleaved per prompt
(`bench.tally.measure_interleaved`), medians over repeats: tau, drafted nodes per round, the share
of drafted nodes rejected, and speedup over plain. Greedy output is checked against plain's.

Goal (per drafter, judged on the stop model as the zoo saved it: its validation-chosen rule and
threshold): speedup >= 1.08x adaptive's, mean of tasks, at both temperatures, with >= 30% fewer
rejected nodes than adaptive (mean of tasks).

Writes `stopping.md`, `stopping.json` and `stopping.png`. This module knows nothing about how stop
models are trained.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.common import load_zoo, provenance, provenance_lines, temperature_keys, write_results
from bench.engine import task_prompts
from bench.tally import Tally, measure_interleaved
from drafter_service.base import create_drafter
from drafter_service.stopping import StopModel
from specroute.engine import Engine
from specroute.measure import PLAIN, TEMPERATURES, is_greedy
from specroute.zoo.manifest import drafter_options

METHODS = ("static", "adaptive", "decision-mlp", "decision-hard", "survival")
GOAL_SPEEDUP, GOAL_FEWER_REJECTED = 1.08, 0.30


def stop_options(zoo: Path, record: dict) -> dict[str, dict]:
    """The extra drafter options of each method, from a manifest `stop_models` record."""
    mlp, hard = record["mlp"], record["hard"]
    return {
        "static": {"budget": {"adaptive": False}},
        "adaptive": {},
        "decision-mlp": {"stop_model": zoo / mlp["path"], "stop_rule": "frontier",
                         "stop_threshold": mlp["best_per_rule"]["frontier"]["threshold"]},
        "decision-hard": {"stop_model": zoo / hard["path"], "stop_rule": "frontier",
                          "stop_threshold": hard["best_per_rule"]["frontier"]["threshold"]},
        "survival": {"stop_model": zoo / mlp["path"], "stop_rule": "survival",
                     "stop_threshold": mlp["best_per_rule"]["survival"]["threshold"]},
    }


def chosen_method(zoo: Path, record: dict) -> str:
    """The method that is the mlp stop model as saved (its rule; its threshold is that rule's best)."""
    return "survival" if StopModel.load(zoo / record["mlp"]["path"]).file.rule == "survival" else "decision-mlp"


def run_stopping_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int, out: Path,
                       max_prompt_tokens: int = 192, temperatures: tuple[float, ...] = TEMPERATURES) -> dict:
    temperature_keys(temperatures)
    manifest, target = load_zoo(zoo, preset, check_sampling=False)
    entries = {d["name"]: d for d in manifest["drafters"]}
    records = [r for r in manifest.get("stop_models", []) if "mlp" in r and "hard" in r]
    if not records:
        raise ValueError(f"the zoo at {zoo} has no drafter with both stop model variants (manifest `stop_models`): "
                         "build it with a preset that trains them")
    engines = {PLAIN: Engine(target)}
    chosen = {}
    for record in records:
        entry = entries[record["drafter"]]
        base = {k: v for k, v in drafter_options(zoo, entry).items() if k != "stop_model"}
        for method, extra in stop_options(zoo, record).items():
            engines[f"{record['drafter']}/{method}"] = Engine(target, create_drafter(entry["kind"], {**base, **extra}))
        chosen[record["drafter"]] = chosen_method(zoo, record)
    prompts = task_prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens)
    runs = measure_interleaved({name: {scope: engine for scope in prompts} for name, engine in engines.items()},
                               prompts, max_new_tokens, repeats, temperatures, "bench stopping")
    by_temperature = {key: summarise(reps, list(engines), is_greedy(float(key))) for key, reps in runs.items()}
    results = {
        "setup": {**provenance("stopping", zoo), "zoo": str(zoo), "zoo_preset": manifest["preset"],
                  "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats,
                  "temperatures": [float(t) for t in temperatures], "split": "test", "methods": list(engines),
                  "stop_models": {r["drafter"]: {v: {k: r[v][k] for k in ("path", "rule", "threshold", "heldout_auroc",
                                                                           "heldout_ece")}
                                                 for v in ("mlp", "hard")} for r in records},
                  "chosen": chosen},
        "by_temperature": by_temperature,
    }
    results["goals"] = goal_verdicts(by_temperature, chosen)
    write_results(out, "stopping", results, markdown(results), _plot)
    return results


def summarise(reps: list[dict[str, dict[str, Tally]]], methods: list[str], greedy: bool) -> dict:
    """{scope: {method: row}} for every task and `tasks` (all merged; its rows also hold the mean of
    the tasks' figures); medians over repeats."""
    tasks = list(reps[0])
    scopes = {task: [r[task] for r in reps] for task in tasks}
    scopes["tasks"] = [{m: Tally.merged([r[t][m] for t in tasks]) for m in methods} for r in reps]
    table = {}
    for scope, scope_reps in scopes.items():
        table[scope] = {m: {
            "tau": statistics.median(r[m].tau for r in scope_reps),
            "nodes_per_round": statistics.median(r[m].nodes_per_round for r in scope_reps),
            "rejected_share": statistics.median(r[m].rejected_share for r in scope_reps),
            "speedup": statistics.median(r[m].tokens_per_s / r[PLAIN].tokens_per_s if r[PLAIN].tokens_per_s else 0.0
                                         for r in scope_reps),
            "tokens_per_s": statistics.median(r[m].tokens_per_s for r in scope_reps),
            "lossless": all(r[m].outputs == r[PLAIN].outputs for r in scope_reps) if greedy else None,
        } for m in methods}
    for m in methods:
        for figure in ("tau", "speedup", "rejected_share", "nodes_per_round"):
            table["tasks"][m][f"mean_{figure}_of_tasks"] = statistics.fmean(table[t][m][figure] for t in tasks)
    return table


def goal_verdicts(by_temperature: dict, chosen: dict[str, str]) -> list[dict]:
    """Per drafter and temperature: the chosen stop model against adaptive, mean of tasks."""
    goals = []
    for drafter, method in chosen.items():
        for key, table in by_temperature.items():
            rows = table["tasks"]
            learned, adaptive = rows[f"{drafter}/{method}"], rows[f"{drafter}/adaptive"]
            speedup = learned["mean_speedup_of_tasks"] / adaptive["mean_speedup_of_tasks"]
            before, after = adaptive["mean_rejected_share_of_tasks"], learned["mean_rejected_share_of_tasks"]
            fewer = 1 - after / before if before else 0.0
            goals.append({"drafter": drafter, "method": method, "temperature": key,
                          "speedup_over_adaptive": speedup, "fewer_rejected": fewer,
                          "met": speedup >= GOAL_SPEEDUP and fewer >= GOAL_FEWER_REJECTED})
    return goals


def _label(key: str) -> str:
    return "T=0 (greedy)" if is_greedy(float(key)) else f"T={key}"


def markdown(results: dict) -> str:
    s = results["setup"]
    lines = ["# When to stop drafting (learned stopping)", "", *provenance_lines(s),
             f"Zoo: `{s['zoo']}` ({s['zoo_preset']}); {s['prompts_per_task']} test prompts per task, "
             f"{s['max_new_tokens']} new tokens, {s['repeats']} repeats, methods interleaved per prompt.  ",
             "Stop models (thresholds chosen on validation prompts by the zoo build): " + "; ".join(
                 f"{d} mlp {m['mlp']['rule']}@{m['mlp']['threshold']:g} (AUROC {_num(m['mlp']['heldout_auroc'])}), "
                 f"hard {m['hard']['rule']}@{m['hard']['threshold']:g} (AUROC {_num(m['hard']['heldout_auroc'])})"
                 for d, m in s["stop_models"].items()), "", "## Goals", "",
             "| drafter | judged method | temperature | speedup / adaptive | fewer rejected nodes | met |",
             "|---|---|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {g['drafter']} | {g['method']} | {_label(g['temperature'])} | "
                     f"{g['speedup_over_adaptive']:.3f}x (goal {GOAL_SPEEDUP}x) | {g['fewer_rejected']:.1%} "
                     f"(goal {GOAL_FEWER_REJECTED:.0%}) | {'yes' if g['met'] else 'no'} |")
    for key, table in results["by_temperature"].items():
        lines += ["", f"## {_label(key)}: mean of tasks", "",
                  "| method | tau | nodes / round | rejected | speedup | lossless |", "|---|---|---|---|---|---|"]
        for m, row in table["tasks"].items():
            lossless = "-" if row["lossless"] is None else ("yes" if row["lossless"] else "NO")
            lines.append(f"| {m} | {row['mean_tau_of_tasks']:.2f} | {row['mean_nodes_per_round_of_tasks']:.1f} | "
                         f"{row['mean_rejected_share_of_tasks']:.1%} | {row['mean_speedup_of_tasks']:.3f}x | {lossless} |")
        tasks = [t for t in table if t != "tasks"]
        lines += ["", f"### {_label(key)}: speedup per task", "", "| method | " + " | ".join(tasks) + " |",
                  "|---" * (len(tasks) + 1) + "|"]
        for m in table["tasks"]:
            lines.append(f"| {m} | " + " | ".join(f"{table[t][m]['speedup']:.2f}x" for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_t = results["by_temperature"]
    methods = [m for m in results["setup"]["methods"] if m != PLAIN]
    fig, axes = plt.subplots(len(by_t), 2, figsize=(14, 4 * len(by_t)), squeeze=False)
    for row, (key, table) in enumerate(by_t.items()):
        rows = table["tasks"]
        for col, (figure, title) in enumerate((("mean_speedup_of_tasks", "speedup over plain"),
                                               ("mean_rejected_share_of_tasks", "share of drafted nodes rejected"))):
            ax = axes[row][col]
            ax.bar(range(len(methods)), [rows[m][figure] for m in methods], color="tab:blue")
            ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{_label(key)}: {title} (mean of tasks)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
