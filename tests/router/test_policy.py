"""The adaptive policy (pure): follows the measured prior, moves away from a degraded arm, and
explores at most the configured share."""

import random

import pytest

from router.policy import PolicyConfig, choose, posterior
from router.stats import ArmStats


def _picks(priors, stats, n=2000, seed=0, **config):
    rng = random.Random(seed)
    counts = dict.fromkeys(priors, 0)
    for _ in range(n):
        counts[choose(priors, stats, rng, PolicyConfig(**config)).drafter] += 1
    return counts


def test_without_statistics_the_best_prior_serves_and_exploration_is_bounded():
    counts = _picks({"a": 100.0, "b": 80.0, "c": 60.0}, {}, explore=0.1)
    assert counts["a"] >= 0.9 * 2000
    assert counts["b"] + counts["c"] <= 0.1 * 2000


def test_a_degraded_arm_loses_its_traffic():
    priors = {"specialist": 100.0, "generic": 80.0}
    degraded = {"specialist": ArmStats(recent=[30.0] * 32), "generic": ArmStats(recent=[79.0, 81.0] * 16)}
    counts = _picks(priors, degraded, explore=0.1)
    assert counts["generic"] >= 0.9 * 2000


def test_no_exploration_is_greedy_on_the_posterior_mean():
    counts = _picks({"a": 10.0, "b": 11.0}, {"a": ArmStats(recent=[20.0] * 8)}, explore=0.0)
    assert counts == {"a": 2000, "b": 0}


def test_posterior_mixes_prior_and_recent_rewards():
    config = PolicyConfig(prior_weight=4)
    mean, sd = posterior(100.0, ArmStats(recent=[50.0] * 4), config)
    assert mean == pytest.approx(75.0)
    assert sd > 0
    assert posterior(100.0, None, config)[0] == 100.0


def test_no_eligible_drafter_is_an_error():
    with pytest.raises(ValueError, match="no eligible drafter"):
        choose({}, {}, random.Random(0))
