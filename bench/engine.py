"""`python -m bench engine`: speculative decoding against plain decoding and HF assisted generation.

Methods, with the same target and prompts (the zoo's held-out test prompts, per task):
- plain: specroute's target-only decoding (root-only trees through the verifier session);
- hf_plain: HF `generate` without a drafter (a reference for the baseline's own speed);
- hf_assisted: HF `generate(assistant_model=...)` with the generic drafter (HF's defaults);
- chain / tree: specroute with the generic drafter, one branch or an EAGLE-2 dynamic tree;
- ngram: specroute with the model-free prompt-lookup drafter;
- specialist: specroute with each task's own specialist from the zoo (a model drafter as a
  chain, or ngram), as a router that knows the task would pick it.

Every method is measured at two temperatures, reported side by side:
- T=0: greedy decoding;
- T=1: seeded sampling from the full softmax (no top-k, no top-p). Prompt i (a stable index over
  all prompts of the run) gets seed i, so every method and every repeat sees the same seed for the
  same prompt; specroute methods get `SamplingParams(temperature=1.0, seed=i)`, the HF methods
  `generate(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)` after `torch.manual_seed(i)`
  (HF's sampled assisted generation is HF's own, so its output is not comparable token for token).

Each repeat runs, per prompt, every method at every temperature back to back, so methods and
temperatures see the same machine state; a method's speedup is its tokens/s over plain's at the
same temperature in the same repeat, and the tables report medians over repeats. Greedy output is
checked token for token against plain's: a lossless method must match, and the check is reported
beside the figures. Sampled output is equal to plain's only in distribution, so at T=1 the check is
not made here (reported as None, shown "-"); T=1 losslessness is tested statistically elsewhere in
the test suite. Beside tau every row reports the outputs' repeat share (`specroute.repetition`):
the share of generated tokens completing a 6-gram already seen in the prompt or output, i.e. how
much of a figure is copying; it is the mean over the method's outputs of the first repeat (outputs
are deterministic: greedy, or seeded at T=1).

Writes `engine.md`, `engine.json` and `engine.png` under the output directory. In the JSON,
`results` holds the T=0 table (scope -> method -> row) and `by_temperature` both tables, keyed
"0" and "1".

`--sweep` instead measures tree shapes (top_k, depth, nodes) of the model drafter on the zoo's
*validation* prompts, at both temperatures, and writes `engine_sweep.md/.json`: that is how the
default chain and tree shapes below were chosen, so the benchmark's test prompts play no part in
tuning.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.common import greedy_figures, load_zoo, provenance, provenance_lines, write_results
from drafter_service.base import create_drafter, drafter_config_model
from core.reports import GenerationReport
from specroute.engine import Engine
from specroute.measure import TEMPERATURES, is_greedy, sampling_at, temperature_key
from specroute.repetition import repeat_share
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import drafter_options
from verifier_service.target import TargetModel

GENERIC_DRAFTER = "generic-llama"
# Chosen by `--sweep` on validation prompts (bench/results/earlier/engine_sweep.md: an earlier bench zoo).
CHAIN = {"top_k": 1, "max_depth": 8, "max_nodes": 9}
TREE = {"top_k": 2, "max_depth": 8, "max_nodes": 12}
SWEEP_GRID = [(1, 3, 4), (1, 5, 6), (1, 8, 9), (2, 4, 6), (2, 6, 8), (2, 8, 12), (3, 6, 10), (4, 6, 16)]


@dataclass
class Measurement:
    tokens: int = 0
    seconds: float = 0.0
    rounds: int = 0
    emitted: int = 0
    outputs: list[list[int]] = field(default_factory=list)
    prompts: list[list[int]] = field(default_factory=list)  # the prompt of each output

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tau(self) -> float | None:
        return self.emitted / self.rounds if self.rounds else None

    @property
    def repeat_share(self) -> float:
        """The mean repeat share of the outputs (0.0 without outputs)."""
        shares = [repeat_share(p, o) for p, o in zip(self.prompts, self.outputs)]
        return sum(shares) / len(shares) if shares else 0.0


# A method: run(ids, max_new_tokens, temperature, seed) -> (output ids, stats or None);
# the seed is ignored when greedy.

def _engine_method(engine: Engine):
    def run(ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> tuple[list[int], GenerationReport]:
        result = engine.generate(ids, max_new_tokens, sampling=sampling_at(temperature, seed))
        return result.token_ids, result.stats
    return run


def _hf_method(target: TargetModel, assistant, eos: int):
    @torch.inference_mode()
    def run(ids: list[int], max_new_tokens: int, temperature: float, seed: int) -> tuple[list[int], None]:
        extra = {"assistant_model": assistant} if assistant is not None else {}
        if is_greedy(temperature):
            extra["do_sample"] = False
        else:
            torch.manual_seed(seed)
            extra.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        out = target.model.generate(torch.tensor([ids], device=target.device),
                                    max_new_tokens=max_new_tokens, pad_token_id=eos, **extra)
        return out[0, len(ids):].tolist(), None
    return run


def _specialists(zoo: Path, manifest: dict, target: TargetModel, chain: dict) -> dict:
    """{task: method} with the task's specialist drafter, for the tasks that have one."""
    methods = {}
    for d in manifest["drafters"]:
        if d["task"] and d["task"] not in methods:
            shape = chain if "top_k" in drafter_config_model(d["kind"]).model_fields else {}
            drafter = create_drafter(d["kind"], {**drafter_options(zoo, d), **shape})
            methods[d["task"]] = _engine_method(Engine(target, drafter))
    return methods if set(methods) == set(manifest["corpus"]["families"]) else {}


