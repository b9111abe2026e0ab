"""Every value SamplingParams accepts works: property-based over the whole accepted domain.

Regressions: temperatures like 1e-40 overflowed float32 (NaN probabilities), a top_p below
float32's smallest normal dropped every token, and seeds near 2^64 overflowed a drafter's
generator seed.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drafter_service.base import create_drafter
from specroute.engine import Engine
from core.sampling import GREEDY_BELOW, SEED_MAX, SEED_MIN, SamplingParams, derived_seed, processed_probs

temperatures = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False),
                         st.sampled_from([1e-300, 1e-40, 1e-6, GREEDY_BELOW, 1e-4, 1e30]))
top_ps = st.one_of(st.floats(min_value=5e-324, max_value=1.0, exclude_min=False),
                   st.sampled_from([5e-324, 1e-46, 1e-38, 1e-8, 0.5, 1.0]))
seeds = st.one_of(st.none(), st.integers(min_value=SEED_MIN, max_value=SEED_MAX),
                  st.sampled_from([SEED_MIN, -1, 0, 2**63 - 1, 2**63, SEED_MAX]))
params = st.builds(SamplingParams, temperature=temperatures, top_p=top_ps,
                   top_k=st.integers(min_value=0, max_value=2**31 - 1), seed=seeds)


@settings(max_examples=300, deadline=None)
@given(params, st.floats(min_value=0.0, max_value=1e4), st.integers(min_value=0, max_value=2**31))
def test_processed_probs_is_a_distribution_for_every_accepted_value(p, scale, logits_seed):
    gen = torch.Generator().manual_seed(logits_seed)
    logits = torch.randn(3, 97, generator=gen) * scale
    logits[1, 5] = logits[1, 9]  # ties
    probs = processed_probs(logits, p)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=params)
def test_generation_runs_for_every_accepted_value(tiny_zoo, target, p):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    result = Engine(target, drafter).generate("import re", 8, sampling=p)
    assert result.stats.num_generated == 8 or result.finish_reason != "length"
    assert all(0 <= t < tiny_zoo.vocab_size for t in result.token_ids)


def test_tiny_temperatures_are_greedy(tiny_zoo, target):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    plain = Engine(target).generate("import re", 12).token_ids
    for t in (1e-300, 1e-40, GREEDY_BELOW / 2):
        assert SamplingParams(temperature=t).greedy
        assert Engine(target, drafter).generate("import re", 12, sampling=SamplingParams(temperature=t, seed=1)
                                                ).token_ids == plain
    assert not SamplingParams(temperature=GREEDY_BELOW).greedy


def test_a_vanishing_top_p_keeps_the_most_likely_token():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    for top_p in (5e-324, 1e-46, 1e-8):
        assert processed_probs(logits, SamplingParams(temperature=1.0, top_p=top_p)).tolist() == [[0.0, 1.0, 0.0]]


def test_the_seed_domain_is_int64_and_uint64():
    assert SamplingParams(seed=-1).seed == SEED_MAX
    assert SamplingParams(seed=SEED_MIN).seed == 2**63
    assert SamplingParams(seed=SEED_MAX).seed == SEED_MAX
    for bad in (SEED_MAX + 1, SEED_MIN - 1, 2**80):
        with pytest.raises(ValidationError, match="seed must be an integer"):
            SamplingParams(seed=bad)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValidationError):
            SamplingParams(temperature=bad)
        with pytest.raises(ValidationError):
            SamplingParams(top_p=bad)


def test_derived_seeds_fit_a_generator_and_differ_by_stream():
    for seed in (0, 1, SEED_MAX):
        a, b = derived_seed(seed, "drafter"), derived_seed(seed, "verifier")
        assert 0 <= a < 2**63 and 0 <= b < 2**63 and a != b
        torch.Generator().manual_seed(a)


def test_the_top_seed_samples_with_a_model_drafter(tiny_zoo, target):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    for seed in (SEED_MAX, 2**63, -1):
        p = SamplingParams(temperature=1.0, seed=seed)
        a = Engine(target, drafter).generate("import re", 8, sampling=p)
        b = Engine(target, drafter).generate("import re", 8, sampling=p)
        assert a.token_ids == b.token_ids
