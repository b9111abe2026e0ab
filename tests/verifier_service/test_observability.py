"""What the verifier server reports and logs, over real gRPC on loopback with the tiny target.

A test-local in-memory observer stands in for the metrics sink (`verifier_service.metrics`
records the same calls into Ray metrics): it receives every forward's trees and tree tokens, each
tree's queue wait, the KV pool's slots (batched) and the open sessions, from both backends;
refused sessions are counted by reason. A session's log lines carry the opening's request id, and
the verifier client's failover warning carries the id of the request whose thread it runs on.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from core.contracts import DraftTree
from core.errors import Code, ServiceError
from core.logs import RequestIdFilter, request_scope
from core.reports import GenerationReport
from core.sampling import SamplingParams
from drafter_service.base import create_drafter
from drafter_service.generation import StopConditions, collect, speculate
from protos.specroute.v1 import verifier_pb2, verifier_pb2_grpc
from tests.conftest import PROMPTS
from tests.polling import wait_for
from verifier_service.client import VerifierPool
from verifier_service.kv_pool import PoolFullError
from verifier_service.metrics import VerifierMetrics
from verifier_service.server import VerifierServer, VerifierServerConfig, refusal_reason

MAX_NEW = 16


class Recorder:
    """An in-memory VerifierObserver: every call, by method, in order (from any thread)."""

    def __init__(self):
        self.calls: dict[str, list[tuple]] = defaultdict(list)
        self._lock = threading.Lock()

    def _add(self, name: str, *args) -> None:
        with self._lock:
            self.calls[name].append(args)

    def sessions_open(self, sessions: int) -> None:
        self._add("sessions_open", sessions)

    def session_refused(self, reason: str) -> None:
        self._add("session_refused", reason)

    def forward(self, trees: int, tokens: int) -> None:
        self._add("forward", trees, tokens)

    def queue_wait(self, seconds: float) -> None:
        self._add("queue_wait", seconds)

    def kv_slots(self, used: int, free: int) -> None:
        self._add("kv_slots", used, free)


class Captured(logging.Handler):
    """The records of a project logger, stamped with their request id as `core.logs` stamps them."""

    def __init__(self, logger: str):
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter("test"))
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "Captured":
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)

    def starting(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage().startswith(text)]


def generate(pool, target, drafter, prompt, request_id=""):
    ids = target.tokenizer.encode(prompt)
    with pool.open(ids, SamplingParams(), request_id) as session:
        stats = GenerationReport()
        stop = StopConditions(MAX_NEW, session.eos_token_ids)
        collect(speculate(session, drafter.start(ids, SamplingParams()), target.tokenizer, ids, stop, stats), stats)
    return stats


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_the_observer_sees_every_forward_queue_wait_and_the_pools_slots(target, tiny_zoo, batching):
    recorder = Recorder()
    config = VerifierServerConfig(max_sessions=3, batching=batching)
    server = VerifierServer(target, config, replica="v0", observer=recorder).start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    try:
        with ThreadPoolExecutor(3) as workers:
            reports = list(workers.map(lambda p: generate(pool, target, drafter, p), PROMPTS[:3]))
        assert wait_for(lambda: server.active_sessions == 0)
        calls = recorder.calls
        rounds = sum(r.rounds for r in reports)
        forwards = calls["forward"]
        assert forwards and all(trees >= 1 and tokens >= trees for trees, tokens in forwards)
        assert sum(trees for trees, _ in forwards) == rounds  # every tree in exactly one forward
        assert sum(tokens for _, tokens in forwards) == sum(r.num_drafted for r in reports) + rounds  # + roots
        assert len(calls["queue_wait"]) == rounds and all(s >= 0 for (s,) in calls["queue_wait"])
        opened = [n for (n,) in calls["sessions_open"]]
        assert max(opened) <= 3 and opened[-1] == 0 and len(opened) == 2 * len(PROMPTS[:3])
        if batching:
            max_kv = server.servicer.backend.batcher.pool.max_tokens
            slots = calls["kv_slots"]
            assert slots and all(used + free == max_kv for used, free in slots)
            assert max(used for used, _ in slots) > 0
            assert wait_for(lambda: recorder.calls["kv_slots"][-1][0] == 0)  # closed sessions freed theirs
        else:
            assert all(trees == 1 for trees, _ in forwards)
            assert not calls["kv_slots"]
        server.servicer.report_gauges()  # what the deployment's heartbeat calls
        assert recorder.calls["sessions_open"][-1] == (0,)
        assert recorder.calls["kv_slots"][-1] == ((0, server.servicer.backend.batcher.pool.max_tokens)
                                                  if batching else (0, 0))
    finally:
        pool.close()
        server.stop(grace_s=0.5)


def _open(stub, prompt_ids, max_new_tokens=8, hold: threading.Event | None = None):
    """A session's stream; with `hold`, it stays open (no half-close) until hold is set."""
    message = verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(prompt_ids=prompt_ids,
                                                                        max_new_tokens=max_new_tokens))

    def messages():
        yield message
        if hold is not None:
            hold.wait(10)
    return stub.Session(messages(), timeout=10)