def task_prompts(zoo: Path, manifest: dict, tokenizer, per_task: int, max_prompt_tokens: int,
             split: str = "test") -> dict[str, list[list[int]]]:
    examples = load_split(zoo / manifest["corpus"]["files"][split])
    prompts = {}
    for task in manifest["corpus"]["families"]:
        texts = [ex.prompt for ex in examples if ex.task == task][:per_task]
        prompts[task] = [tokenizer.encode(t)[-max_prompt_tokens:] for t in texts]
    return prompts


def run_engine_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                     out: Path, chain: dict = CHAIN, tree: dict = TREE, max_prompt_tokens: int = 192,
                     temperatures: tuple[float, ...] = TEMPERATURES, check_sampling: bool = True) -> dict:
    manifest, target = load_zoo(zoo, preset, check_sampling)
    drafter_dir = zoo / GENERIC_DRAFTER
    chain_drafter = create_drafter("model", {"path": drafter_dir, **chain})
    eos = target.tokenizer.eos_token_id
    methods = {
        "plain": _engine_method(Engine(target)),
        "hf_plain": _hf_method(target, None, eos),
        "hf_assisted": _hf_method(target, chain_drafter.model, eos),
        "chain": _engine_method(Engine(target, chain_drafter)),
        "tree": _engine_method(Engine(target, create_drafter("model", {"path": drafter_dir, **tree}))),
        "ngram": _engine_method(Engine(target, create_drafter("ngram", {}))),
    }
    specialists = _specialists(zoo, manifest, target, chain)
    if specialists:
        methods["specialist"] = specialists
    prompts = task_prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens)
    results = _tables(_measure(methods, prompts, max_new_tokens, repeats, temperatures), list(methods))
    results["setup"] = _setup(zoo, manifest, prompts_per_task, max_new_tokens, repeats, temperatures,
                              {"chain": chain, "tree": tree, "split": "test"})
    write_results(out, "engine", results, _markdown(results, "Engine benchmark"), _plot)
    return results


def run_tree_sweep(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                   out: Path, grid=SWEEP_GRID, max_prompt_tokens: int = 192,
                   temperatures: tuple[float, ...] = TEMPERATURES, check_sampling: bool = True) -> dict:
    """Tree shapes of the generic model drafter on validation prompts (how defaults are chosen)."""
    manifest, target = load_zoo(zoo, preset, check_sampling)
    methods = {"plain": _engine_method(Engine(target))}
    for top_k, depth, nodes in grid:
        spec = {"path": zoo / GENERIC_DRAFTER, "top_k": top_k, "max_depth": depth, "max_nodes": nodes}
        methods[f"k{top_k}-d{depth}-n{nodes}"] = _engine_method(Engine(target, create_drafter("model", spec)))
    prompts = task_prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens, split="validation")
    results = _tables(_measure(methods, prompts, max_new_tokens, repeats, temperatures), list(methods))
    results["setup"] = _setup(zoo, manifest, prompts_per_task, max_new_tokens, repeats, temperatures,
                              {"split": "validation"})
    write_results(out, "engine_sweep", results, _markdown(results, "Tree-shape sweep (validation prompts)"))
    return results


