"""Engines side by side: prompts that do not fit the target's context are skipped and counted,
never sent (a fresh install's tokenizer once made a task's sample prompt longer than the context)."""

from specroute.engine import Engine
from specroute.measure import PLAIN, compare_engines, fit_prompts
from core.sampling import SamplingParams


def test_fit_prompts_keeps_those_with_room_for_the_new_tokens():
    prompts = [[1] * 10, [1] * 200, [], [1] * 96]
    assert fit_prompts(prompts, max_context=128, max_new_tokens=32) == ([[1] * 10, [1] * 96], 2)


def test_compare_engines_skips_and_counts_what_does_not_fit(target):
    ids = target.tokenizer.encode("import re")
    too_long = ids * (target.max_context // len(ids) + 1)
    engines = {PLAIN: Engine(target), "again": Engine(target)}
    cells, mismatches = compare_engines(engines, [ids, too_long], 8)
    assert not mismatches and cells[PLAIN]["prompts"] == 1 and cells[PLAIN]["skipped"] == 1
    sampled, _ = compare_engines(engines, [ids, ids], 8, sampling=SamplingParams(temperature=1.0, seed=3))
    assert sampled["again"]["prompts"] == 2 and sampled["again"]["tau"] == 1.0  # plain decoding: one token a round
