"""What one decoding step of a model costs on this machine, measured.

Speculation pays off only when a drafter step is cheap next to a target step (Leviathan et al.,
2023: the speedup is E[tokens per round] / (gamma * c + 1), with c the drafter-to-target cost
ratio). On a CPU the ratio follows from per-layer overhead more than from parameter counts, so it
is measured, not computed: the median time of one-token forwards with a warm KV cache, and the
drafter against the target side by side (alternating), because a shared machine's speed drifts
by more than the ratio being measured.

This module knows nothing about presets or training.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import DynamicCache

DEFAULT_CONTEXT = 128


@torch.inference_mode()
def decode_step_ms(model, context: int = DEFAULT_CONTEXT, steps: int = 30, seed: int = 0) -> float:
    """Median milliseconds of a one-token forward after `context` cached tokens."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, context + steps + 3), generator=generator).to(model.device)
    cache = DynamicCache()
    model(input_ids=ids[:, :context], past_key_values=cache, use_cache=True)
    times = []
    for i in range(context, context + steps + 3):
        start = time.perf_counter()
        model(input_ids=ids[:, i: i + 1], past_key_values=cache, use_cache=True)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:]) * 1e3  # the first steps warm up


def step_cost_ratio(drafter, target, rounds: int = 7, steps: int = 30,
                    context: int = DEFAULT_CONTEXT) -> dict[str, float]:
    """Drafter step over target step, measured alternately `rounds` times; medians of each."""
    target_ms, drafter_ms, ratios = [], [], []
    for r in range(rounds):
        t = decode_step_ms(target, context, steps, seed=r)
        d = decode_step_ms(drafter, context, steps, seed=r)
        target_ms.append(t)
        drafter_ms.append(d)
        ratios.append(d / t)
    return {"ratio": statistics.median(ratios), "drafter_ms": statistics.median(drafter_ms),
            "target_ms": statistics.median(target_ms)}