# One repeat's measurements: {task: {method: Measurement}}.
Repeat = dict[str, dict[str, Measurement]]


def _measure(methods: dict, prompts: dict[str, list[list[int]]], max_new_tokens: int, repeats: int,
             temperatures: tuple[float, ...]) -> dict[str, list[Repeat]]:
    """{temperature key: one Repeat per repeat}. Per repeat and prompt, every method runs at every
    temperature back to back; prompt i (over all prompts of the run) is seeded i."""
    _warm_up(methods, prompts, temperatures)
    flat = [(task, ids) for task, task_prompts in prompts.items() for ids in task_prompts]
    runs: dict[str, list[Repeat]] = {temperature_key(t): [] for t in temperatures}
    with tqdm(total=repeats * len(flat) * len(temperatures) * len(methods), desc="bench engine") as bar:
        for _ in range(repeats):
            rep = {temperature_key(t): {task: {m: Measurement() for m in methods} for task in prompts}
                   for t in temperatures}
            for seed, (task, ids) in enumerate(flat):
                for t in temperatures:
                    for name, run in methods.items():
                        _time_one(_for_task(run, task), ids, max_new_tokens, t, seed,
                                  rep[temperature_key(t)][task][name])
                        bar.update()
            for key, tables in rep.items():
                runs[key].append(tables)
    return runs


def _warm_up(methods: dict, prompts: dict[str, list[list[int]]], temperatures: tuple[float, ...]) -> None:
    """Runs every method once per task and temperature (allocator, lazy init), unmeasured."""
    for task, task_prompts in prompts.items():
        for t in temperatures:
            for run in methods.values():
                _for_task(run, task)(task_prompts[0], 8, t, 0)


def _time_one(run, ids: list[int], max_new_tokens: int, temperature: float, seed: int, m: Measurement) -> None:
    """Runs one generation and adds its time, tokens, output and rounds to `m`."""
    start = time.perf_counter()
    tokens, stats = run(ids, max_new_tokens, temperature, seed)
    m.seconds += time.perf_counter() - start
    m.tokens += len(tokens)
    m.outputs.append(tokens)
    m.prompts.append(ids)
    if stats is not None:
        m.rounds += stats.rounds
        m.emitted += stats.num_emitted


def _for_task(method, task: str):
    """A method is one callable, or one per task (the specialist)."""
    return method[task] if isinstance(method, dict) else method


def _setup(zoo: Path, manifest: dict, prompts_per_task: int, max_new_tokens: int, repeats: int,
           temperatures: tuple[float, ...], extra: dict) -> dict:
    return {
        **provenance("engine", zoo),
        "zoo_preset": manifest["preset"], "target_params": manifest["target"]["params"],
        "drafter": GENERIC_DRAFTER, "drafter_params": next(d["params"] for d in manifest["drafters"]
                                                           if d["name"] == GENERIC_DRAFTER),
        "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats,
        "temperatures": [float(t) for t in temperatures], **extra,
    }


def _tables(runs: dict[str, list[Repeat]], methods: list[str]) -> dict:
    """{"results": the T=0 table (else the first temperature's), "by_temperature": every table}."""
    by_temperature = {key: _summarise(reps, methods, check_lossless=is_greedy(float(key)))
                      for key, reps in runs.items()}
    return {"results": greedy_figures(by_temperature),
            "by_temperature": by_temperature}


def _summarise(runs: list[Repeat], methods: list[str], check_lossless: bool) -> dict:
    """{scope: {method: row}} over the tasks and "all": medians over repeats; lossless only when
    `check_lossless` (greedy), else None; repeat share from the first repeat."""
    tasks = list(runs[0])
    scopes = {task: [{m: r[task][m] for m in methods} for r in runs] for task in tasks}
    scopes["all"] = [{m: _merge([r[t][m] for t in tasks]) for m in methods} for r in runs]
    return {scope: {m: _row(reps, m, check_lossless) for m in methods} for scope, reps in scopes.items()}


