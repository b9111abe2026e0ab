"""The router's frontend without a transport: per-key limits on real routing, with a drafter
stream that the test drives (the interface the ingress gives it: name, request -> chunks)."""

import asyncio

import pytest

from drafter_service.contracts import ChunkOut
from router.detect import load_tasks
from router.frontend import GenerateParams, Limits, RequestError, RouterFrontend
from router.quota import KeyQuota, QuotaConfig
from router.router import Router, RouterConfig
from tests.router.test_router import _table


@pytest.fixture(scope="module")
def tasks(tasks_dir):
    return load_tasks(tasks_dir)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _frontend(tasks, release: asyncio.Event, quota: QuotaConfig, clock=Clock()) -> RouterFrontend:
    async def drafter_stream(name, request):
        yield ChunkOut(token_ids=(1,), text="a")
        await release.wait()
        yield ChunkOut(token_ids=(2,), text="b", finish_reason="length")
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False))
    return RouterFrontend(router, drafter_stream, Limits(api_keys=("k1", "k2")), KeyQuota(quota, clock))


def test_one_key_cannot_hold_more_streams_than_its_share(tasks):
    async def run():
        release = asyncio.Event()
        frontend = _frontend(tasks, release, QuotaConfig(max_streams=2))
        params = GenerateParams(prompt="def f(x):", max_new_tokens=2)
        streams = [frontend.generate(params, "k1") for _ in range(2)]
        for s in streams:
            await anext(s)  # two generations of k1 are open
        with pytest.raises(RequestError) as err:
            await anext(frontend.generate(params, "k1"))
        assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.retry_after_s > 0
        other = frontend.generate(params, "k2")
        await anext(other)  # another key is served
        release.set()
        for s in [*streams, other]:
            async for _ in s:
                pass
        assert frontend.quota.open_streams("k1") == 0  # finished generations give their streams back
        third = frontend.generate(params, "k1")
        await anext(third)
        await third.aclose()  # a cancelled one too (the ingress closes a stream whose client went away)
        assert frontend.quota.open_streams("k1") == 0
    asyncio.run(run())


def test_a_key_over_its_rate_is_told_when_to_retry(tasks):
    async def run():
        release = asyncio.Event()
        release.set()
        frontend = _frontend(tasks, release, QuotaConfig(rate=0.5, burst=2), Clock())
        params = GenerateParams(prompt="def f(x):", max_new_tokens=2)
        for _ in range(2):
            async for _ in frontend.generate(params, "k1"):
                pass
        with pytest.raises(RequestError, match="rate of 0.5 requests/s") as err:
            await anext(frontend.generate(params, "k1"))
        assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.retry_after_s == pytest.approx(2.0)
    asyncio.run(run())


def test_authorize_names_the_key():
    from router.frontend import RouterFrontend as F
    frontend = F.__new__(F)
    frontend.limits = Limits(api_keys=("k1",))
    assert frontend.authorize({"authorization": "Bearer k1"}) == "k1"
    assert frontend.authorize({"x-api-key": "k1"}) == "k1"
    with pytest.raises(RequestError, match="API key"):
        frontend.authorize({"authorization": "Bearer nope"})
