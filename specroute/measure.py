"""Engines side by side: the same generations through each, with tau, tokens/s and repeat share.

Used wherever drafters are compared by measurement: `zoo eval` (the task x drafter matrix), the
zoo build's sizing of a drafter, and the router's drafter assignment. Engines are interleaved per
prompt, so they see the same machine state, and every output is checked against plain decoding.
Each cell also holds the outputs' mean repeat share (`specroute.repetition`): how much of what
was generated copies earlier text, which lookups predict exactly. A prompt that leaves no room for `max_new_tokens` in the target's context is never sent: it is
skipped and counted (`fit_prompts`), so a corpus with long prompts measures what fits.
This module knows nothing about zoos, tasks or routing.
"""

from __future__ import annotations


from core.reports import GenerationReport
from specroute.engine import Engine
from specroute.repetition import repeat_share
from core.sampling import GREEDY_BELOW, SamplingParams

PLAIN = "plain"
TEMPERATURES = (0.0, 1.0)
"""What every comparison reports: greedy, and seeded sampling at T=1 (users sample too)."""


def is_greedy(temperature: float) -> bool:
    """Whether a temperature means greedy decoding (as `SamplingParams` reads it)."""
    return temperature < GREEDY_BELOW


def sampling_at(temperature: float, seed: int = 0) -> SamplingParams | None:
    """None (greedy) at a greedy temperature; else seeded sampling at that temperature."""
    return None if is_greedy(temperature) else SamplingParams(temperature=temperature, seed=seed)


def temperature_key(temperature: float) -> str:
    """How results are keyed by temperature: '0', '1', '0.7'."""
    return f"{temperature:g}"


def fit_prompts(prompts: list[list[int]], max_context: int, max_new_tokens: int) -> tuple[list[list[int]], int]:
    """The prompts that leave room for max_new_tokens in a context of max_context tokens, in
    order, and how many were skipped."""
    kept = [ids for ids in prompts if 0 < len(ids) and len(ids) + max_new_tokens <= max_context]
    return kept, len(prompts) - len(kept)


def compare_engines(engines: dict[str, Engine], prompts: list[list[int]], max_new_tokens: int,
                    bar=None, sampling: SamplingParams | None = None) -> tuple[dict[str, dict], list[str]]:
    """Generation from every prompt with every engine, interleaved per prompt: greedy, or with
    `sampling` (prompt i seeded `sampling.seed + i`, the same seed for every engine).

    `engines` must hold PLAIN. Returns per engine its tau, acceptance rate, tokens/s, speedup
    over plain (a ratio within this run) and mean repeat share, and the names of the engines whose greedy output
    differed from plain decoding on some prompt (sampled outputs are equal only in distribution,
    so they are not compared). Prompts that do not fit the target's context are skipped (each
    cell's `skipped` counts them; `prompts` counts those measured).
    """
    prompts, skipped = fit_prompts(prompts, engines[PLAIN].target.max_context, max_new_tokens)
    if bar is not None and skipped:
        bar.update(skipped * len(engines))
    sampling = sampling or SamplingParams()
    totals = {name: GenerationReport() for name in engines}
    repeats = dict.fromkeys(engines, 0.0)
    mismatches: set[str] = set()
    for i, ids in enumerate(prompts):
        params = sampling if sampling.greedy else sampling.model_copy(update={"seed": ((sampling.seed or 0) + i) % 2**64})
        reference = engines[PLAIN].generate(ids, max_new_tokens, sampling=params)
        totals[PLAIN].merge(reference.stats)
        repeats[PLAIN] += repeat_share(ids, reference.token_ids)
        for name, engine in engines.items():
            if name != PLAIN:
                result = engine.generate(ids, max_new_tokens, sampling=params)
                if sampling.greedy and result.token_ids != reference.token_ids:
                    mismatches.add(name)
                totals[name].merge(result.stats)
                repeats[name] += repeat_share(ids, result.token_ids)
        if bar is not None:
            bar.update(len(engines))
    plain_rate = totals[PLAIN].tokens_per_s
    cells = {name: {"tau": stats.tau, "acceptance_rate": stats.acceptance_rate, "tokens_per_s": stats.tokens_per_s,
                    "speedup": stats.tokens_per_s / plain_rate if plain_rate else 0.0,
                    "repeat_share": repeats[name] / len(prompts) if prompts else 0.0,
                    "prompts": len(prompts), "skipped": skipped}
             for name, stats in totals.items()}
    return cells, sorted(mismatches)
