"""`python -m bench drafters`: token drafters against drafters that read the target's states.

Methods, per task, on the zoo's held-out test prompts, with one tree shape for all:
- plain: target-only decoding (the baseline every speedup divides by);
- generic: the generic model drafter (`generic-llama`);
- specialist: the task's current specialist (a model drafter or a hybrid with its datastore, as
  the zoo sized it);
- eagle, poss, fspad, poss-fspad: the generic feature drafters (EAGLE-style; with PosS position
  specialists; with FSPAD feature sampling and partial alignment; with both);
- feature-specialist: the task's feature drafter (the generic one fine-tuned on the task);
- feature+lookup: that drafter with prompt lookup and the task's datastore grafted on (a hybrid).
Methods the zoo lacks are left out (a zoo built without feature drafters runs the first three).

Each repeat runs, per prompt, every method at both temperatures back to back (greedy, and seeded
T=1: prompt i gets seed i); figures are medians over repeats; greedy output is checked token for
token against plain's. Per method and task it reports tau, per-position acceptance (the share of
rounds whose accepted path reached draft position k, k = 1..8, vLLM's definition; the PNG plots
it as PosS's figure does), the drafter's time per round, speedup over plain, and the bytes of
hidden states per round on the wire (tau rows of the hidden size in float16: a verdict carries one
row per emitted token; token drafters get none). A last table measures what asking for states
costs the verifier: a tree's verify time with and without them, side by side.

Writes `drafters.md`, `drafters.json` and `drafters.png`. This module knows nothing about how
the drafters were trained.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench.common import load_zoo, provenance, provenance_lines, write_results
from bench.engine import TREE, task_prompts
from bench.tally import POSITIONS, Tally, measure_interleaved
from core.contracts import NO_PARENT
from core.kv_cache import truncate
from core.states import WIRE_DTYPES, StateRequest
from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.measure import TEMPERATURES, is_greedy
from specroute.zoo.manifest import drafter_options, feature_drafters

GENERIC = "generic-llama"
FEATURE_VARIANTS = {"eagle": "feature-generic", "poss": "feature-poss", "fspad": "feature-fspad",
                    "poss-fspad": "feature-poss-fspad"}
WIRE_DTYPE = "float16"
COST_TREE_NODES = (1, 12)
COST_REPEATS = 30


def _methods(zoo: Path, manifest: dict, target, tree: dict) -> dict[str, dict[str, Engine]]:
    """{method: {task: engine}} for every method the zoo has drafters for."""
    tasks = manifest["corpus"]["families"]
    entries = {d["name"]: d for d in [*manifest["drafters"], *feature_drafters(manifest)]}

    def drafter(entry: dict, kind: str | None = None, **extra):
        options = {k: str(v) for k, v in drafter_options(zoo, entry).items()}
        shaped = tree if (kind or entry["kind"]) != "ngram" else {}
        return create_drafter(kind or entry["kind"], {**options, **shaped, **extra})

    methods: dict[str, dict[str, Engine]] = {"plain": {t: Engine(target) for t in tasks}}
    generic = Engine(target, drafter(entries[GENERIC]))
    methods["generic"] = {t: generic for t in tasks}
    specialists = {d["task"]: d for d in manifest["drafters"] if d.get("task")}
    methods["specialist"] = {t: Engine(target, drafter(specialists[t])) if t in specialists else generic
                             for t in tasks}
    for method, name in FEATURE_VARIANTS.items():
        if name in entries:
            engine = Engine(target, drafter(entries[name]))
            methods[method] = {t: engine for t in tasks}
    features = {d["task"]: d for d in feature_drafters(manifest) if d.get("task")}
    if set(features) == set(tasks):
        methods["feature-specialist"] = {t: Engine(target, drafter(features[t])) for t in tasks}
        stores = {t: zoo / "datastores" / f"{t}.npz" for t in tasks}
        if all(p.is_file() for p in stores.values()):
            methods["feature+lookup"] = {t: Engine(target, drafter(features[t], "hybrid", datastore=str(stores[t])))
                                         for t in tasks}
    return methods


def run_drafters_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                       out: Path, tree: dict = TREE, max_prompt_tokens: int = 192,
                       temperatures: tuple[float, ...] = TEMPERATURES) -> dict:
    manifest, target = load_zoo(zoo, preset, check_sampling=False)
    methods = _methods(zoo, manifest, target, tree)
    prompts = task_prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens)
    runs = measure_interleaved(methods, prompts, max_new_tokens, repeats, temperatures, "bench drafters")
    hidden = target.hidden_size
    results = {
        "setup": {**provenance("drafters", zoo), "zoo_preset": manifest["preset"],
                  "target_params": manifest["target"]["params"], "hidden": hidden, "tree": tree,
                  "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats,
                  "temperatures": [float(t) for t in temperatures], "split": "test", "methods": list(methods)},
        "by_temperature": {key: _summarise(reps, list(methods), hidden, is_greedy(float(key)))
                           for key, reps in runs.items()},
        "state_cost": _state_cost(target),
    }
    write_results(out, "drafters", results, _markdown(results), _plot)
    return results


def _summarise(reps: list[dict[str, dict[str, Tally]]], methods: list[str], hidden: int, greedy: bool) -> dict:
    """{scope: {method: row}} per task and over all tasks: medians over repeats."""
    tasks = list(reps[0])
    scopes = {task: [r[task] for r in reps] for task in tasks}
    scopes["all"] = [{m: Tally.merged([r[t][m] for t in tasks]) for m in methods} for r in reps]
    itemsize = torch.empty((), dtype=WIRE_DTYPES[WIRE_DTYPE]).element_size()
    table = {}
    for scope, scope_reps in scopes.items():
        rows = {}
        for m in methods:
            per = [r[m] for r in scope_reps]
            reads_states = m in FEATURE_VARIANTS or m.startswith("feature")
            tau = statistics.median(x.tau for x in per)
            rows[m] = {
                "tau": tau,
                "speedup": statistics.median(r[m].tokens / r[m].seconds / (r["plain"].tokens / r["plain"].seconds)
                                             for r in scope_reps),
                "tokens_per_s": statistics.median(x.tokens / x.seconds for x in per),
                "draft_ms_per_round": statistics.median(1e3 * x.draft_s / x.rounds for x in per),
                "acceptance_by_position": [statistics.median(x.per_position[i] / x.rounds for x in per)
                                           for i in range(POSITIONS)],
                "state_bytes_per_round": tau * hidden * itemsize if reads_states else 0.0,
                "lossless": all(r[m].outputs == r["plain"].outputs for r in scope_reps) if greedy else None,
            }
        table[scope] = rows
    return table


@torch.inference_mode()
def _state_cost(target, prefix_len: int = 128) -> dict:
    """Verify time of trees with and without the last layer's states, interleaved, median of repeats."""
    layers = StateRequest().resolve(target.num_layers)
    cache = target.new_cache()
    prefix = [(i * 7 + 3) % target.vocab_size for i in range(prefix_len)]
    target.forward_tree(prefix, [NO_PARENT, *range(prefix_len - 1)], cache)
    rows = {}
    for nodes in COST_TREE_NODES:
        tokens = [(i * 11 + 5) % target.vocab_size for i in range(nodes)]
        parents = [NO_PARENT] + [(i - 1) // 2 for i in range(1, nodes)]  # a binary tree
        times = {"without": [], "with": []}
        for _ in range(COST_REPEATS):
            for mode in times:
                start = time.perf_counter()
                if mode == "with":
                    _, states = target.forward_tree_states(tokens, parents, cache, layers)
                    states.to(WIRE_DTYPES[WIRE_DTYPE]).cpu().numpy().tobytes()  # the copy the wire makes
                else:
                    target.forward_tree(tokens, parents, cache)
                times[mode].append(time.perf_counter() - start)
                truncate(cache, prefix_len)
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
        rows[str(nodes)] = {"without_ms": 1e3 * without, "with_ms": 1e3 * with_, "ratio": with_ / without}
    return {"prefix_tokens": prefix_len, "repeats": COST_REPEATS, "trees": rows}


def _markdown(results: dict) -> str:
    s = results["setup"]
    lines = ["# Drafters benchmark: token drafters and drafters that read the target's states", "",
             *provenance_lines(s),
             f"Models: zoo preset `{s['zoo_preset']}`, target {s['target_params']:,} params (hidden {s['hidden']}); "
             f"every drafter drafts trees of shape {s['tree']}  ",
             f"Workload: greedy and seeded T=1 (prompt i seeded i), {s['prompts_per_task']} test prompts per task, "
             f"{s['max_new_tokens']} new tokens, median of {s['repeats']} interleaved repeats.", "",
             "speedup: tokens/s over plain decoding in the same repeat. tau: tokens per round, bonus included. "
             "acc@k: share of rounds whose accepted path reached draft position k. draft ms: the drafter's time "
             "per round. state B: bytes of hidden states per round on the wire (float16). lossless: greedy output "
             "identical to plain decoding (T=1 is tested statistically in the test suite).", ""]
    by_t = results["by_temperature"]
    for key, table in by_t.items():
        mode = "greedy" if is_greedy(float(key)) else f"T={key}, seeded"
        for scope, rows in table.items():
            lines += [f"## {scope}, {mode}", "",
                      "| method | speedup | tau | " + " | ".join(f"acc@{k}" for k in (1, 2, 3, 4, 6, 8))
                      + " | draft ms | state B | lossless |",
                      "|---|" + "---|" * 11]
            for m, row in rows.items():
                acc = row["acceptance_by_position"]
                lossless = "-" if row["lossless"] is None else str(row["lossless"])
                lines.append(f"| {m} | {row['speedup']:.2f}x | {row['tau']:.2f} | "
                             + " | ".join(f"{acc[k - 1]:.2f}" for k in (1, 2, 3, 4, 6, 8))
                             + f" | {row['draft_ms_per_round']:.1f} | {row['state_bytes_per_round']:.0f} | {lossless} |")
            lines.append("")
    cost = results["state_cost"]
    lines += ["## What asking for states costs the verifier", "",
              f"One tree verified on a {cost['prefix_tokens']}-token prefix, with and without the last layer's "
              f"states (read, converted to float16, copied to bytes), interleaved, median of {cost['repeats']}.", "",
              "| tree nodes | without (ms) | with (ms) | ratio |", "|---|---|---|---|"]
    for nodes, row in cost["trees"].items():
        lines.append(f"| {nodes} | {row['without_ms']:.2f} | {row['with_ms']:.2f} | {row['ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(results: dict, path: Path) -> None:
    """Acceptance at draft positions 1..8 per method, over all tasks, one panel per temperature."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_t = results["by_temperature"]
    fig, axes = plt.subplots(1, len(by_t), figsize=(7 * len(by_t), 4.5), squeeze=False, sharey=True)
    for ax, (key, table) in zip(axes[0], by_t.items()):
        for m, row in table["all"].items():
            if m == "plain":
                continue
            ax.plot(range(1, POSITIONS + 1), row["acceptance_by_position"], marker="o", label=m)
        ax.set_title("greedy" if is_greedy(float(key)) else f"T={key} (seeded)")
        ax.set_xlabel("draft position")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of rounds accepting through the position")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Acceptance by draft position, all tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
