from drafter_service.budget import BudgetConfig, DraftBudget, acceptance_lower_bound


def test_bound_falls_with_entropy():
    assert acceptance_lower_bound(0.0, 0.6) == 1.0
    assert acceptance_lower_bound(2.0, 0.6) < acceptance_lower_bound(0.5, 0.6)


def test_early_stop_on_uncertain_drafts_only_when_adaptive():
    budget = DraftBudget(BudgetConfig(initial_lambda=0.3), max_depth=6)
    assert budget.should_stop(entropy=3.0)
    assert not budget.should_stop(entropy=0.01)
    static = DraftBudget(BudgetConfig(adaptive=False), max_depth=6)
    assert not static.should_stop(entropy=10.0)


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
