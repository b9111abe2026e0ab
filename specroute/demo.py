"""`specroute demo`: speculative generation in one process, with and without drafters.

Builds the demo zoo if it is missing (a few minutes on 2 CPU cores), then, for held-out prompts
of every task in the zoo, generates greedily with plain target decoding, the ngram drafter and
each model drafter. It prints per prompt and drafter: tau, tokens/s, the speedup over plain
decoding, and whether the output is identical to plain decoding (it must be), then the text.

This module only wires things together and prints; it holds no algorithm.
"""

from __future__ import annotations

from pathlib import Path

import torch

from drafter_service.generation import GenerationStats
from specroute.engine import Engine
from specroute.zoo.build import build_zoo
from specroute.zoo.manifest import load_drafters, load_manifest, summary_table
from specroute.zoo.corpus import load_split
from verifier_service.target import TargetModel

PROMPTS_PER_TASK = 2


def run_demo(zoo: Path, preset: str, max_new_tokens: int) -> None:
    torch.set_num_threads(2)
    if not (zoo / "manifest.json").is_file():
        print(f"[demo] building the {preset!r} zoo in {zoo} (once; later runs reuse it)")
        build_zoo(preset, zoo)
    manifest = load_manifest(zoo)
    print(summary_table(manifest), "\n")
    target = TargetModel.from_dir(zoo / manifest["target"]["path"])
    drafters = {"none": None, **load_drafters(zoo, manifest)}
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    engines = {name: Engine(target, d) for name, d in drafters.items()}
    engines["none"].generate("warm up", 4)

    header = f"{'task':<7} {'drafter':<15} {'tau':>5} {'tok/s':>7} {'speedup':>8}  lossless"
    totals = {name: GenerationStats() for name in engines}
    all_lossless = True
    for task in manifest["corpus"]["families"]:
        for ex in [e for e in tests if e.task == task][:PROMPTS_PER_TASK]:
            prompt_ids = target.tokenizer.encode(ex.prompt)
            print("=" * 78)
            print(f"[{task}] prompt: {ex.prompt.strip()[:200]!r}")
            print(header)
            plain = None
            for name, engine in engines.items():
                result = engine.generate(prompt_ids, max_new_tokens)
                plain = plain or result
                totals[name].merge(result.stats)
                all_lossless &= result.token_ids == plain.token_ids
                speedup = result.stats.tokens_per_s / plain.stats.tokens_per_s
                print(f"{task:<7} {name:<15} {result.stats.tau:>5.2f} {result.stats.tokens_per_s:>7.1f} "
                      f"{speedup:>7.2f}x  {result.token_ids == plain.token_ids}")
            print(f"--- text ---\n{plain.text}\n")
    print("=" * 78)
    print(f"All prompts: {'drafter':<15} {'tau':>5} {'tok/s':>7} {'speedup':>8}")
    for name, stats in totals.items():
        print(f"             {name:<15} {stats.tau:>5.2f} {stats.tokens_per_s:>7.1f} "
              f"{stats.tokens_per_s / totals['none'].tokens_per_s:>7.2f}x")
    print(f"Every output identical to plain target decoding: {all_lossless}")
    print("(The demo zoo is small and trained for minutes; `specroute bench engine` measures the bench zoo.)")

