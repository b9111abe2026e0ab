"""Engines side by side: the same greedy generations through each, with tau and tokens/s.

Used wherever drafters are compared by measurement: `zoo eval` (the task x drafter matrix), the
zoo build's sizing of a drafter, and the router's drafter assignment. Engines are interleaved per
prompt, so they see the same machine state, and every output is checked against plain decoding.
This module knows nothing about zoos, tasks or routing.
"""

from __future__ import annotations

from drafter_service.generation import GenerationStats
from specroute.engine import Engine

PLAIN = "plain"


def compare_engines(engines: dict[str, Engine], prompts: list[list[int]], max_new_tokens: int,
                    bar=None) -> tuple[dict[str, dict], list[str]]:
    """Greedy generation from every prompt with every engine, interleaved per prompt.

    `engines` must hold PLAIN. Returns per engine its tau, acceptance rate, tokens/s and speedup
    over plain (a ratio within this run), and the names of the engines whose output differed
    from plain decoding on some prompt.
    """
    totals = {name: GenerationStats() for name in engines}
    mismatches: set[str] = set()
    for ids in prompts:
        reference = engines[PLAIN].generate(ids, max_new_tokens)
        totals[PLAIN].merge(reference.stats)
        for name, engine in engines.items():
            if name != PLAIN:
                result = engine.generate(ids, max_new_tokens)
                if result.token_ids != reference.token_ids:
                    mismatches.add(name)
                totals[name].merge(result.stats)
        if bar is not None:
            bar.update(len(engines))
    plain_rate = totals[PLAIN].tokens_per_s
    cells = {name: {"tau": stats.tau, "acceptance_rate": stats.acceptance_rate, "tokens_per_s": stats.tokens_per_s,
                    "speedup": stats.tokens_per_s / plain_rate if plain_rate else 0.0}
             for name, stats in totals.items()}
    return cells, sorted(mismatches)
