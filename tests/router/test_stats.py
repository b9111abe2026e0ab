"""Routing statistics and the query log in a real Redis server, including Redis killed mid-run
and restarted: no call raises, routing reads the last known statistics, and buffered records
reach Redis when it returns."""

import logging
import time

from router.stats import RequestRecord, RoutingStats, logged_prompts


def _record(task="code", drafter="code-llama", tokens=60, rounds=20, seconds=0.5, prompt="def f(x):"):
    return RequestRecord(task, drafter, tokens / rounds, tokens, rounds, seconds, prompt, 0.97, "classifier")


def test_statistics_round_trip_through_redis(redis_url):
    stats = RoutingStats(redis_url, recent=4)
    for i in range(6):
        assert stats.record(_record(tokens=60 + i, seconds=0.5))
    stats.record(_record(drafter="generic-llama", tokens=30))
    other = RoutingStats(redis_url, recent=4)  # another router replica sees the same numbers
    arms = other.arms("code")
    assert set(arms) == {"code-llama", "generic-llama"}
    arm = arms["code-llama"]
    assert (arm.requests, arm.tokens, arm.rounds) == (6, sum(60 + i for i in range(6)), 120)
    assert arm.decode_s == 3.0
    assert arm.recent == [130.0, 128.0, 126.0, 124.0]  # newest first, capped at `recent`
    assert other.arms("math") == {}


def test_greedy_and_sampled_statistics_are_kept_apart(redis_url):
    """A drafter's reward under sampling says nothing about it under greedy decoding."""
    stats = RoutingStats(redis_url, prefix="modes")
    sampled = RequestRecord("code", "code-llama", 1.2, 12, 10, 0.5, "def g():", 0.9, "classifier", "sampled")
    assert stats.record(sampled)
    assert stats.arms("code", "greedy") == {}
    assert stats.arms("code", "sampled")["code-llama"].recent == [24.0]


def test_query_log_is_a_capped_stream(redis_url):
    stats = RoutingStats(redis_url, log_cap=50)
    for i in range(300):
        stats.record(_record(prompt=f"prompt {i}"))
    log = stats.query_log()
    assert 50 <= len(log) < 300  # approximate trimming keeps at least the cap
    assert log[-1]["prompt"] == "prompt 299" and log[-1]["drafter"] == "code-llama"
    assert logged_prompts(redis_url, count=3) == ["prompt 297", "prompt 298", "prompt 299"]


def test_redis_killed_mid_run_and_restarted(redis_server, redis_url, caplog):
    stats = RoutingStats(redis_url, retry_s=0.05)
    assert stats.record(_record(tokens=90))
    before = stats.arms("code")
    redis_server.stop()  # SIGKILL
    with caplog.at_level(logging.WARNING, logger="specroute.router"):
        start = time.monotonic()
        for _ in range(20):
            assert stats.record(_record(tokens=30)) is False
            assert stats.arms("code") == before  # the last known statistics
        assert time.monotonic() - start < 5.0  # a dead server costs little per call
    assert not stats.available and stats.pending == 20
    assert sum("unreachable" in r.message for r in caplog.records) == 1  # one warning per outage
    redis_server.start()
    time.sleep(0.06)
    assert stats.record(_record(tokens=30))
    assert stats.available and stats.pending == 0
    arm = stats.arms("code")["code-llama"]
    assert arm.requests == 21  # the server restarted empty; every buffered record arrived


def test_pending_records_are_bounded(redis_server, redis_url):
    stats = RoutingStats(redis_url, retry_s=0.0, pending_cap=5)
    redis_server.stop()
    for _ in range(12):
        stats.record(_record())
    assert stats.pending == 5
    redis_server.start()