def _refused(stub, prompt_ids, max_new_tokens=8) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        list(_open(stub, prompt_ids, max_new_tokens))
    return err.value.code()


def test_refused_sessions_are_counted_by_reason(target):
    recorder = Recorder()
    # the pool holds two small sessions, not one that reserves the whole context
    config = VerifierServerConfig(max_sessions=2, admission_wait_s=0.05, max_tree_nodes=16,
                                  max_kv_tokens=target.max_context)
    server = VerifierServer(target, config, replica="small", observer=recorder).start()
    channel = grpc.insecure_channel(server.address)
    stub = verifier_pb2_grpc.VerifierStub(channel)
    try:
        refused = lambda: [r for (r,) in recorder.calls["session_refused"]]  # noqa: E731
        # max_new_tokens 0 reserves the whole context: more than the pool holds
        assert _refused(stub, [1, 2, 3], max_new_tokens=0) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused() == ["pool_full"]
        assert _refused(stub, [1, 10**7]) == grpc.StatusCode.INVALID_ARGUMENT
        assert refused() == ["pool_full", "invalid"]
        hold = threading.Event()
        held = [_open(stub, [1, 2, 3], hold=hold) for _ in range(config.max_sessions)]
        for call in held:
            assert next(call).WhichOneof("kind") == "opened"
        assert _refused(stub, [1, 2, 3]) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused() == ["pool_full", "invalid", "session_limit"]
        hold.set()
        for call in held:
            call.cancel()
        assert wait_for(lambda: server.active_sessions == 0)
        server.drain()
        assert _refused(stub, [1, 2, 3]) == grpc.StatusCode.UNAVAILABLE
        assert refused() == ["pool_full", "invalid", "session_limit", "draining"]
    finally:
        channel.close()
        server.stop(grace_s=0.5)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_a_sessions_log_lines_carry_the_openings_request_id(target, batching):
    server = VerifierServer(target, VerifierServerConfig(batching=batching), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    ids = target.tokenizer.encode(PROMPTS[0])
    try:
        with Captured("verifier_service") as logs:
            with pool.open(ids, SamplingParams(), request_id="req-42") as session:
                session.verify(DraftTree.root_only(session.root))
            assert wait_for(lambda: logs.starting("session closed"))
        opened, closed = logs.starting("session opened"), logs.starting("session closed")
        assert len(opened) == len(closed) == 1
        assert opened[0].request_id == closed[0].request_id == "req-42"
        assert f"{len(ids)} prompt tokens" in opened[0].getMessage()
        assert ("batched" if batching else "unbatched") in opened[0].getMessage()
        assert "1 rounds" in closed[0].getMessage()
    finally:
        pool.close()
        server.stop(grace_s=0.5)


def test_the_clients_failover_warning_carries_the_request_id(target, tiny_zoo):
    first = VerifierServer(target, replica="a").start()
    second = VerifierServer(target, replica="b").start()
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    pool = VerifierPool.static([first.address, second.address], failover_timeout_s=5.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[4])
        with Captured("verifier_service") as logs, request_scope("req-failover"):
            session = pool.open(ids, SamplingParams(), request_id="req-failover")
            victim = {"a": first, "b": second}[session.replica]
            stats = GenerationReport()
            chunks = speculate(session, drafter.start(ids, SamplingParams()), target.tokenizer, ids,
                               StopConditions(MAX_NEW), stats)
            for i, _ in enumerate(chunks):
                if i == 1:
                    victim.stop(grace_s=0)  # the replica goes away mid-stream
            session.close()
            assert session.failovers == 1
        warnings = [r for r in logs.records if r.name == "verifier_service.client" and r.levelno == logging.WARNING]
        assert warnings and all(r.request_id == "req-failover" for r in warnings)
        # both replicas logged the session (opened, then resumed) under the same id
        assert [r.request_id for r in logs.starting("session opened")] == ["req-failover"] * 2
    finally:
        pool.close()
        first.stop(0)
        second.stop(0)


def test_the_ray_metrics_observer_takes_every_call():
    """VerifierMetrics records without a replica too (Ray's recorders need no running Ray)."""
    metrics = VerifierMetrics()
    metrics.sessions_open(2)
    metrics.session_refused("pool_full")
    metrics.forward(3, 40)
    metrics.queue_wait(0.01)
    metrics.kv_slots(5, 100)


def test_refusal_reasons_by_error():
    assert refusal_reason(PoolFullError("full")) == "pool_full"
    assert refusal_reason(ServiceError(Code.RESOURCE_EXHAUSTED, "limit")) == "session_limit"
    assert refusal_reason(ServiceError(Code.INVALID_ARGUMENT, "bad")) == "invalid"
    assert refusal_reason(ServiceError(Code.UNAVAILABLE, "draining")) == "draining"
