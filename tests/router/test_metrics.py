"""What the router reports to its metrics: every request ends in exactly one `finished` record
with its code (success, errors, cancellation), chunks report their tokens and rounds, the router
its classifications and decisions, the statistics Redis's state. A small in-memory recorder
stands in for the metrics sink (`router.metrics.RouterMetrics` in a replica)."""

import asyncio

import pytest

from core.api import GenerateParams
from core.errors import Code, ServiceError
from core.reports import GenerationReport, RoundReport
from drafter_service.contracts import ChunkOut
from router.detect import load_tasks
from router.frontend import Limits, RequestRecorder, RouterFrontend
from router.metrics import RouterMetrics
from router.quota import KeyQuota, QuotaConfig
from router.router import Router, RouterConfig, RoutingRecorder
from router.stats import RequestRecord, RoutingStats, StatsRecorder
from tests.router.test_router import _table


class Recorder(RequestRecorder, RoutingRecorder, StatsRecorder):
    """Every call, in order, as (method, args)."""

    def __init__(self):
        self.calls = []

    def first_token(self, *args):
        self.calls.append(("first_token", args))

    def chunk(self, *args):
        self.calls.append(("chunk", args))

    def finished(self, *args):
        self.calls.append(("finished", args))

    def classified(self, *args):
        self.calls.append(("classified", args))

    def decided(self, *args):
        self.calls.append(("decided", args))

    def redis_state(self, *args):
        self.calls.append(("redis_state", args))

    def of(self, name):
        return [args for method, args in self.calls if method == name]


@pytest.fixture(scope="module")
def tasks(tasks_dir):
    return load_tasks(tasks_dir)


def _frontend(tasks, chunks, recorder, quota=QuotaConfig(), gate: asyncio.Event | None = None):
    async def drafter_stream(name, request):
        for i, chunk in enumerate(chunks):
            if gate is not None and i == 1:
                await gate.wait()
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False), recorder=recorder)
    router.record = lambda *args: None
    return RouterFrontend(router, drafter_stream, Limits(), KeyQuota(quota), recorder=recorder)


PARAMS = GenerateParams(prompt="def f(x):", max_new_tokens=5)
REPORT = GenerationReport(rounds=2, num_drafted=6, num_accepted=3, num_emitted=5, num_generated=5,
                          accepted_per_position=[2, 1])
CHUNKS = [ChunkOut((1, 2), "ab", RoundReport(num_drafted=3, num_accepted=1, num_emitted=2, accepted_per_position=[1])),
          ChunkOut((3, 4, 5), "cde", RoundReport(num_drafted=3, num_accepted=2, num_emitted=3,
                                                 accepted_per_position=[1, 1]), "length", REPORT)]


def _drain(frontend, params=PARAMS, key=""):
    async def run():
        return [chunk async for chunk, _ in frontend.generate(params, key)]
    return asyncio.run(run())


def test_a_successful_request_reports_its_tokens_rounds_and_one_ok(tasks):
    recorder = Recorder()
    frontend = _frontend(tasks, CHUNKS, recorder)
    assert len(_drain(frontend)) == 2
    (source,), = recorder.of("decided")
    assert source == "classifier" and len(recorder.of("classified")) == 1
    ((task, drafter, ttft),) = recorder.of("first_token")
    assert task and drafter and ttft >= 0
    assert recorder.of("chunk") == [(task, drafter, 2, CHUNKS[0].round), (task, drafter, 3, CHUNKS[1].round)]
    ((code, f_task, f_drafter, f_source, tokens, f_ttft, e2e),) = recorder.of("finished")
    assert (code, f_task, f_drafter, f_source, tokens, f_ttft) == ("OK", task, drafter, "classifier", 5, ttft)
    assert e2e >= ttft
    assert [m for m, _ in recorder.calls if m != "classified"] == ["decided", "first_token", "chunk", "chunk",
                                                                   "finished"]


def test_an_explicit_drafter_is_its_source_and_skips_the_classifier(tasks):
    recorder = Recorder()
    _drain(_frontend(tasks, CHUNKS, recorder), GenerateParams(prompt="x", drafter="ngram"))
    assert recorder.of("decided") == [("drafter-override",)] and not recorder.of("classified")
    assert recorder.of("finished")[0][:4] == ("OK", "", "ngram", "drafter-override")


def _finished_code(tasks, chunks, params=PARAMS, **kwargs):
    recorder = Recorder()
    with pytest.raises(ServiceError) as err:
        _drain(_frontend(tasks, chunks, recorder, **kwargs), params)
    (finished,), = [recorder.of("finished")]
    assert finished[0] == err.value.code.value
    return finished, recorder


