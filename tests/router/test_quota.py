"""Per-key limits: the token bucket, the open-stream cap, keys kept apart, and the retry hint."""

import pytest

from core.errors import Code, ServiceError
from router.quota import KeyQuota, QuotaConfig


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
    with pytest.raises(ServiceError, match="rate of 2 requests/s") as err:
        quota.acquire("a")
    assert err.value.code is Code.RESOURCE_EXHAUSTED and err.value.retry_after_s == pytest.approx(0.5)
    quota.acquire("b")  # another key is untouched
    clock.now += 0.5
    quota.acquire("a")


def test_a_key_cannot_hold_more_than_its_streams_and_a_released_one_frees_room():
    quota = KeyQuota(QuotaConfig(max_streams=2), Clock())
    quota.acquire("a")
    quota.acquire("a")
    with pytest.raises(ServiceError, match="2 generations open"):
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


def test_a_fair_share_is_work_conserving_and_lets_a_newcomer_in():
    quota = KeyQuota(QuotaConfig(shared_streams=4), Clock())
    for _ in range(4):
        quota.acquire("busy")  # alone, a key may use all the spare room
    with pytest.raises(ServiceError, match="fair share"):
        quota.acquire("busy")  # full, and it holds its whole share (4 / 1)
    quota.release("busy")
    quota.acquire("new")  # room freed: the newcomer gets it
    with pytest.raises(ServiceError, match="fair share"):
        quota.acquire("busy")  # full: busy holds 3 >= 4 / 2
    quota.acquire("new")  # full too, but new holds 1 < 4 / 2: a key below its share is never refused
    quota.release("busy")
    quota.release("busy")
    quota.acquire("new")  # spare room again: any key may use it
    assert quota.open_streams("busy") == 1 and quota.open_streams("new") == 3


def test_several_keys_share_the_verifier_sessions_fairly_by_default():
    from specroute.app import router_quota
    from specroute.config import RouterSettings, VerifierSettings

    def router(**fields):
        return RouterSettings(tasks="tasks", **fields)
    verifier = VerifierSettings(max_sessions=8, deployment={"num_replicas": 2})
    assert router_quota(router(api_keys=["a", "b"]), verifier).shared_streams == 16
    autoscaled = VerifierSettings(max_sessions=8, deployment={"autoscaling": {"max_replicas": 3}})
    assert router_quota(router(api_keys=["a", "b"]), autoscaled).shared_streams == 24
    assert router_quota(router(api_keys=["a"]), verifier).shared_streams is None  # one key: nothing to share
    assert router_quota(router(api_keys=["a", "b"], quota={"shared_streams": 5}), verifier).shared_streams == 5
