"""The router's frontend without a transport: per-key limits on real routing, with a drafter
stream that the test drives (the interface the ingress gives it: name, request -> chunks)."""

import asyncio

import pytest

from drafter_service.contracts import ChunkOut
from router.detect import load_tasks
from core.api import GenerateParams
from core.errors import Code, ServiceError
from core.reports import GenerationReport, RoundReport
from router.frontend import Limits, RouterFrontend
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
        with pytest.raises(ServiceError) as err:
            await anext(frontend.generate(params, "k1"))
        assert err.value.code is Code.RESOURCE_EXHAUSTED and err.value.retry_after_s > 0
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
        with pytest.raises(ServiceError, match="rate of 0.5 requests/s") as err:
            await anext(frontend.generate(params, "k1"))
        assert err.value.code is Code.RESOURCE_EXHAUSTED and err.value.retry_after_s == pytest.approx(2.0)
    asyncio.run(run())


def test_authorize_names_the_key():
    from router.frontend import RouterFrontend as F
    frontend = F.__new__(F)
    frontend.limits = Limits(api_keys=("k1",))
    assert frontend.authorize({"authorization": "Bearer k1"}) == "k1"
    assert frontend.authorize({"x-api-key": "k1"}) == "k1"
    with pytest.raises(ServiceError, match="API key"):
        frontend.authorize({"authorization": "Bearer nope"})


def _typed_frontend(tasks, chunks):
    async def drafter_stream(name, request):
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False))
    recorded = []
    router.record = lambda *args: recorded.append(args)
    return RouterFrontend(router, drafter_stream), recorded


def _drain(frontend, params):
    async def run():
        return [(chunk, progress.status()) async for chunk, progress in frontend.generate(params)]
    return asyncio.run(run())


def test_the_typed_report_reaches_the_status_and_the_statistics(tasks):
    report = GenerationReport(rounds=2, num_drafted=6, num_accepted=3, num_emitted=5, draft_time_s=0.01,
                              verify_time_s=0.02, num_generated=5, wall_time_s=0.04, prompt_tokens=4,
                              verifier_replica="v0")
    chunks = [ChunkOut((1, 2), "ab", RoundReport(num_emitted=2), verifier_replica="v0"),
              ChunkOut((3, 4, 5), "cde", RoundReport(num_emitted=3), "length", report)]
    frontend, recorded = _typed_frontend(tasks, chunks)
    out = _drain(frontend, GenerateParams(prompt="def f(x):", max_new_tokens=5, request_id="typed"))
    (first, first_status), (last, last_status) = out
    assert first is chunks[0] and last is chunks[1]
    assert first_status.report is None and first_status.total_s is None and first_status.verifier_replica == "v0"
    assert first_status.request_id == "typed" and first_status.drafter and first_status.time_to_first_token_s >= 0
    assert last_status.report is report and last_status.total_s >= last_status.time_to_first_token_s
    (decision, prompt, tokens, rounds, decode_s), = recorded
    assert (prompt, tokens, rounds, decode_s) == ("def f(x):", 5, 2, pytest.approx(0.03))


def test_an_error_chunk_raises_its_service_error_and_a_failing_drafter_is_unavailable(tasks):
    params = GenerateParams(prompt="def f(x):", max_new_tokens=5)
    refused = ServiceError(Code.INVALID_ARGUMENT, "the prompt is beyond the target's context")
    frontend, _ = _typed_frontend(tasks, [ChunkOut(error=refused)])
    with pytest.raises(ServiceError) as err:
        _drain(frontend, params)
    assert err.value is refused
    frontend, recorded = _typed_frontend(tasks, [ChunkOut((1,), "a"), RuntimeError("replica died")])
    with pytest.raises(ServiceError, match="mid-stream") as err:
        _drain(frontend, params)
    assert err.value.code is Code.UNAVAILABLE and err.value.retryable and not recorded


def test_limits_are_validated_once():
    assert Limits().default_max_new_tokens == 64
    with pytest.raises(ValueError, match="above max_new_tokens_limit"):
        Limits(default_max_new_tokens=10, max_new_tokens_limit=5)
