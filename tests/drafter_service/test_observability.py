"""The drafter deployment's worker without Ray: its log lines carry the request's id, and it
records each round and the generation's end in the metrics it is given.

A test-local in-memory recorder stands in for `drafter_service.metrics.DrafterMetrics` (which
records the same calls into Ray metrics); the verifier is a real gRPC server on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from core.logs import RequestIdFilter
from core.reports import GenerationReport, RoundReport
from core.sampling import SamplingParams
from drafter_service.contracts import GenerationRequest
from drafter_service.deployment import _Worker
from drafter_service.metrics import DrafterMetrics
from tests.conftest import PROMPTS

MAX_NEW = 16


class Recorder:
    """An in-memory stand-in for DrafterMetrics."""

    def __init__(self):
        self.rounds_seen: list[RoundReport] = []
        self.finished_seen: list[GenerationReport] = []

    def requests_active(self, requests: int) -> None:
        pass

    def rounds(self, report: RoundReport) -> None:
        self.rounds_seen.append(report)

    def finished(self, report: GenerationReport) -> None:
        self.finished_seen.append(report)


class Captured(logging.Handler):
    """Records of the project's loggers, stamped with their request id as `core.logs` stamps them."""

    LOGGERS = ("drafter_service", "verifier_service")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter("test"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "Captured":
        self.levels = {}
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)
            logging.getLogger(name).setLevel(self.levels[name])


def _run_worker(service, request, metrics) -> list:
    """The chunks a worker posts, run on a thread of its own as the deployment runs it."""
    async def run():
        worker = _Worker(service, request, asyncio.get_running_loop(), metrics)
        thread = threading.Thread(target=worker.run, name="drafter-worker")
        thread.start()
        chunks = []
        while (chunk := await worker.queue.get()) is not None:
            chunks.append(chunk)
        thread.join()
        return chunks
    return asyncio.run(run())


def test_the_workers_log_lines_carry_the_requests_id(service):
    recorder = Recorder()
    request = GenerationRequest(PROMPTS[0], MAX_NEW, SamplingParams(), request_id="req-7")
    with Captured() as logs:
        chunks = _run_worker(service, request, recorder)
    assert chunks and chunks[-1].finish_reason is not None and all(c.error is None for c in chunks)
    mine = [r for r in logs.records if r.name == "drafter_service.service"]
    started = [r for r in mine if r.getMessage().startswith("request started")]
    ended = [r for r in mine if r.getMessage().startswith("request ended")]
    assert len(started) == len(ended) == 1
    assert all(r.request_id == "req-7" and r.threadName == "drafter-worker" for r in mine)
    report = chunks[-1].report
    assert "drafter llama" in started[0].getMessage() and "verifier v0" in started[0].getMessage()
    assert f"{report.prompt_tokens} prompt tokens" in started[0].getMessage()
    assert f"{report.num_generated} tokens, {report.rounds} rounds" in ended[0].getMessage()
    # the verifier (in this process) logged the session under the id the opening carried
    opened = [r for r in logs.records if r.getMessage().startswith("session opened")]
    assert [r.request_id for r in opened] == ["req-7"]
    # every round recorded once (before the chunks are merged), and the generation's end
    assert sum(r.rounds for r in recorder.rounds_seen) == report.rounds
    assert all(r.rounds == 1 for r in recorder.rounds_seen)
    assert recorder.finished_seen == [report]


def test_a_failed_request_logs_how_it_ended(service):
    request = GenerationRequest("word " * 400, MAX_NEW, SamplingParams(), request_id="req-8")
    with Captured() as logs:
        chunks = _run_worker(service, request, None)
    assert chunks[-1].error is not None
    mine = [r for r in logs.records if r.name == "drafter_service.service"]
    assert mine and all(r.request_id == "req-8" for r in mine)
    assert "INVALID_ARGUMENT" in mine[-1].getMessage()


def test_the_ray_metrics_take_every_call():
    """DrafterMetrics records without a replica too (Ray's recorders need no running Ray)."""
    metrics = DrafterMetrics("llama")
    metrics.requests_active(1)
    metrics.rounds(RoundReport(rounds=2, draft_time_s=0.1, verify_time_s=0.2))
    metrics.rounds(RoundReport(rounds=0))
    metrics.finished(GenerationReport(failovers=1))
    metrics.finished(GenerationReport())