def _row(reps: list[dict[str, Measurement]], method: str, check_lossless: bool) -> dict:
    """One method's row of one scope, from its repeats (each with plain's beside it)."""
    per_rep = [rep[method] for rep in reps]
    lossless = (all(x.outputs == rep["plain"].outputs for x, rep in zip(per_rep, reps))
                if check_lossless else None)
    return {
        "tokens_per_s": statistics.median(x.tokens_per_s for x in per_rep),
        "speedup": statistics.median(rep[method].tokens_per_s / rep["plain"].tokens_per_s for rep in reps),
        "tau": None if per_rep[0].tau is None else statistics.median(x.tau for x in per_rep),
        "lossless": lossless,
        "tokens": per_rep[0].tokens,
        "repeat_share": per_rep[0].repeat_share,
    }


def _merge(ms: list[Measurement]) -> Measurement:
    return Measurement(sum(m.tokens for m in ms), sum(m.seconds for m in ms), sum(m.rounds for m in ms),
                       sum(m.emitted for m in ms), [o for m in ms for o in m.outputs],
                       [p for m in ms for p in m.prompts])


def _markdown(results: dict, title: str) -> str:
    s = results.get("setup", {})
    lines = [f"# {title}", "", *provenance_lines(s),
             f"Models: zoo preset `{s.get('zoo_preset')}`, target {s.get('target_params', 0):,} params, "
             f"drafter `{s.get('drafter')}` {s.get('drafter_params', 0):,} params"
             + (f"; chain {s['chain']}, tree {s['tree']}" if "chain" in s else "") + "  ",
             f"Workload: {_modes(s.get('temperatures', list(TEMPERATURES)))} (prompt i seeded i; HF methods "
             f"sample after `torch.manual_seed(i)`), {s.get('prompts_per_task')} {s.get('split')} prompts per task, "
             f"{s.get('max_new_tokens')} new tokens, median of {s.get('repeats')} interleaved repeats.", "",
             "Speedup = tokens/s over specroute plain decoding at the same temperature in the same repeat. "
             "tau = mean tokens per verification round, bonus included. repeat = share of generated tokens "
             "completing a 6-gram already seen in the prompt or output, i.e. how much of a figure is copying. "
             "lossless = greedy output identical to plain decoding (T=1 output is equal only in distribution, "
             "tested statistically in the test suite, not here).", ""]
    by_t = results["by_temperature"]
    keys = list(by_t)
    header = ["method"] + [f"{col} T={k}" for k in keys for col in ("tokens/s", "speedup", "tau", "repeat")]
    header.append("lossless (T=0)")
    for scope in by_t[keys[0]]:
        lines += [f"## {scope}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m in by_t[keys[0]][scope]:
            cells = [m] + [c for k in keys for c in _cells(by_t[k][scope][m])]
            lossless = by_t.get(temperature_key(0.0), {}).get(scope, {}).get(m, {}).get("lossless")
            cells.append("-" if lossless is None else str(lossless))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _modes(temperatures: list[float]) -> str:
    """"greedy and seeded T=1" for [0.0, 1.0]."""
    return " and ".join("greedy" if is_greedy(t) else f"seeded T={t:g}" for t in temperatures)


def _cells(row: dict) -> list[str]:
    """tokens/s, speedup, tau and repeat share of one row, formatted."""
    tau = "-" if row["tau"] is None else f"{row['tau']:.2f}"
    return [f"{row['tokens_per_s']:.1f}", f"{row['speedup']:.2f}x", tau, f"{row['repeat_share']:.2f}"]


def _plot(results: dict, path: Path) -> None:
    """One panel per temperature: speedup per method, one bar per scope."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_t = results["by_temperature"]
    fig, axes = plt.subplots(1, len(by_t), figsize=(8 * len(by_t), 4), squeeze=False, sharey=True)
    for ax, (key, table) in zip(axes[0], by_t.items()):
        _speedup_panel(ax, table, f"T={key}" + (" (greedy)" if is_greedy(float(key)) else " (seeded)"))
    axes[0][0].set_ylabel("speedup over plain decoding")
    fig.suptitle("specroute engine benchmark (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _speedup_panel(ax, table: dict, title: str) -> None:
    """Bars of speedup per method, one series per scope, on `ax`."""
    scopes = list(table)
    methods = list(table[scopes[0]])
    width = 0.8 / len(scopes)
    for i, scope in enumerate(scopes):
        values = [table[scope][m]["speedup"] for m in methods]
        ax.bar([x + i * width for x in range(len(methods))], values, width, label=scope)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(scopes) - 1) / 2 for x in range(len(methods))], methods)
    ax.set_title(title)
    ax.legend()
