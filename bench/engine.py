"""`specroute bench engine`: speculative decoding against plain decoding and HF assisted generation.

Methods, all greedy, with the same target and prompts (the zoo's held-out test prompts, per task):
- plain: specroute's target-only decoding (root-only trees through the verifier session);
- hf_plain: HF `generate` without a drafter (a reference for the baseline's own speed);
- hf_assisted: HF `generate(assistant_model=...)` with the generic drafter (HF's defaults);
- chain / tree: specroute with the generic drafter, one branch or an EAGLE-2 dynamic tree;
- ngram: specroute with the model-free prompt-lookup drafter;
- specialist: specroute with each task's own specialist from the zoo (a model drafter as a
  chain, or ngram), as a router that knows the task would pick it.

Each repeat runs every method over every prompt, interleaved, so methods see the same machine
state; a method's speedup is its tokens/s over plain's in the same repeat, and the table reports
medians over repeats. Every method's output is checked token for token against plain's: a
lossless method must match, and the check is reported beside the figures.

Writes `engine.md`, `engine.json` and `engine.png` under the output directory.

`--sweep` instead measures tree shapes (top_k, depth, nodes) of the model drafter on the zoo's
*validation* prompts and writes `engine_sweep.md/.json`: that is how the default chain and tree
shapes below were chosen, so the benchmark's test prompts play no part in tuning.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.common import load_zoo, provenance, provenance_lines, write_results
from drafter_service.base import create_drafter, drafter_config_model
from drafter_service.generation import GenerationStats
from specroute.engine import Engine
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import drafter_options
from verifier_service.target import TargetModel

GENERIC_DRAFTER = "generic-llama"
# Chosen by `--sweep` on validation prompts (bench/results/engine_sweep.md).
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

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tau(self) -> float | None:
        return self.emitted / self.rounds if self.rounds else None


def _engine_method(engine: Engine):
    def run(ids: list[int], max_new_tokens: int) -> tuple[list[int], GenerationStats]:
        result = engine.generate(ids, max_new_tokens)
        return result.token_ids, result.stats
    return run


def _hf_method(target: TargetModel, assistant, eos: int):
    @torch.inference_mode()
    def run(ids: list[int], max_new_tokens: int) -> tuple[list[int], None]:
        extra = {"assistant_model": assistant} if assistant is not None else {}
        out = target.model.generate(torch.tensor([ids], device=target.device), do_sample=False,
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


def _prompts(zoo: Path, manifest: dict, tokenizer, per_task: int, max_prompt_tokens: int,
             split: str = "test") -> dict[str, list[list[int]]]:
    examples = load_split(zoo / manifest["corpus"]["files"][split])
    prompts = {}
    for task in manifest["corpus"]["families"]:
        texts = [ex.prompt for ex in examples if ex.task == task][:per_task]
        prompts[task] = [tokenizer.encode(t)[-max_prompt_tokens:] for t in texts]
    return prompts


def run_engine_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                     out: Path, chain: dict = CHAIN, tree: dict = TREE, max_prompt_tokens: int = 192) -> dict:
    manifest, target = load_zoo(zoo, preset)
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
    prompts = _prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens)
    runs = _measure(methods, prompts, max_new_tokens, repeats)
    results = _summarise(runs, list(methods))
    results["setup"] = _setup(zoo, manifest, prompts_per_task, max_new_tokens, repeats,
                              {"chain": chain, "tree": tree, "split": "test"})
    write_results(out, "engine", results, _markdown(results, "Engine benchmark"), _plot)
    return results


def run_tree_sweep(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                   out: Path, grid=SWEEP_GRID, max_prompt_tokens: int = 192) -> dict:
    """Tree shapes of the generic model drafter on validation prompts (how defaults are chosen)."""
    manifest, target = load_zoo(zoo, preset)
    methods = {"plain": _engine_method(Engine(target))}
    for top_k, depth, nodes in grid:
        spec = {"path": zoo / GENERIC_DRAFTER, "top_k": top_k, "max_depth": depth, "max_nodes": nodes}
        methods[f"k{top_k}-d{depth}-n{nodes}"] = _engine_method(Engine(target, create_drafter("model", spec)))
    prompts = _prompts(zoo, manifest, target.tokenizer, prompts_per_task, max_prompt_tokens, split="validation")
    results = _summarise(_measure(methods, prompts, max_new_tokens, repeats), list(methods))
    results["setup"] = _setup(zoo, manifest, prompts_per_task, max_new_tokens, repeats, {"split": "validation"})
    write_results(out, "engine_sweep", results, _markdown(results, "Tree-shape sweep (validation prompts)"))
    return results


def _measure(methods: dict, prompts: dict[str, list[list[int]]], max_new_tokens: int,
             repeats: int) -> list[dict[str, dict[str, Measurement]]]:
    # Warm up every method once (allocator, lazy init) outside the measurement.
    for task, task_prompts in prompts.items():
        for run in methods.values():
            _for_task(run, task)(task_prompts[0], 8)

    runs: list[dict[str, dict[str, Measurement]]] = []
    total = repeats * sum(len(p) for p in prompts.values()) * len(methods)
    with tqdm(total=total, desc="bench engine") as bar:
        for _ in range(repeats):
            rep = {task: {m: Measurement() for m in methods} for task in prompts}
            for task, task_prompts in prompts.items():
                for ids in task_prompts:
                    for name, run in methods.items():
                        start = time.perf_counter()
                        tokens, stats = _for_task(run, task)(ids, max_new_tokens)
                        m = rep[task][name]
                        m.seconds += time.perf_counter() - start
                        m.tokens += len(tokens)
                        m.outputs.append(tokens)
                        if stats is not None:
                            m.rounds += stats.rounds
                            m.emitted += stats.num_emitted
                        bar.update()
            runs.append(rep)
    return runs


def _for_task(method, task: str):
    """A method is one callable, or one per task (the specialist)."""
    return method[task] if isinstance(method, dict) else method


def _setup(zoo: Path, manifest: dict, prompts_per_task: int, max_new_tokens: int, repeats: int, extra: dict) -> dict:
    return {
        **provenance("engine", zoo),
        "zoo_preset": manifest["preset"], "target_params": manifest["target"]["params"],
        "drafter": GENERIC_DRAFTER, "drafter_params": next(d["params"] for d in manifest["drafters"]
                                                           if d["name"] == GENERIC_DRAFTER),
        "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats, **extra,
    }


def _summarise(runs: list[dict[str, dict[str, Measurement]]], methods: list[str]) -> dict:
    tasks = list(runs[0])
    scopes = {task: [{m: r[task][m] for m in methods} for r in runs] for task in tasks}
    scopes["all"] = [{m: _merge([r[t][m] for t in tasks]) for m in methods} for r in runs]
    table = {}
    for scope, reps in scopes.items():
        table[scope] = {}
        for m in methods:
            per_rep = [rep[m] for rep in reps]
            reference = [rep["plain"].outputs for rep in reps]
            table[scope][m] = {
                "tokens_per_s": statistics.median(x.tokens_per_s for x in per_rep),
                "speedup": statistics.median(rep[m].tokens_per_s / rep["plain"].tokens_per_s for rep in reps),
                "tau": None if per_rep[0].tau is None else statistics.median(x.tau for x in per_rep),
                "lossless": all(x.outputs == ref for x, ref in zip(per_rep, reference)),
                "tokens": per_rep[0].tokens,
            }
    return {"results": table}


def _merge(ms: list[Measurement]) -> Measurement:
    return Measurement(sum(m.tokens for m in ms), sum(m.seconds for m in ms), sum(m.rounds for m in ms),
                       sum(m.emitted for m in ms), [o for m in ms for o in m.outputs])


def _markdown(results: dict, title: str) -> str:
    s = results.get("setup", {})
    lines = [f"# {title}", "", *provenance_lines(s),
             f"Models: zoo preset `{s.get('zoo_preset')}`, target {s.get('target_params', 0):,} params, "
             f"drafter `{s.get('drafter')}` {s.get('drafter_params', 0):,} params"
             + (f"; chain {s['chain']}, tree {s['tree']}" if "chain" in s else "") + "  ",
             f"Workload: greedy, {s.get('prompts_per_task')} {s.get('split')} prompts per task, "
             f"{s.get('max_new_tokens')} new tokens, median of {s.get('repeats')} interleaved repeats.", "",
             "Speedup = tokens/s over specroute plain decoding in the same repeat. tau = mean tokens per "
             "verification round, bonus included. lossless = output identical to plain decoding.", ""]
    for scope, rows in results["results"].items():
        lines += [f"## {scope}", "", "| method | tokens/s | speedup | tau | lossless |", "|---|---|---|---|---|"]
        for m, r in rows.items():
            tau = "-" if r["tau"] is None else f"{r['tau']:.2f}"
            lines.append(f"| {m} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | {tau} | {r['lossless']} |")
        lines.append("")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scopes = list(results["results"])
    methods = list(results["results"][scopes[0]])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(scopes)
    for i, scope in enumerate(scopes):
        values = [results["results"][scope][m]["speedup"] for m in methods]
        ax.bar([x + i * width for x in range(len(methods))], values, width, label=scope)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(scopes) - 1) / 2 for x in range(len(methods))], methods)
    ax.set_ylabel("speedup over plain decoding")
    ax.set_title("specroute engine benchmark (greedy, CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
