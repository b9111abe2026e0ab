import torch

from drafter_service.budget import LAMBDA_MIN, BudgetConfig, DraftBudget, acceptance_lower_bound, draft_confidence


def test_bound_falls_with_entropy():
    assert acceptance_lower_bound(0.0, 0.6) == 1.0
    assert acceptance_lower_bound(2.0, 0.6) < acceptance_lower_bound(0.5, 0.6)


def test_confidence_signal_per_mode():
    peaked = torch.tensor([0.9, 0.05, 0.05])
    wide = torch.full((100,), 0.01)
    assert draft_confidence(peaked, greedy=True, gamma=0.6) == torch.tensor(0.9).item()
    assert draft_confidence(wide, greedy=True, gamma=0.6) == torch.tensor(0.01).item()
    assert draft_confidence(peaked, greedy=False, gamma=0.6) > draft_confidence(wide, greedy=False, gamma=0.6)


def test_early_stop_on_low_confidence_only_when_adaptive():
    budget = DraftBudget(BudgetConfig(initial_lambda=0.3), max_depth=6)
    assert budget.should_stop(confidence=0.1)
    assert not budget.should_stop(confidence=0.9)
    static = DraftBudget(BudgetConfig(adaptive=False), max_depth=6)
    assert not static.should_stop(confidence=-5.0)


def test_depth_and_threshold_follow_acceptance():
    budget = DraftBudget(BudgetConfig(), max_depth=6)
    start = budget.threshold
    for _ in range(3):
        budget.observe(drafted_depth=budget.depth, accepted_depth=0)
    assert budget.depth == 3 and budget.threshold > start
    low = budget.threshold
    for _ in range(5):
        budget.observe(drafted_depth=budget.depth, accepted_depth=budget.depth)
    assert budget.depth == 6 and budget.threshold < low
    budget.observe(drafted_depth=6, accepted_depth=0)
    assert budget.depth >= BudgetConfig().min_depth


def test_threshold_can_fall_below_zero_for_a_good_drafter():
    budget = DraftBudget(BudgetConfig(), max_depth=4)
    for _ in range(200):
        budget.observe(drafted_depth=4, accepted_depth=4)
    assert budget.threshold == LAMBDA_MIN
    assert not budget.should_stop(confidence=-0.5)
