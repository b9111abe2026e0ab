"""The typed reports: merging rounds, summing generations, derived figures."""

import pickle

from core.reports import GenerationReport, RoundReport


def test_rounds_merge_into_one_report():
    a = RoundReport(1, num_drafted=4, num_accepted=2, num_emitted=3, draft_time_s=0.01, verify_time_s=0.02)
    b = RoundReport(1, num_drafted=4, num_accepted=4, num_emitted=5, draft_time_s=0.01, verify_time_s=0.03,
                    rounds_drafted_ahead=1)
    ab = a.then(b)
    assert (ab.rounds, ab.num_drafted, ab.num_accepted, ab.num_emitted, ab.rounds_drafted_ahead) == (2, 8, 6, 8, 1)
    assert abs(ab.verify_time_s - 0.05) < 1e-12
    assert ab.tau == 4.0 and ab.acceptance_rate == 6 / 8
    assert (a.rounds, a.num_emitted) == (1, 3), "then() leaves both operands unchanged"


def test_a_generation_adds_rounds_and_merges_generations():
    g = GenerationReport()
    assert (g.tau, g.acceptance_rate, g.tokens_per_s) == (0.0, 0.0, 0.0), "an empty report divides by nothing"
    g.add(RoundReport(1, 3, 3, 4, 0.1, 0.2))
    g.add(RoundReport(1, 3, 0, 1, 0.1, 0.2))
    g.num_generated, g.wall_time_s = 5, 0.5
    assert (g.rounds, g.tau, g.tokens_per_s) == (2, 2.5, 10.0)
    total = GenerationReport()
    total.merge(g)
    total.merge(g)
    assert (total.rounds, total.num_generated, total.wall_time_s) == (4, 10, 1.0)
    d = total.as_dict()
    assert d["tau"] == 2.5 and d["num_generated"] == 10 and d["verifier_replica"] == ""


def test_reports_pickle_unchanged():  # they cross Ray between the drafter and the router
    g = GenerationReport(rounds=2, num_emitted=5, prompt_tokens=7, verifier_replica="v1")
    assert pickle.loads(pickle.dumps(g)) == g


def test_per_position_acceptance_adds_position_by_position_across_merges():
    from core.reports import accepted_positions
    first = RoundReport(1, 4, 2, 3, accepted_per_position=accepted_positions(2))
    second = RoundReport(1, 4, 4, 5, accepted_per_position=accepted_positions(4))
    merged = first.then(second)
    assert merged.accepted_per_position == [2, 2, 1, 1]
    assert first.accepted_per_position == [1, 1]  # `then` leaves its operands alone
    total = GenerationReport()
    total.add(merged)
    total.add(RoundReport(1, 4, 0, 1, accepted_per_position=accepted_positions(0)))
    assert total.accepted_per_position == [2, 2, 1, 1] and total.rounds == 3
