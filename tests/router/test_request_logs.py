"""Request ids in the router's logs.

Log records made while a request streams carry its id (`core.logs.request_scope`), also when the
stream's steps run in different asyncio tasks (an HTTP response streams in its own). The HTTP
header `X-Request-ID`, in and out, is checked through the real system in
tests/specroute/test_observability.py."""

import asyncio
import logging

import pytest

from core.api import GenerateParams
from core.errors import ServiceError
from core.logs import RequestIdFilter
from core.reports import GenerationReport, RoundReport
from drafter_service.contracts import ChunkOut
from router.detect import load_tasks
from router.frontend import Limits, RequestRecorder, RouterFrontend
from router.router import Router, RouterConfig
from tests.router.test_router import _table

REPORT = GenerationReport(rounds=2, num_drafted=4, num_accepted=2, num_emitted=4, num_generated=4)
CHUNKS = [ChunkOut((1, 2), "ab", RoundReport(num_emitted=2), verifier_replica="v0"),
          ChunkOut((3, 4), "cd", RoundReport(num_emitted=2), "length", REPORT)]


@pytest.fixture(scope="module")
def tasks(tasks_dir):
    return load_tasks(tasks_dir)


class Finished(RequestRecorder):
    def __init__(self):
        self.codes = []

    def finished(self, code, *args):
        self.codes.append(code)


class Records(logging.Handler):
    """The router logger's records, stamped as the configured handler stamps them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter("router"))
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def ids(self, needle: str) -> list[str]:
        return [r.request_id for r in self.records if needle in r.getMessage()]


@pytest.fixture
def records():
    logger = logging.getLogger("specroute.router")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _frontend(tasks, chunks=CHUNKS, limits=Limits(), recorder=None):
    async def drafter_stream(name, request):
        logging.getLogger("specroute.router.test").info("drafting")  # a line made inside the stream
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
    router = Router(tasks, _table(tasks), None, RouterConfig(adaptive=False))
    router.record = lambda *args: logging.getLogger("specroute.router").info("recorded")
    return RouterFrontend(router, drafter_stream, limits, recorder=recorder)


def test_lines_made_while_a_request_streams_carry_its_id(tasks, records):
    async def steps_in_separate_tasks(stream):  # as an HTTP response does after the first chunk
        out = [await anext(stream)]
        while (item := await asyncio.create_task(anext(stream, None))) is not None:
            out.append(item)
        return out

    frontend = _frontend(tasks)
    out = asyncio.run(steps_in_separate_tasks(frontend.generate(GenerateParams(prompt="def f(x):",
                                                                                request_id="req-42"))))
    assert [c.text for c, _ in out] == ["ab", "cd"]
    for needle in ("routed: task=", "drafting", "recorded", "finished: code=OK tokens=4 rounds=2 tau=2.00"):
        assert records.ids(needle) == ["req-42"], needle
    assert all(r.request_id == "req-42" for r in records.records)

    records.records.clear()
    out = asyncio.run(steps_in_separate_tasks(frontend.generate(GenerateParams(prompt="def f(x):"))))
    generated = out[0][1].status().request_id
    assert len(generated) == 32 and set(records.ids("")) == {generated}  # a generated id, the status's


def test_warnings_carry_the_id(tasks, records):
    frontend = _frontend(tasks, [CHUNKS[0], RuntimeError("replica died")])

    async def run():
        async for _ in frontend.generate(GenerateParams(prompt="def f(x):", request_id="req-w")):
            pass
    with pytest.raises(ServiceError, match="mid-stream"):
        asyncio.run(run())
    assert records.ids("failed for request") == ["req-w"]
    assert records.ids("finished: code=UNAVAILABLE") == ["req-w"]


def test_an_invalid_request_id_never_enters_a_line(tasks, records):
    async def run():
        async for _ in _frontend(tasks).generate(GenerateParams(prompt="x", request_id="evil\nline")):
            pass
    with pytest.raises(ServiceError, match="printable"):
        asyncio.run(run())
    (line,) = records.ids("finished: code=INVALID_ARGUMENT")
    assert "\n" not in line and len(line) == 32

