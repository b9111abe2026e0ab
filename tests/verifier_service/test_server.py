"""The verifier's gRPC server and the drafter's remote session, over real gRPC on loopback.

Both verification backends (continuous batching, and one session at a time) pass every test.
Greedy output through the remote verifier equals the in-process engine's, also for concurrent
sessions; every bad message gets a clear status and leaves no session behind; cancellation, deadlines and the session limit work;
a replica that stops mid-stream hands the session to another without changing the output.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from drafter_service.base import create_drafter
from core.reports import GenerationReport
from drafter_service.generation import StopConditions, collect, speculate
from protos.specroute.v1 import specroute_pb2, verifier_pb2, verifier_pb2_grpc
from specroute.engine import Engine
from tests.conftest import PROMPTS
from tests.polling import wait_for
from core.errors import Code, ServiceError
from verifier_service.client import VerifierPool
from core.contracts import DraftTree
from core.sampling import SamplingParams
from verifier_service.server import VerifierServer, VerifierServerConfig, VerifierServicer
from verifier_service.session import SessionState

MAX_NEW = 20


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "unbatched"])
def server(target, request):
    config = VerifierServerConfig(max_sessions=3, idle_timeout_s=3.0, batching=request.param)
    srv = VerifierServer(target, config, replica="v0").start()
    yield srv
    srv.stop(grace_s=0.5)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield verifier_pb2_grpc.VerifierStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def pool(server):
    p = VerifierPool.static([server.address], failover_timeout_s=2.0)
    yield p
    p.close()


def remote_generate(pool, target, drafter, prompt, sampling=SamplingParams(), max_new=MAX_NEW):
    ids = target.tokenizer.encode(prompt)
    with pool.open(ids, sampling) as session:
        draft = drafter.start(ids, sampling) if drafter is not None else None
        stats = GenerationReport()
        stop = StopConditions(max_new, session.eos_token_ids)
        return collect(speculate(session, draft, target.tokenizer, ids, stop, stats), stats), session


def open_msg(ids, **sampling):
    return verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(
        prompt_ids=ids, sampling=specroute_pb2.SamplingParams(**sampling)))


def tree_msg(tokens, parents, **kw):
    return verifier_pb2.SessionRequest(tree=verifier_pb2.Tree(tokens=tokens, parents=parents, **kw))


def call(stub, messages, timeout=10):
    return list(stub.Session(iter(messages), timeout=timeout))


@pytest.mark.parametrize("kind", ["none", "ngram", "model", "hybrid"])
def test_remote_greedy_equals_in_process(pool, target, tiny_zoo, kind):
    drafter = None if kind == "none" else create_drafter(kind, {"path": tiny_zoo.llama_drafter} if kind != "ngram" else {})
    engine = Engine(target, drafter)
    for prompt in PROMPTS[:6]:
        expected = engine.generate(prompt, MAX_NEW)
        result, session = remote_generate(pool, target, drafter, prompt)
        assert result.token_ids == expected.token_ids
        assert result.text == expected.text
        assert session.failovers == 0 and session.replica == "v0"


def test_concurrent_sessions_keep_greedy_output(pool, target, tiny_zoo, server):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    engine = Engine(target, drafter)
    prompts = PROMPTS[:server.config.max_sessions]
    expected = [engine.generate(p, MAX_NEW).token_ids for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as workers:
        results = list(workers.map(lambda p: remote_generate(pool, target, drafter, p)[0].token_ids, prompts))
    assert results == expected
    assert wait_for(lambda: server.active_sessions == 0)


def test_kv_pool_bound_is_resource_exhausted(target):
    config = VerifierServerConfig(max_kv_tokens=target.max_context // 2)
    srv = VerifierServer(target, config, replica="small").start()
    try:
        stub = verifier_pb2_grpc.VerifierStub(grpc.insecure_channel(srv.address))
        with pytest.raises(grpc.RpcError) as err:  # max_new_tokens 0: reserves the whole context
            call(stub, [open_msg([1, 2, 3])])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "KV pool" in err.value.details()
        small = verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(prompt_ids=[1, 2, 3], max_new_tokens=8))
        assert next(iter(stub.Session(iter([small]), timeout=10))).opened.max_context == target.max_context
        assert wait_for(lambda: srv.servicer.backend.batcher.reserved == 0)
    finally:
        srv.stop(grace_s=0.5)


def test_sampled_with_seed_is_reproducible(pool, target, tiny_zoo):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    sampling = SamplingParams(temperature=0.9, top_p=0.9, seed=7)
    engine = Engine(target, drafter)
    expected = engine.generate(PROMPTS[0], MAX_NEW, sampling)
    result, _ = remote_generate(pool, target, drafter, PROMPTS[0], sampling)
    assert result.token_ids == expected.token_ids


@pytest.mark.parametrize("messages, code, words", [
    ([open_msg([])], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ([open_msg([1] * 10_000)], grpc.StatusCode.INVALID_ARGUMENT, "context"),
    ([open_msg([10**6])], grpc.StatusCode.INVALID_ARGUMENT, "vocabulary"),
    ([open_msg([5, 6], temperature=-1.0)], grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
    ([open_msg([5, 6], temperature=1.0, top_p=1.5)], grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
    ([tree_msg([5], [-1])], grpc.StatusCode.FAILED_PRECONDITION, "open"),
    ([open_msg([5, 6]), open_msg([5, 6])], grpc.StatusCode.FAILED_PRECONDITION, "open"),
    ([open_msg([5, 6]), tree_msg([6, 7], [-1])], grpc.StatusCode.INVALID_ARGUMENT, "parents"),
    ([open_msg([5, 6]), tree_msg([9], [-1])], grpc.StatusCode.INVALID_ARGUMENT, "root"),
    ([open_msg([5, 6]), tree_msg([6, 7, 8], [-1, 2, 0])], grpc.StatusCode.INVALID_ARGUMENT, "parent"),
    ([open_msg([5, 6]), tree_msg([6, 10**6], [-1, 0])], grpc.StatusCode.INVALID_ARGUMENT, "vocabulary"),
    ([open_msg([5, 6]), tree_msg([6] + [7] * 100, [-1] + list(range(100)))],
     grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ([open_msg([5, 6], temperature=1.0), tree_msg([6, 7], [-1, 0])], grpc.StatusCode.INVALID_ARGUMENT,
     "distribution"),
    ([open_msg([5, 6], temperature=1.0),
      tree_msg([6, 7], [-1, 0], dists=[verifier_pb2.DraftDist(token_ids=[7], probs=[0.5, 0.5])])],
     grpc.StatusCode.INVALID_ARGUMENT, "distribution"),
    ([open_msg([5, 6], temperature=1.0),
      tree_msg([6, 7], [-1, 0], dists=[verifier_pb2.DraftDist(token_ids=[7, 8], probs=[0.2, 0.2])] * 2)],
     grpc.StatusCode.INVALID_ARGUMENT, "sum"),
    ([open_msg([2**28] * 300_000)], grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
])
def test_bad_messages_get_clear_errors_and_free_the_session(stub, server, messages, code, words):
    with pytest.raises(grpc.RpcError) as err:
        call(stub, messages)
    assert err.value.code() == code, err.value.details()
    assert words in (err.value.details() or ""), err.value.details()
    assert wait_for(lambda: server.active_sessions == 0)


@pytest.mark.parametrize("method, error", [
    ("check", ValueError("a bug in the checks")),
    ("walk", RuntimeError("a bug in the acceptance walk")),
    ("walk", ValueError("a bug in the acceptance walk")),
])
def test_a_bug_inside_the_session_is_internal_not_the_callers_fault(stub, server, monkeypatch, method, error):
    def broken(*args, **kwargs):
        raise error
    monkeypatch.setattr(SessionState, method, broken)
    with pytest.raises(grpc.RpcError) as err:
        call(stub, [open_msg([5, 6]), tree_msg([6], [-1])])
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
    assert str(error) not in (err.value.details() or ""), "the bug's own message stays in the verifier's log"
    assert wait_for(lambda: server.active_sessions == 0)


def test_a_bug_while_opening_is_internal(stub, server, monkeypatch):
    async def broken(*args, **kwargs):
        raise ValueError("a bug while opening")
    monkeypatch.setattr(server.servicer.backend, "open", broken)
    with pytest.raises(grpc.RpcError) as err:
        call(stub, [open_msg([5, 6])])
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
    assert wait_for(lambda: server.active_sessions == 0)


def test_a_good_session_after_bad_ones(stub, target):
    ids = target.tokenizer.encode(PROMPTS[1])
    responses = call(stub, [open_msg(ids), tree_msg([ids[-1]], [-1])])
    assert responses[0].WhichOneof("kind") == "opened"
    assert responses[1].verdict.num_drafted == 0


def test_session_limit_and_cancellation(stub, server, pool, target):
    ids = target.tokenizer.encode(PROMPTS[2])
    sessions = [pool.open(ids, SamplingParams()) for _ in range(server.config.max_sessions)]
    assert server.active_sessions == server.config.max_sessions
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        call(stub, [open_msg(ids)])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry after" in err.value.details()
    assert time.monotonic() - start >= server.config.admission_wait_s  # it waited for a slot first
    assert ("retry-after-ms", "100") in (err.value.trailing_metadata() or ())
    with pytest.raises(ServiceError) as verr:
        pool.open(ids, SamplingParams())
    assert verr.value.code == Code.RESOURCE_EXHAUSTED
    for session in sessions:
        session.close()  # a cancelled stream frees its session at once
    assert wait_for(lambda: server.active_sessions == 0)


def test_a_client_that_cancels_and_retries_gets_its_own_slot(server, pool, target):
    """At the limit, a new session waits (admission_wait_s) for a closing one: a client that
    cancels and resubmits at once is not refused for its own dead session."""
    ids = target.tokenizer.encode(PROMPTS[2])
    sessions = [pool.open(ids, SamplingParams()) for _ in range(server.config.max_sessions)]
    for _ in range(5):
        sessions.pop().close()  # cancel ...
        sessions.append(pool.open(ids, SamplingParams()))  # ... and retry at once
    assert server.active_sessions == server.config.max_sessions
    for session in sessions:
        session.close()
    assert wait_for(lambda: server.active_sessions == 0)


def test_deadline_and_idle_timeout(stub, server, target):
    ids = target.tokenizer.encode(PROMPTS[3])
    hold = threading.Event()

    def slow():
        yield open_msg(ids)
        hold.wait(10)
    with pytest.raises(grpc.RpcError) as err:
        call(stub, slow(), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: server.active_sessions == 0)
    with pytest.raises(grpc.RpcError) as err:  # no deadline, but idle longer than idle_timeout_s
        call(stub, slow(), timeout=None)
    hold.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no message" in err.value.details()
    assert wait_for(lambda: server.active_sessions == 0)


def test_health_protocol(server):
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="specroute.v1.Verifier"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_failover_to_another_replica_keeps_greedy_output(target, tiny_zoo):
    first = VerifierServer(target, replica="a").start()
    second = VerifierServer(target, replica="b").start()
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    expected = Engine(target, drafter).generate(PROMPTS[4], 40)
    pool = VerifierPool.static([first.address, second.address], failover_timeout_s=5.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[4])
        session = pool.open(ids, SamplingParams())
        victim = {"a": first, "b": second}[session.replica]
        draft = drafter.start(ids, SamplingParams())
        stats = GenerationReport()
        tokens = []
        for i, chunk in enumerate(speculate(session, draft, target.tokenizer, ids, StopConditions(40), stats)):
            tokens.extend(chunk.token_ids)
            if i == 1:
                victim.stop(grace_s=0)  # the replica goes away mid-stream
        assert tokens == expected.token_ids
        assert session.failovers == 1 and session.replica != victim.servicer.replica
        session.close()
    finally:
        pool.close()
        first.stop(0)
        second.stop(0)


def test_no_replica_left_is_a_retryable_error_not_a_hang(target):
    srv = VerifierServer(target, replica="only").start()
    pool = VerifierPool.static([srv.address], failover_timeout_s=1.0, quarantine_s=30.0)
    try:
        session = pool.open(target.tokenizer.encode(PROMPTS[5]), SamplingParams())
        srv.stop(grace_s=0)
        start = time.monotonic()
        with pytest.raises(ServiceError) as err:
            session.verify(DraftTree.root_only(session.root))
        assert err.value.code == Code.UNAVAILABLE
        assert time.monotonic() - start < 10
    finally:
        pool.close()


def test_verdicts_carry_a_tree_budget_shared_among_open_sessions(target):
    config = VerifierServerConfig(step_tokens=8, min_tree_nodes=3, max_tree_nodes=16)
    srv = VerifierServer(target, config, replica="budget").start()
    channel = grpc.insecure_channel(srv.address)
    try:
        servicer, budgets = srv.servicer, {}
        for open_sessions in (1, 2, 4):  # no session is running: set the count the budget reads
            servicer.active_sessions = open_sessions
            budgets[open_sessions] = servicer.tree_budget()
        servicer.active_sessions = 0
        assert budgets == {1: 8, 2: 4, 4: 3}  # 8 / sessions, at least min_tree_nodes
        responses = call(verifier_pb2_grpc.VerifierStub(channel), [open_msg([7, 8]), tree_msg([8], [-1])])
        assert responses[0].opened.max_tree_nodes == 8  # the first tree is split like the others
        assert responses[1].verdict.max_tree_nodes == 8
        unbounded = VerifierServicer(target, config.model_copy(update={"step_tokens": None}), "x")
        assert unbounded.tree_budget() == 16
        unbounded.backend.stop()
    finally:
        channel.close()
        srv.stop(grace_s=0.5)


def test_the_weighted_split_keeps_concurrent_budgets_within_the_step_and_greedy_output(target):
    config = VerifierServerConfig(step_tokens=8, max_tree_nodes=16, split="weighted", max_sessions=3)
    srv = VerifierServer(target, config, replica="weighted").start()
    pool = VerifierPool.static([srv.address], failover_timeout_s=2.0)
    servicer, splits = srv.servicer, []
    budget = servicer.tree_budget

    def recorded(key=None):  # on the server's loop: every open session's budget at this verdict
        splits.append({k: budget(k) for k in servicer.estimates})
        return budget(key)
    servicer.tree_budget = recorded
    try:
        drafter = create_drafter("ngram", {})
        prompts = PROMPTS[:3]
        expected = [Engine(target, drafter).generate(p, MAX_NEW).token_ids for p in prompts]
        with ThreadPoolExecutor(3) as ex:
            outputs = list(ex.map(lambda p: remote_generate(pool, target, drafter, p)[0].token_ids, prompts))
        assert outputs == expected  # the split sizes trees; it never changes what is accepted
        assert splits and all(all(b >= 1 for b in split.values()) and sum(split.values()) <= 8 for split in splits)
        assert max(len(split) for split in splits) >= 2 and max(max(split.values()) for split in splits) > 1
        assert wait_for(lambda: not servicer.estimates)  # closed sessions leave no estimate behind
    finally:
        pool.close()
        srv.stop(grace_s=0.5)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs Linux and a second CPU to tell pinned threads apart")
@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_a_pinned_forward_thread_runs_on_its_cpus_alone_and_keeps_greedy_output(target, batching):
    one = max(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="verifier.deployment.cpus"):
        VerifierServer(target, VerifierServerConfig(batching=batching), cpus=[(os.cpu_count() or 1) + 64])
    srv = VerifierServer(target, VerifierServerConfig(batching=batching), replica="pinned", cpus=[one]).start()
    pool = VerifierPool.static([srv.address], failover_timeout_s=2.0)
    try:
        drafter = create_drafter("ngram", {})
        expected = Engine(target, drafter).generate(PROMPTS[0], MAX_NEW)
        assert remote_generate(pool, target, drafter, PROMPTS[0])[0].token_ids == expected.token_ids
        pinned = [tid for tid in map(int, os.listdir("/proc/self/task")) if _affinity(tid) == {one}]
        # The forward thread, and the OpenMP workers torch starts from it, run on the pinned CPU; no other.
        assert 1 <= len(pinned) <= torch.get_num_threads() and threading.get_native_id() not in pinned
    finally:
        pool.close()
        srv.stop(grace_s=0.5)


def _affinity(tid: int) -> set[int] | None:
    try:
        return os.sched_getaffinity(tid)
    except OSError:  # a thread that ended meanwhile
        return None