def test_a_bad_request_is_one_finished_record_without_routing(tasks):
    finished, recorder = _finished_code(tasks, CHUNKS, GenerateParams(prompt=" "))
    assert finished[:5] == ("INVALID_ARGUMENT", "", "", "", 0) and not recorder.of("decided")
    finished, _ = _finished_code(tasks, CHUNKS, GenerateParams(prompt="x", request_id="a\nb"))
    assert finished[0] == "INVALID_ARGUMENT"


def test_a_request_over_its_quota_is_resource_exhausted(tasks):
    recorder = Recorder()
    frontend = _frontend(tasks, CHUNKS, recorder, QuotaConfig(rate=0.001, burst=1))
    _drain(frontend)
    with pytest.raises(ServiceError):
        _drain(frontend)
    assert [f[0] for f in recorder.of("finished")] == ["OK", "RESOURCE_EXHAUSTED"]


def test_drafter_failures_keep_their_route(tasks):
    finished, _ = _finished_code(tasks, [CHUNKS[0], RuntimeError("replica died")])
    assert finished[0] == "UNAVAILABLE" and finished[1] and finished[2] and finished[4] == 2
    refused = ServiceError(Code.DEADLINE_EXCEEDED, "too slow")
    finished, _ = _finished_code(tasks, [ChunkOut(error=refused)])
    assert finished[0] == "DEADLINE_EXCEEDED" and finished[4] == 0


def test_a_client_that_goes_away_is_cancelled(tasks):
    async def closed_after_first():  # the ingress closes the stream (aclosing, the HTTP response's finally)
        recorder = Recorder()
        stream = _frontend(tasks, CHUNKS, recorder, gate=asyncio.Event()).generate(PARAMS)
        await anext(stream)
        await stream.aclose()
        return recorder

    async def task_cancelled():  # Serve cancels the request's task while it waits for the drafter
        recorder = Recorder()
        frontend = _frontend(tasks, CHUNKS, recorder, gate=asyncio.Event())
        started = asyncio.Event()

        async def consume():
            async for _ in frontend.generate(PARAMS):
                started.set()
        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return recorder

    async def closed_after_last():  # stopping after the finishing chunk is a finished request
        recorder = Recorder()
        stream = _frontend(tasks, CHUNKS, recorder).generate(PARAMS)
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        return recorder

    for run, code in ((closed_after_first, "CANCELLED"), (task_cancelled, "CANCELLED"), (closed_after_last, "OK")):
        recorder = asyncio.run(run())
        (finished,), = [recorder.of("finished")]
        assert finished[0] == code and finished[1] and finished[2], run.__name__


def test_refusals_at_the_ingress_are_recorded_once():
    recorder = Recorder()
    frontend = RouterFrontend.__new__(RouterFrontend)
    frontend.recorder = recorder
    frontend.refused(ServiceError(Code.UNAUTHENTICATED, "no key"), "rid")
    frontend.refused(ValueError("a bug"))
    assert [f[:5] for f in recorder.of("finished")] == [("UNAUTHENTICATED", "", "", "", 0), ("INTERNAL", "", "", "", 0)]


def test_the_statistics_report_redis_state_when_it_changes():
    recorder = Recorder()
    stats = RoutingStats("redis://127.0.0.1:1", retry_s=60.0, timeout_s=0.05, recorder=recorder)  # nothing listens
    record = RequestRecord("t", "d", 2.0, 4, 2, 0.1)
    assert not stats.record(record) and not stats.record(record)
    stats.arms("t")  # nothing changed: not reported again
    assert recorder.of("redis_state") == [(True, 0), (False, 1), (False, 2)]
    stats.close()


def test_the_statistics_report_recovery(redis_server, redis_url):
    recorder = Recorder()
    stats = RoutingStats(redis_url, retry_s=0.0, recorder=recorder)
    redis_server.stop()
    assert not stats.record(RequestRecord("t", "d", 2.0, 4, 2, 0.1))
    redis_server.start()
    assert stats.record(RequestRecord("t", "d", 2.0, 4, 2, 0.1))
    assert recorder.of("redis_state") == [(True, 0), (False, 1), (True, 0)]
    stats.close()


def test_the_ray_metrics_take_every_report():
    """RouterMetrics's tags match its metrics' tag keys (Ray checks them on each record, also in a
    process without Ray, where nothing is exported)."""
    metrics = RouterMetrics()
    metrics.first_token("t", "d", 0.1)
    metrics.chunk("t", "d", 3, RoundReport(num_drafted=3, num_accepted=2, num_emitted=3,
                                           accepted_per_position=[1, 1, 0]))
    metrics.chunk("t", "d", 0, None)
    metrics.finished("OK", "t", "d", "classifier", 3, 0.1, 0.5)
    metrics.finished("CANCELLED", "", "", "", 0, None, 0.2)
    metrics.classified(0.001)
    metrics.decided("low-confidence")
    metrics.redis_state(False, 3)
