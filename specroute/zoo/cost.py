"""What one decoding step of a model costs on this machine, measured.

Speculation pays off only when a drafter step is cheap next to a target step (Leviathan et al.,
2023: the speedup is E[tokens per round] / (gamma * c + 1), with c the drafter-to-target cost
ratio). On a CPU the ratio follows from per-layer overhead more than from parameter counts, so it
is measured, not computed: the median time of one-token forwards with a warm KV cache, and the
drafter against the target side by side (alternating), because a shared machine's speed drifts
by more than the ratio being measured. A feature drafter (`drafter_service.feature_model`) steps on
(feature, token) pairs, not token ids: `feature_step_ms` times one pair on top of a cache of
`context` pairs, and `step_cost_ratio(..., drafter_ms=feature_step_ms)` sets it against the target.

This module knows nothing about presets or training.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

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


@torch.inference_mode()
def feature_step_ms(model, context: int = DEFAULT_CONTEXT, steps: int = 30, seed: int = 0) -> float:
    """Median milliseconds of one feature drafter step (`model.step` on one pair) after `context` cached pairs."""
    generator = torch.Generator().manual_seed(seed)
    n = context + steps + 3
    tokens = torch.randint(0, model.vocab_size, (n,), generator=generator)
    features = torch.randn(n, model.hidden_size, generator=generator)
    positions = torch.arange(1, n + 1)
    cache = model.new_cache()
    model.step(features[:context], tokens[:context], positions[:context], cache, None, 0)
    times = []
    for i in range(context, n):
        start = time.perf_counter()
        model.step(features[i: i + 1], tokens[i: i + 1], positions[i: i + 1], cache, None, 0)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:]) * 1e3  # the first steps warm up


def step_cost_ratio(drafter, target, rounds: int = 7, steps: int = 30, context: int = DEFAULT_CONTEXT,
                    drafter_ms: Callable[..., float] = decode_step_ms) -> dict[str, float]:
    """Drafter step over target step, measured alternately `rounds` times; medians of each.
    `drafter_ms` times the drafter's step (`feature_step_ms` for a feature drafter)."""
    target_ms, drafter_times, ratios = [], [], []
    for r in range(rounds):
        t = decode_step_ms(target, context, steps, seed=r)
        d = drafter_ms(drafter, context, steps, seed=r)
        target_ms.append(t)
        drafter_times.append(d)
        ratios.append(d / t)
    return {"ratio": statistics.median(ratios), "drafter_ms": statistics.median(drafter_times),
            "target_ms": statistics.median(target_ms)}
