"""The step budget's splits (`verifier_service.split`): pure arithmetic, milliseconds.

The weighted split never exceeds the step budget (but for one root per session when there are more
sessions than nodes), gives every open session at least its root and at most max_tree_nodes,
favours the sessions more likely to accept, and gives root-only trees when no node pays; the
acceptance estimate moves as the geometric model says; the forward cost fit recovers a line.
"""

from __future__ import annotations

import random

import pytest

from verifier_service.split import (AcceptanceEstimate, ForwardCost, ForwardCostFit, allocate, even_budget, min_gain,
                                    tree_depth)

CHEAP = ForwardCost(base_ms=20.0, per_token_ms=0.01)  # a node costs little: nodes pay down to small gains


def test_the_weighted_split_keeps_its_bounds_over_random_cases():
    rng = random.Random(24)
    for _ in range(2000):
        sessions = rng.randint(1, 40)
        step, cap = rng.randint(1, 200), rng.randint(1, 32)
        cost = ForwardCost(rng.uniform(0, 50), rng.choice([0.0, rng.uniform(0, 5)]))
        alphas = {f"s{i}": rng.choice([0.0, 1.0, rng.random()]) for i in range(sessions)}
        budgets = allocate(alphas, step, cap, cost)
        assert set(budgets) == set(alphas)
        assert all(1 <= b <= cap for b in budgets.values())  # a root each, max_tree_nodes at most
        if sessions >= step:
            assert all(b == 1 for b in budgets.values())  # more sessions than nodes: exactly a root each
        else:
            assert sum(budgets.values()) <= step
        # More likely acceptance never gets fewer nodes.
        ranked = sorted(alphas, key=lambda k: alphas[k])
        for low, high in zip(ranked, ranked[1:]):
            if alphas[high] > alphas[low]:
                assert budgets[high] >= budgets[low]


def test_it_favours_the_session_more_likely_to_accept():
    budgets = allocate({"good": 0.9, "poor": 0.3}, step_tokens=12, max_tree_nodes=16, cost=CHEAP)
    assert budgets["good"] > budgets["poor"] >= 1 and sum(budgets.values()) == 12
    # Every drafted node given has a higher gain than any node left out: good's last vs poor's next.
    assert 0.9 ** (budgets["good"] - 1) >= 0.3 ** budgets["poor"]


def test_one_session_alone_gets_every_node_that_pays_up_to_max_tree_nodes():
    assert allocate({"a": 0.8}, step_tokens=128, max_tree_nodes=16, cost=CHEAP) == {"a": 16}
    assert allocate({"a": 0.8}, step_tokens=5, max_tree_nodes=16, cost=CHEAP) == {"a": 5}
    assert allocate({"a": 0.8}, step_tokens=128, max_tree_nodes=1, cost=CHEAP) == {"a": 1}
    assert allocate({}, step_tokens=128, max_tree_nodes=16, cost=CHEAP) == {}


def test_root_only_trees_when_no_node_pays_and_speculation_returns_when_load_falls():
    cost = ForwardCost(base_ms=10.0, per_token_ms=1.0)
    # Sixteen roots already commit 16 tokens in 26 ms: a node must gain more than 16 / 26 of a token.
    heavy = allocate({i: 0.5 for i in range(16)}, step_tokens=128, max_tree_nodes=16, cost=cost)
    assert heavy == {i: 1 for i in range(16)}
    assert min_gain(16, 16, cost) == pytest.approx(16 / 26)
    light = allocate({0: 0.5}, step_tokens=128, max_tree_nodes=16, cost=cost)
    assert light[0] > 1  # one root commits 1 token in 11 ms: a half-likely node pays
    # A session that never accepts drafts nothing, whatever the load.
    assert allocate({0: 0.0}, step_tokens=128, max_tree_nodes=16, cost=CHEAP) == {0: 1}


def test_a_node_is_given_exactly_while_it_raises_the_goodput():
    rng = random.Random(7)
    for _ in range(300):
        cost = ForwardCost(rng.uniform(1, 30), rng.uniform(0.01, 3))
        alphas = {i: rng.random() for i in range(rng.randint(1, 12))}
        budgets = allocate(alphas, 10_000, 64, cost)  # the budget never binds: only the cost stops it

        def goodput(b):
            committed = sum(sum(alphas[k] ** j for j in range(n)) for k, n in b.items())  # j = 0: the bonus
            return committed / cost.time_ms(sum(b.values()))
        best = goodput(budgets)
        for k in alphas:  # one node more, or one less, for any session, is no better
            if budgets[k] < 64:
                assert goodput({**budgets, k: budgets[k] + 1}) <= best + 1e-12
            if budgets[k] > 1:
                assert goodput({**budgets, k: budgets[k] - 1}) <= best + 1e-12


def test_the_even_split_is_todays():
    assert [even_budget(n, 8, 3, 16) for n in (0, 1, 2, 4)] == [8, 8, 4, 3]
    assert even_budget(1, 128, 4, 16) == 16 and even_budget(100, 128, 32, 16) == 16


def test_the_estimate_starts_neutral_and_follows_the_geometric_model():
    estimate = AcceptanceEstimate()
    assert estimate.alpha == pytest.approx(0.5)
    estimate.update(depth=0, accepted=0)  # a root-only tree tried nothing
    assert estimate.alpha == pytest.approx(0.5)
    rising = AcceptanceEstimate()
    for _ in range(3):
        before = rising.alpha
        rising.update(depth=4, accepted=4)  # the whole tree accepted: four successes, no failure
        assert rising.alpha > before
    falling = AcceptanceEstimate()
    for _ in range(3):
        before = falling.alpha
        falling.update(depth=4, accepted=0)  # rejected at the first level: one failure
        assert falling.alpha < before
    # Steady verdicts of L accepted of D > L: the estimate tends to L / (L + 1).
    steady = AcceptanceEstimate()
    for _ in range(200):
        steady.update(depth=6, accepted=3)
    assert steady.alpha == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        steady.update(depth=2, accepted=3)


def test_tree_depth_is_the_deepest_level():
    assert tree_depth([-1]) == 0
    assert tree_depth([-1, 0, 1, 2]) == 3
    assert tree_depth([-1, 0, 0, 1, 1, 0]) == 2


def test_the_forward_cost_fit_recovers_a_line_and_keeps_the_prior_until_it_can():
    prior = ForwardCost(20.0, 0.25)
    fit = ForwardCostFit(prior)
    assert fit.cost() == prior
    for _ in range(10):
        fit.observe(16, 0.030)  # one size only: no slope to fit
    assert fit.cost() == prior
    for n in (1, 8, 32, 64, 128):
        fit.observe(n, (5.0 + 0.5 * n) / 1e3)
    fitted = ForwardCostFit(prior, decay=1.0)
    for n in (1, 8, 32, 64, 128, 1, 64):
        fitted.observe(n, (5.0 + 0.5 * n) / 1e3)
    assert fitted.cost().base_ms == pytest.approx(5.0) and fitted.cost().per_token_ms == pytest.approx(0.5)
    assert fit.cost() != prior
