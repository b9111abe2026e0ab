"""`specroute demo`: the whole system on the demo zoo, or the engine in one process.

`run_demo` (the default): builds the demo zoo if it is missing (a few minutes on 2 CPU cores)
and its task artifact and routing table, starts everything locally (Ray Serve: the router, one
deployment per drafter, the verifier; embedded Redis), sends held-out prompts of every task
through the gRPC SDK, prints for each the detected task, the drafter the router chose, tau,
tokens/s, its speedup over plain decoding of the same prompt through the same system (the prompt
sent again with the `plain` route), whether the two outputs are identical, and the text; then a
summary line, and shuts down.

`run_engine_demo` (`--in-process`): for the same prompts, generates greedily in one process with
plain target decoding, the ngram drafter and each model drafter, and prints tau, tokens/s, the
speedup over plain decoding and whether the output is identical to plain decoding (it must be).

This module only wires things together and prints; it holds no algorithm.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from core.reports import GenerationReport
from specroute.engine import Engine
from specroute.measure import PLAIN
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


def quiet_known_warnings() -> None:
    """Hides one library warning the demo's output would otherwise show, and only that one:
    transformers' FutureWarning that `past_key_values` is now called `cache` (the project's model
    calls still pass `past_key_values`, which every transformers release it supports accepts)."""
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)


def run_demo(zoo: Path, preset: str, max_new_tokens: int, num_cpus: int | None = None) -> None:
    """The whole system: routing, drafter services, the verifier service, through the SDK.
    `num_cpus`: the logical CPUs of the local Ray (default: the machine's)."""
    from specroute.client import Client
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem

    quiet_known_warnings()
    manifest = _ensure_zoo(zoo, preset)
    print(summary_table(manifest), "\n")
    print("[demo] task detection and drafter assignment (once; saved in the zoo's tasks/)")
    config = local_config_for_zoo(zoo, with_plain=True)  # `plain`: every answer is compared with plain decoding
    print(f"[demo] starting Ray Serve: router, {len(config.drafters)} drafter deployments, the verifier, Redis")
    with LocalSystem.start(config, num_cpus=num_cpus) as system:
        print(f"[demo] up in {system.startup_s:.0f} s: gRPC {system.grpc_address}, HTTP {system.http_url}/v1/completions")
        with Client(system.grpc_address, timeout=300) as client:
            show_requests(client, demo_prompts(zoo, manifest), max_new_tokens)
    print("[demo] shut down cleanly")


def show_requests(client, examples: list[tuple[str, str]], max_new_tokens: int) -> list:
    """Sends each prompt through the SDK twice, greedily: routed (the router picks the task and
    the drafter) and with the `plain` route (no drafting, the same system, right after). Prints the
    routing, tau, tokens/s and the speedup over plain decoding, whether the two outputs are
    identical, and the text; then a summary line. Returns the routed results."""
    done, speedups, identical = [], [], []
    if examples:  # one untimed request each way first: the first request of a route pays its warm-up
        client.generate(examples[0][1], max_new_tokens=max_new_tokens)
        client.generate(examples[0][1], max_new_tokens=max_new_tokens, drafter=PLAIN)
    for family, prompt in examples:
        result = client.generate(prompt, max_new_tokens=max_new_tokens)
        plain = client.generate(prompt, max_new_tokens=max_new_tokens, drafter=PLAIN)
        m = result.metadata
        speedup = m.tokens_per_s / plain.metadata.tokens_per_s if plain.metadata.tokens_per_s else float("nan")
        same = result.token_ids == plain.token_ids
        speedups.append(speedup)
        identical.append(same)
        print("=" * 90)
        print(f"prompt ({family}): {prompt.strip()[:160]!r}")
        print(f"task {m.task} ({m.route_source}, confidence {m.confidence:.2f})   drafter {m.drafter}   "
              f"tau {m.tau:.2f}   {m.num_generated} tokens ({result.finish_reason})")
        print(f"{m.tokens_per_s:.1f} tok/s; plain decoding {plain.metadata.tokens_per_s:.1f} tok/s: "
              f"speedup {speedup:.2f}x   identical to plain decoding: {'yes' if same else 'no'}")
        print(f"text:   {result.text[:300]!r}")
        done.append(result)
    print("=" * 90)
    if done:
        print(f"{len(done)} prompts: mean speedup {sum(speedups) / len(speedups):.2f}x over plain decoding "
              f"(per-prompt tokens/s ratios); identical to plain decoding: "
              f"{'all' if all(identical) else f'{sum(identical)} of {len(identical)}'}")
    return done


def run_engine_demo(zoo: Path, preset: str, max_new_tokens: int) -> None:
    """Every drafter in one process beside plain decoding: tau, speed and losslessness."""
    torch.set_num_threads(2)
    quiet_known_warnings()
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

