"""The router: overrides, the confidence fallback, bad requests, and adaptive routing on real
Redis that moves traffic away from a drafter that degrades."""

import pytest

from router.assign import GREEDY, PLAIN_DRAFTER, SAMPLED, RoutingTable
from router.detect import load_tasks
from router.router import Router, RouterConfig
from router.stats import RoutingStats
from specroute.offline.assign import routes_from


def _cells(plain: float, **rates: float) -> dict:
    return {name: {"tokens_per_s": rate, "tau": 2.0, "speedup": rate / plain}
            for name, rate in {"plain": plain, **rates}.items()}


def _table(tasks, version: str | None = None) -> RoutingTable:
    """Greedy: spec, then generic, then ngram, all faster than plain. Sampled: only generic is."""
    greedy = {t: _cells(40.0, spec=100.0, generic=80.0, ngram=50.0) for t in tasks.names}
    sampled = {t: _cells(40.0, spec=36.0, generic=44.0, ngram=30.0) for t in tasks.names}
    drafters = {name: {"kind": "ngram", "options": {}} for name in ("spec", "generic", "ngram")}
    return RoutingTable({GREEDY: routes_from(greedy, "generic"), SAMPLED: routes_from(sampled, "generic")},
                        {**drafters, "plain": PLAIN_DRAFTER}, tasks_version=version or tasks.version, target="unused")


@pytest.fixture(scope="module")
def tasks(tasks_dir):
    return load_tasks(tasks_dir)


def test_classifier_routes_to_the_table_drafter(tasks, corpus):
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False))
    for ex in corpus["test"][:30]:
        decision = router.route(ex.prompt)
        assert decision.source == "classifier" and decision.drafter == "spec"
        assert decision.task in tasks.names and decision.confidence >= 0.5


def test_low_confidence_goes_to_the_default_drafter(tasks, corpus):
    router = Router(tasks, _table(tasks), None, RouterConfig(confidence_threshold=1.0, adaptive=False))
    decision = router.route(corpus["test"][0].prompt)
    assert (decision.drafter, decision.source) == ("generic", "low-confidence")
    assert decision.task in tasks.names


def test_explicit_task_or_drafter_overrides_the_classifier(tasks, corpus):
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False))
    prompt = corpus["test"][0].prompt
    other = next(t for t in tasks.names if t != router.route(prompt).task)
    assert router.route(prompt, task=other) == router.route(prompt, task=other)
    assert router.route(prompt, task=other).task == other
    assert router.route(prompt, task=other).source == "task-override"
    decision = router.route(prompt, drafter="ngram")
    assert (decision.drafter, decision.source) == ("ngram", "drafter-override")


def test_bad_requests_are_clear_errors(tasks):
    router = Router(tasks, _table(tasks), None)
    with pytest.raises(ValueError, match="prompt is empty"):
        router.route("  ")
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        router.route("hi", task="poetry")
    with pytest.raises(ValueError, match="unknown drafter 'eagle'"):
        router.route("hi", drafter="eagle")
    with pytest.raises(ValueError, match="re-run `specroute tasks assign`"):
        Router(tasks, _table(tasks, version="old"))


def test_adaptive_routing_moves_traffic_away_from_a_degrading_drafter(tasks, corpus, redis_url):
    """Simulated traffic: the table's drafter serves well, then degrades to 30 tokens/s while the
    generic drafter keeps 80; two router replicas share the statistics through Redis."""
    table = _table(tasks)
    replicas = [Router(tasks, table, RoutingStats(redis_url), RouterConfig(seed=s)) for s in (1, 2)]
    prompts = [ex.prompt for ex in corpus["test"] if ex.task == "code"][:5]
    rate = {"spec": 100.0, "generic": 80.0, "ngram": 50.0}

    def serve(n: int) -> dict[str, int]:
        counts = dict.fromkeys(rate, 0)
        for i in range(n):
            router = replicas[i % 2]
            decision = router.route(prompts[i % len(prompts)])
            counts[decision.drafter] += 1
            assert router.record(decision, prompts[i % len(prompts)], tokens=64, rounds=20,
                                 decode_s=64 / rate[decision.drafter])
        return counts

    healthy = serve(200)
    assert healthy["spec"] >= 0.85 * 200
    rate["spec"] = 30.0  # it degrades
    serve(60)  # the policy notices
    degraded = serve(200)
    assert degraded["generic"] >= 0.8 * 200
    assert degraded["spec"] <= 0.15 * 200  # exploration stays bounded


def test_routing_continues_when_redis_is_down(tasks, corpus, redis_server, redis_url):
    router = Router(tasks, _table(tasks), RoutingStats(redis_url, retry_s=0.05))
    prompt = corpus["test"][0].prompt
    redis_server.stop()
    decisions = [router.route(prompt) for _ in range(20)]
    assert {d.drafter for d in decisions} <= {"spec", "generic", "ngram"}
    assert not router.record(decisions[0], prompt, 10, 5, 0.1)  # kept for later, not an error
    redis_server.start()


def test_a_seeded_request_always_gets_its_tasks_table_drafter(tasks, corpus):
    """Sampled text depends on the drafter: a seeded request is never explored, so the same seed
    gives the same route (and output) while unseeded traffic explores."""
    from router.policy import PolicyConfig
    router = Router(tasks, _table(tasks), None, RouterConfig(policy=PolicyConfig(explore=1.0, prior_cv=5.0)))
    prompt = corpus["test"][0].prompt
    assert {router.route(prompt, seeded=True).drafter for _ in range(50)} == {"spec"}
    assert {router.route(prompt, task=tasks.names[0], seeded=True).drafter for _ in range(20)} == {"spec"}
    assert len({router.route(prompt).drafter for _ in range(50)}) > 1
