"""`specroute demo`: the whole system on the demo zoo, or the engine in one process.

`run_demo` (the default): builds the demo zoo if it is missing (a few minutes on 2 CPU cores)
and its task artifact and routing table, starts everything locally (Ray Serve: the router, one
deployment per drafter, the verifier; embedded Redis), sends held-out prompts of every task
through the gRPC SDK, prints for each the detected task, the drafter the router chose, tau,
tokens/s and the text, and shuts down.

`run_engine_demo` (`--in-process`): for the same prompts, generates greedily in one process with
plain target decoding, the ngram drafter and each model drafter, and prints tau, tokens/s, the
speedup over plain decoding and whether the output is identical to plain decoding (it must be).

This module only wires things together and prints; it holds no algorithm.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.reports import GenerationReport
from specroute.engine import Engine
from specroute.zoo.build import build_zoo
from specroute.zoo.manifest import load_drafters, load_manifest, summary_table
from specroute.zoo.corpus import load_split
from verifier_service.target import TargetModel

PROMPTS_PER_TASK = 2


def _ensure_zoo(zoo: Path, preset: str) -> dict:
    if not (zoo / "manifest.json").is_file():
        print(f"[demo] building the {preset!r} zoo in {zoo} (once; later runs reuse it)")
        build_zoo(preset, zoo)
    return load_manifest(zoo)


def demo_prompts(zoo: Path, manifest: dict, per_task: int = PROMPTS_PER_TASK) -> list[tuple[str, str]]:
    """(family, prompt) pairs: the first held-out test prompts of every task family."""
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    return [(task, ex.prompt) for task in manifest["corpus"]["families"]
            for ex in [e for e in tests if e.task == task][:per_task]]


def run_demo(zoo: Path, preset: str, max_new_tokens: int) -> None:
    """The whole system: routing, drafter services, the verifier service, through the SDK."""
    from specroute.client import Client
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem

    manifest = _ensure_zoo(zoo, preset)
    print(summary_table(manifest), "\n")
    print("[demo] task detection and drafter assignment (once; saved in the zoo's tasks/)")
    config = local_config_for_zoo(zoo)
    print(f"[demo] starting Ray Serve: router, {len(config.drafters)} drafter deployments, the verifier, Redis")
    with LocalSystem.start(config) as system:
        print(f"[demo] up in {system.startup_s:.0f} s: gRPC {system.grpc_address}, HTTP {system.http_url}/v1/completions")
        with Client(system.grpc_address, timeout=300) as client:
            show_requests(client, demo_prompts(zoo, manifest), max_new_tokens)
    print("[demo] shut down cleanly")


def show_requests(client, examples: list[tuple[str, str]], max_new_tokens: int) -> list:
    """Sends each prompt through the SDK; prints routing, tau, tokens/s and the text."""
    done = []
    print(f"{'family':<12} {'routed task':<24} {'drafter':<22} {'source':<14} {'tau':>5} {'tok/s':>7}")
    for family, prompt in examples:
        result = client.generate(prompt, max_new_tokens=max_new_tokens)
        m = result.metadata
        print("=" * 90)
        print(f"{family:<12} {m.task:<24} {m.drafter:<22} {m.route_source:<14} {m.tau:>5.2f} {m.tokens_per_s:>7.1f}")
        print(f"prompt: {prompt.strip()[:160]!r}")
        print(f"text:   {result.text[:300]!r}")
        done.append(result)
    return done


def run_engine_demo(zoo: Path, preset: str, max_new_tokens: int) -> None:
    """Every drafter in one process beside plain decoding: tau, speed and losslessness."""
    torch.set_num_threads(2)
    manifest = _ensure_zoo(zoo, preset)
    print(summary_table(manifest), "\n")
    target = TargetModel.from_dir(zoo / manifest["target"]["path"])
    drafters = {"none": None, **load_drafters(zoo, manifest)}
    engines = {name: Engine(target, d) for name, d in drafters.items()}
    engines["none"].generate("warm up", 4)

    header = f"{'task':<7} {'drafter':<15} {'tau':>5} {'tok/s':>7} {'speedup':>8}  lossless"
    totals = {name: GenerationReport() for name in engines}
    all_lossless = True
    for task, prompt in demo_prompts(zoo, manifest):
        prompt_ids = target.tokenizer.encode(prompt)
        print("=" * 78)
        print(f"[{task}] prompt: {prompt.strip()[:200]!r}")
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
    print("(The demo zoo is small and trained for minutes; `python -m bench engine` measures the bench zoo.)")

