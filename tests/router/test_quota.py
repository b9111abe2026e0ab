"""Per-key limits: the token bucket, the open-stream cap, keys kept apart, and the retry hint."""

import pytest

from router.quota import KeyQuota, QuotaConfig, QuotaExceeded


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_key_gets_its_burst_then_its_rate_and_a_hint_how_long_to_wait():
    clock = Clock()
    quota = KeyQuota(QuotaConfig(rate=2.0, burst=3), clock)
    for _ in range(3):
        quota.acquire("a")
        quota.release("a")
    with pytest.raises(QuotaExceeded, match="rate of 2 requests/s") as err:
        quota.acquire("a")
    assert err.value.retry_after_s == pytest.approx(0.5)
    quota.acquire("b")  # another key is untouched
    clock.now += 0.5
    quota.acquire("a")


def test_a_key_cannot_hold_more_than_its_streams_and_a_released_one_frees_room():
    quota = KeyQuota(QuotaConfig(max_streams=2), Clock())
    quota.acquire("a")
    quota.acquire("a")
    with pytest.raises(QuotaExceeded, match="2 generations open"):
        quota.acquire("a")
    quota.acquire("b")
    quota.release("a")
    quota.acquire("a")
    assert quota.open_streams("a") == 2 and quota.open_streams("b") == 1


def test_no_limits_by_default_and_idle_keys_are_forgotten():
    quota = KeyQuota()
    for _ in range(100):
        quota.acquire("")
    for _ in range(100):
        quota.release("")
    assert quota.open_streams("") == 0 and not quota._buckets
