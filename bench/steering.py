"""`python -m bench steering`: steered drafters (SD²) against the drafters they started from.

Berdoz, Rheinboldt and Wattenhofer, "Steering Pretrained Drafters during Speculative Decoding"
(AAAI 2026, arXiv 2511.09844). Methods, per drafter family (llama, gpt2), with one tree shape for
all (`bench.engine.TREE`):
- plain: target-only decoding (the baseline every speedup divides by);
- FAMILY/pretrained: the family's pretrained drafter, as the zoo pretrained it (not distilled);
- FAMILY/distilled: the family's generic drafter, distilled from the target;
- FAMILY/steered-pretrained, FAMILY/steered-distilled: a steered drafter started from each.
Methods the zoo lacks are left out (a zoo with one steered drafter runs plain, the drafter it
started from and it). The manifest's `pretrained_drafters` and `steered_drafters` name them;
a steered entry's `base` is the directory it started from.

Prompts: the zoo's held-out test prompts per task, and `ood_prompts.jsonl` beside this module:
short texts of none of the zoo's task families (dialogue, shell sessions, recipes, lyrics,
letters...), reported as the row `ood`. Each repeat runs, per prompt, every method at both
temperatures back to back (greedy, and seeded T=1: prompt i gets seed i); figures are medians over
repeats; greedy output is checked token for token against plain's.

Per method and scope: tau (tokens per round, bonus included), speedup over plain, the drafter's
time per round and the loop's time per round. What steering costs per round, beside the round:
(a) the steered drafter's draft time minus that of the drafter it started from, both measured in
the same run, and the bias computation alone (`bias()` on one row of three layers, median of many
calls); (b) the bytes of states per round on the wire, from the drafter's `state_request` and the
target's hidden size; (c) the share of the steered method's round time that (a) is. The goals
(steered-distilled tau over distilled, OOD steered over pretrained, the cost share) are shown met
or missed.

Writes `steering.md`, `steering.json` and `steering.png`. This module knows nothing about how the
drafters were trained or steered.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import load_zoo, provenance, provenance_lines, temperature_keys, write_results
from bench.engine import TREE, task_prompts
from bench.tally import Tally, measure_interleaved
from core.states import WIRE_DTYPES, HiddenStates, StateRequest
from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.measure import PLAIN, TEMPERATURES, is_greedy
from specroute.zoo.manifest import drafter_options

FAMILIES = ("llama", "gpt2")
PRETRAINED, DISTILLED = "pretrained", "distilled"
STARTS = (PRETRAINED, DISTILLED)
OOD = "ood"
TASKS = "tasks"  # the scope of every task's prompts together (ood apart)
OOD_PROMPTS = Path(__file__).with_name("ood_prompts.jsonl")
GOAL_TAU_GAIN = 0.15  # steered-distilled accepts at least this much more per round than distilled
GOAL_COST_SHARE = 0.05  # steering costs less than this share of a round
BIAS_CALLS = 200


@dataclass(frozen=True)
class Method:
    """One method of the benchmark: its drafter's manifest entry (None: plain) and, for a steered
    drafter, the method of the drafter it started from (None when the zoo lacks it)."""

    name: str
    role: str  # plain, pretrained, distilled, steered-pretrained, steered-distilled
    family: str | None = None
    entry: dict | None = None
    base: str | None = None

    @property
    def steered(self) -> bool:
        return self.role.startswith("steered-")


def steering_methods(manifest: dict) -> dict[str, Method]:
    """{name: Method}: plain, then per family its pretrained, distilled and steered drafters, those
    the manifest has (a family appears when it has a pretrained or a steered drafter)."""
    pretrained = manifest.get("pretrained_drafters", [])
    steered = manifest.get("steered_drafters", [])
    drafters = {d["name"]: d for d in manifest["drafters"]}
    seen = [e["family"] for e in [*pretrained, *steered]]
    families = [f for f in FAMILIES if f in seen] + sorted(set(seen) - set(FAMILIES))
    methods = {PLAIN: Method(PLAIN, PLAIN)}
    for family in families:
        pre = next((e for e in pretrained if e["family"] == family), None)
        steer = {}
        for e in steered:
            if e["family"] == family:
                steer.setdefault(e["start"], e)
        distilled_name = ((pre or {}).get(DISTILLED) or (steer.get(DISTILLED) or {}).get("base")
                          or f"generic-{family}")
        started = {PRETRAINED: pre, DISTILLED: drafters.get(distilled_name)}
        for role, entry in started.items():
            if entry is not None:
                methods[f"{family}/{role}"] = Method(f"{family}/{role}", role, family, entry)
        for start in STARTS:
            entry = steer.get(start)
            if entry is None:
                continue
            base = next((m.name for m in methods.values() if m.family == family and not m.steered
                         and m.entry is not None and Path(m.entry["path"]).name == Path(entry["base"]).name), None)
            if base is None and started[start] is not None:
                base = f"{family}/{start}"
            name = f"{family}/steered-{start}"
            methods[name] = Method(name, f"steered-{start}", family, entry, base)
    return methods


def load_ood_prompts(path: Path = OOD_PROMPTS) -> list[str]:
    """The out-of-distribution prompts: one JSON object with a `prompt` per line."""
    return [json.loads(line)["prompt"] for line in Path(path).read_text().splitlines() if line.strip()]


def _engines(zoo: Path, target, methods: dict[str, Method], tree: dict) -> dict[str, Engine]:
    engines = {}
    for name, method in methods.items():
        if method.entry is None:
            engines[name] = Engine(target)
        else:
            options = {k: str(v) for k, v in drafter_options(zoo, method.entry).items()}
            engines[name] = Engine(target, create_drafter(method.entry["kind"], {**options, **tree}))
    return engines


def run_steering_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                       out: Path, tree: dict = TREE, max_prompt_tokens: int = 192,
                       temperatures: tuple[float, ...] = TEMPERATURES, ood_prompts: Path = OOD_PROMPTS,
                       bias_calls: int = BIAS_CALLS) -> dict:
    temperature_keys(temperatures)
    manifest, target = load_zoo(zoo, preset, check_sampling=False)
    methods = steering_methods(manifest)
    if not any(m.steered for m in methods.values()):
        raise ValueError(f"the zoo at {zoo} has no steered drafters (manifest `steered_drafters`): build it with "
                         "a preset that steers drafters")
    engines = _engines(zoo, target, methods, tree)
    prompts = task_prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens)
    prompts[OOD] = [target.tokenizer.encode(t)[-max_prompt_tokens:] for t in load_ood_prompts(ood_prompts)]
    runs = measure_interleaved({name: {scope: engine for scope in prompts} for name, engine in engines.items()},
                               prompts, max_new_tokens, repeats, temperatures, "bench steering")
    by_temperature = {key: summarise(reps, list(methods), is_greedy(float(key))) for key, reps in runs.items()}
    hidden = target.hidden_size
    overhead = {name: {"bias_ms": time_bias(engines[name].drafter, hidden, bias_calls),
                       "wire_bytes_per_round": wire_bytes(engines[name].drafter.state_request, hidden)}
                for name, m in methods.items() if m.steered}
    results = {
        "setup": {**provenance("steering", zoo), "zoo": str(zoo), "zoo_preset": manifest["preset"],
                  "target_params": manifest["target"]["params"], "hidden": hidden,
                  "target_layers": target.num_layers, "tree": tree, "prompts_per_task": prompts_per_task,
                  "ood_prompts": len(prompts[OOD]), "max_new_tokens": max_new_tokens, "repeats": repeats,
                  "temperatures": [float(t) for t in temperatures], "split": "test", "methods": list(methods),
                  "bias_calls": bias_calls,
                  "drafters": {name: {"role": m.role, "family": m.family, "path": m.entry["path"], "base": m.base,
                                      **{k: m.entry[k] for k in ("heldout_kl_before", "heldout_kl_after")
                                         if k in m.entry}}
                               for name, m in methods.items() if m.entry is not None}},
        "by_temperature": by_temperature,
    }
    results["cost"] = steering_cost(by_temperature, methods, overhead)
    results["goals"] = goal_verdicts(by_temperature, results["cost"], methods)
    write_results(out, "steering", results, markdown(results), _plot)
    return results


def summarise(reps: list[dict[str, dict[str, Tally]]], methods: list[str], greedy: bool) -> dict:
    """{scope: {method: row}}: every task, `tasks` (all tasks' prompts merged), and `ood` if measured;
    medians over repeats. `mean_tau_of_tasks` in each `tasks` row is the mean of the tasks' taus."""
    tasks = [s for s in reps[0] if s != OOD]
    scopes = {task: [r[task] for r in reps] for task in tasks}
    merged = []
    for r in reps:
        row = {m: Tally() for m in methods}
        for task in tasks:
            for m in methods:
                row[m].merge(r[task][m])
        merged.append(row)
    scopes[TASKS] = merged
    if OOD in reps[0]:
        scopes[OOD] = [r[OOD] for r in reps]
    table = {}
    for scope, scope_reps in scopes.items():
        rows = {}
        for m in methods:
            per = [r[m] for r in scope_reps]
            rows[m] = {
                "tau": statistics.median(x.tau for x in per),
                "speedup": statistics.median(r[m].tokens_per_s / r[PLAIN].tokens_per_s if r[PLAIN].tokens_per_s
                                             else 0.0 for r in scope_reps),
                "tokens_per_s": statistics.median(x.tokens_per_s for x in per),
                "draft_ms_per_round": statistics.median(x.per_round_ms(x.draft_s) for x in per),
                "round_ms": statistics.median(x.per_round_ms(x.loop_s) for x in per),
                "lossless": all(r[m].outputs == r[PLAIN].outputs for r in scope_reps) if greedy else None,
            }
        table[scope] = rows
    for m in methods:
        table[TASKS][m]["mean_tau_of_tasks"] = statistics.fmean(table[t][m]["tau"] for t in tasks) if tasks else 0.0
    return table


def wire_bytes(request: StateRequest, hidden: int, tau: float = 1.0) -> float:
    """Bytes of states a verdict carries per round: rows x layers x hidden x the dtype's size (one row
    with `last_only`, else one per emitted token: tau)."""
    itemsize = torch.empty((), dtype=WIRE_DTYPES[request.dtype]).element_size()
    rows = 1 if request.last_only else tau
    return rows * len(request.layers) * hidden * itemsize


def time_bias(drafter, hidden: int, calls: int = BIAS_CALLS) -> float:
    """Median ms of `drafter.bias(states)` on one row of the layers it reads (after a warm-up; on a GPU,
    until the bias is computed)."""
    request = drafter.state_request
    generator = torch.Generator().manual_seed(0)
    states = HiddenStates.pack(torch.randn(1, len(request.layers), hidden, generator=generator), request.dtype)
    cuda = drafter.model.device.type == "cuda"
    for _ in range(10):
        drafter.bias(states)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        drafter.bias(states)
        if cuda:
            torch.cuda.synchronize(drafter.model.device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def steering_cost(by_temperature: dict, methods: dict[str, Method], overhead: dict[str, dict]) -> dict:
    """{temperature key: {steered method: cost}} over all tasks' prompts: the draft ms per round of the
    steered drafter and of the drafter it started from, the difference, the bias computation alone, the
    steered method's round ms, the difference's and the bias's shares of it, and the bytes per round."""
    costs = {}
    for key, table in by_temperature.items():
        rows = {}
        for name, m in methods.items():
            if not m.steered:
                continue
            row = table[TASKS][name]
            base = table[TASKS][m.base] if m.base else None
            extra = row["draft_ms_per_round"] - base["draft_ms_per_round"] if base else None
            round_ms = row["round_ms"]
            bias_ms = overhead[name]["bias_ms"]
            rows[name] = {
                "base": m.base, "draft_ms": row["draft_ms_per_round"],
                "base_draft_ms": base["draft_ms_per_round"] if base else None,
                "extra_draft_ms": extra, "bias_ms": bias_ms, "round_ms": round_ms,
                "extra_share": extra / round_ms if extra is not None and round_ms else None,
                "bias_share": bias_ms / round_ms if round_ms else None,
                "wire_bytes_per_round": overhead[name]["wire_bytes_per_round"],
            }
        costs[key] = rows
    return costs


def goal_verdicts(by_temperature: dict, cost: dict, methods: dict[str, Method]) -> list[dict]:
    """The issue's goals, each at each temperature: {goal, method, against, temperature, value, target,
    met} (met None where the zoo lacks what a goal compares)."""
    goals = []
    by_role = {(m.family, m.role): name for name, m in methods.items()}
    families = list(dict.fromkeys(m.family for m in methods.values() if m.family))
    for key, table in by_temperature.items():
        for family in families:
            steered, distilled = by_role.get((family, "steered-distilled")), by_role.get((family, DISTILLED))
            if steered and distilled:
                # accepted tokens per round: tau less the bonus, mean of tasks
                before = table[TASKS][distilled]["mean_tau_of_tasks"] - 1
                gain = (table[TASKS][steered]["mean_tau_of_tasks"] - 1) / before - 1 if before > 0 else None
                goals.append({"goal": "tau_gain", "method": steered, "against": distilled, "temperature": key,
                              "value": gain, "target": GOAL_TAU_GAIN,
                              "met": None if gain is None else gain >= GOAL_TAU_GAIN})
            pretrained = by_role.get((family, PRETRAINED))
            for role in ("steered-pretrained", "steered-distilled"):
                name = by_role.get((family, role))
                if name is None or OOD not in table:
                    continue
                ratio = (table[OOD][name]["tau"] / table[OOD][pretrained]["tau"]
                         if pretrained and table[OOD][pretrained]["tau"] else None)
                goals.append({"goal": "ood", "method": name, "against": pretrained, "temperature": key,
                              "value": ratio, "target": 1.0, "met": None if ratio is None else ratio >= 1.0})
        for name, row in cost.get(key, {}).items():
            share = row["extra_share"]
            goals.append({"goal": "cost", "method": name, "against": row["base"], "temperature": key,
                          "value": share, "target": GOAL_COST_SHARE,
                          "met": None if share is None else share < GOAL_COST_SHARE})
    return goals


GOAL_TEXT = {
    "tau_gain": "accepted tokens per round (tau - 1) over the distilled drafter's, mean of tasks: at least +{:.0%}",
    "ood": "OOD tau over the pretrained drafter's: at least x{:.2f}",
    "cost": "extra draft time per round: under {:.0%} of the round",
}


def _temperature_label(key: str) -> str:
    return "greedy" if is_greedy(float(key)) else f"T={key}, seeded"


def _value(goal: dict) -> str:
    v = goal["value"]
    if v is None:
        return "-"
    if goal["goal"] == "tau_gain":
        return f"{v:+.1%}"
    return f"x{v:.2f}" if goal["goal"] == "ood" else f"{v:.1%}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "missed")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: dict) -> str:
    s = results["setup"]
    lines = ["# Steering benchmark: steered drafters (SD²) and the drafters they started from", "",
             *provenance_lines(s),
             f"Zoo: `{s.get('zoo', '')}` (preset `{s['zoo_preset']}`), target {s['target_params']:,} params "
             f"(hidden {s['hidden']}, {s['target_layers']} layers); every drafter drafts trees of shape {s['tree']}  ",
             f"Workload: greedy and seeded T=1 (prompt i seeded i), {s['prompts_per_task']} test prompts per task and "
             f"{s['ood_prompts']} out-of-distribution prompts (row `ood`), {s['max_new_tokens']} new tokens, median "
             f"of {s['repeats']} interleaved repeats.", "",
             "tau: tokens per round, bonus included. speedup: tokens/s over plain decoding in the same repeat. "
             "draft ms: the drafter's time per round (propose and observe). round ms: the loop's time per round. "
             f"`{TASKS}`: every task's prompts together; `mean of tasks`: the mean of the tasks' taus. lossless: "
             "greedy output identical to plain decoding.", ""]
    lines += ["## Goals", "", "| goal | method | against | temperature | figure | verdict |",
              "|---|---|---|---|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {GOAL_TEXT[g['goal']].format(g['target'])} | {g['method']} | {g['against'] or '-'} | "
                     f"{_temperature_label(g['temperature'])} | {_value(g)} | {_verdict(g['met'])} |")
    lines.append("")
    methods = s["methods"]
    for key, table in results["by_temperature"].items():
        scopes = [sc for sc in table if sc not in (TASKS, OOD)]
        lines += [f"## tau per task, {_temperature_label(key)}", "",
                  "| scope | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for scope in scopes:
            lines.append(f"| {scope} | " + " | ".join(f"{table[scope][m]['tau']:.2f}" for m in methods) + " |")
        lines.append("| mean of tasks | " + " | ".join(f"{table[TASKS][m]['mean_tau_of_tasks']:.2f}"
                                                     for m in methods) + " |")
        if OOD in table:
            lines.append(f"| {OOD} | " + " | ".join(f"{table[OOD][m]['tau']:.2f}" for m in methods) + " |")
        lines += ["", f"## speedup and draft ms per task, {_temperature_label(key)}", "",
                  "| scope | " + " | ".join(f"{m} speedup" for m in methods) + " | "
                  + " | ".join(f"{m} draft ms" for m in methods) + " |",
                  "|---|" + "---|" * (2 * len(methods))]
        for scope in [*scopes, TASKS, *([OOD] if OOD in table else [])]:
            rows = table[scope]
            lines.append(f"| {scope} | " + " | ".join(f"{rows[m]['speedup']:.2f}x" for m in methods) + " | "
                         + " | ".join(f"{rows[m]['draft_ms_per_round']:.2f}" for m in methods) + " |")
        if is_greedy(float(key)):
            lossy = sorted({m for rows in table.values() for m, row in rows.items() if row["lossless"] is False})
            lines += ["", "lossless (greedy output identical to plain on every prompt): "
                      + ("yes, every method" if not lossy else "NO: " + ", ".join(lossy))]
        lines.append("")
    lines += ["## Steering cost per round", "",
              "Over every task's prompts. extra: the steered drafter's draft ms per round minus that of the drafter "
              "it started from (same run); bias: `bias()` alone on one row of three layers (median of "
              f"{s['bias_calls']} calls); shares are of the steered method's round ms; wire: bytes of states per "
              "round (rows x layers x hidden x dtype size, from the drafter's state request).", "",
              "| method | started from | temperature | draft ms | base draft ms | extra ms | bias ms | round ms | "
              "extra share | bias share | wire B/round |", "|---|" + "---|" * 10]
    for key, rows in results["cost"].items():
        for name, c in rows.items():
            share = "-" if c["extra_share"] is None else f"{c['extra_share']:.1%}"
            bias_share = "-" if c["bias_share"] is None else f"{c['bias_share']:.1%}"
            lines.append(f"| {name} | {c['base'] or '-'} | {_temperature_label(key)} | {_ms(c['draft_ms'])} | "
                         f"{_ms(c['base_draft_ms'])} | {_ms(c['extra_draft_ms'])} | {c['bias_ms']:.3f} | "
                         f"{_ms(c['round_ms'])} | {share} | {bias_share} | {c['wire_bytes_per_round']:.0f} |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, path: Path) -> None:
    """One panel per temperature: tau per scope (tasks, then ood), one bar per method (plain left out)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_t = results["by_temperature"]
    methods = [m for m in results["setup"]["methods"] if m != PLAIN]
    fig, axes = plt.subplots(len(by_t), 1, figsize=(12, 4 * len(by_t)), squeeze=False, sharey=True)
    top = max([row[m]["tau"] for table in by_t.values() for sc, row in table.items() if sc != TASKS
               for m in methods], default=1.0)
    for ax, (key, table) in zip(axes[:, 0], by_t.items()):
        scopes = [sc for sc in table if sc != TASKS]
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            ax.bar([x + i * width for x in range(len(scopes))], [table[sc][m]["tau"] for sc in scopes], width,
                   label=m)
        ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(scopes))], scopes)
        ax.set_ylim(0, 1.3 * top)  # one scale for both panels, room for the legend
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(_temperature_label(key))
        ax.set_ylabel("tau (tokens per round)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=4, loc="upper left")
    fig.suptitle("Steered drafters: tau per task and out of distribution")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
