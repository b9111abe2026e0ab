"""The target's hidden states in verdicts: in-process, batched, and over gRPC on loopback.

A session that asks for states gets one row per prefilled token, then one per processed position
on each committed path (the root and the accepted nodes): together, the target's own states of
every committed token but the last, as one forward over the whole sequence computes them. Output
is unchanged, a session that asks for nothing gets nothing, and bad requests are refused with
INVALID_ARGUMENT (RESOURCE_EXHAUSTED beyond the message size).
"""

from __future__ import annotations

import grpc
import pytest
import torch

from core.contracts import NO_PARENT
from core.errors import Code, ServiceError
from core.reports import GenerationReport
from core.sampling import SamplingParams
from core.states import HiddenStates, InvalidStateRequestError, StateRequest
from drafter_service.base import DraftLimit, DraftSession, create_drafter
from drafter_service.generation import StopConditions, collect, speculate
from specroute.engine import Engine
from tests.conftest import PROMPTS
from verifier_service.batching import BatchedVerifier
from verifier_service.client import VerifierPool
from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.session import VerifierSession

MAX_NEW = 24
ALL_LAYERS = StateRequest(layers=(0, 1, -1), dtype="float32")


class Recording(DraftSession):
    """A model drafter's session that keeps every state row it is given."""

    def __init__(self, inner: DraftSession):
        super().__init__(inner.context, inner.sampling)
        self.inner, self.rows = inner, []

    def prime(self, states: HiddenStates) -> None:
        self.rows.append(states.tensor())

    def propose(self, limit):
        return self.inner.propose(limit)

    def observe(self, verdict) -> None:
        assert verdict.states is not None and verdict.states.rows == verdict.num_accepted + 1
        self.rows.append(verdict.states.tensor())
        self.inner.observe(verdict)
        super().observe(verdict)

    def states(self) -> torch.Tensor:
        return torch.cat(self.rows)


def reference_states(target, ids: list[int], layers: tuple[int, ...]) -> torch.Tensor:
    """The target's states of ids from a plain HF forward (`output_hidden_states`): [len(ids), layers, H].
    HF's last entry is after the final norm while the channel's layer L is before it, so layer L comes
    from a hooked chain forward, checked against HF's entry through the final norm."""
    with torch.no_grad():
        out = target.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    last = target.num_layers
    rows = [out.hidden_states[i][0] for i in layers if i != last]
    if last in layers:  # before the final norm: the input of the head, un-normed, from one more chain forward
        _, pre_norm = target.forward_tree_states(ids, [NO_PARENT, *range(len(ids) - 1)], target.new_cache(), (last,))
        norm = target.model.base_model.norm
        assert torch.allclose(norm(pre_norm[:, 0].clone()), out.hidden_states[last][0], atol=1e-4), \
            "layer L is the last decoder layer's output: the final norm of it is HF's last hidden state"
        rows.insert(list(layers).index(last), pre_norm[:, 0].float())
    return torch.stack(rows, dim=1).float()


@pytest.fixture(scope="module")
def drafter(tiny_zoo):
    return create_drafter("model", {"path": tiny_zoo.llama_drafter})


def run(verifier, drafter, target, ids, sampling=SamplingParams()):
    session = Recording(drafter.start(ids, sampling))
    stats = GenerationReport()
    result = collect(speculate(verifier, session, target.tokenizer, ids, StopConditions(MAX_NEW), stats), stats)
    return result, session


@pytest.mark.parametrize("prompt", [PROMPTS[0], PROMPTS[8], PROMPTS[21]])
def test_in_process_states_are_the_targets_own_and_output_is_unchanged(target, drafter, prompt):
    ids = target.tokenizer.encode(prompt)
    expected = Engine(target, drafter).generate(prompt, MAX_NEW)
    verifier = VerifierSession(target, ids, SamplingParams(), states=ALL_LAYERS)
    result, session = run(verifier, drafter, target, ids)
    assert result.token_ids == expected.token_ids, "greedy output is unchanged with states on"
    committed = ids + result.token_ids
    got = session.states()
    assert got.shape == (len(committed) - 1, 3, target.hidden_size), "one row per committed token but the last"
    assert torch.allclose(got, reference_states(target, committed[:-1], (0, 1, 2)), atol=1e-4)


def test_a_session_that_asks_for_nothing_gets_nothing(target):
    session = VerifierSession(target, target.tokenizer.encode(PROMPTS[0]), SamplingParams())
    verdict = session.decode_step()
    assert session.prefill_states is None and verdict.states is None


@pytest.mark.parametrize("request_, words", [(StateRequest(layers=(3,)), "layer 3 does not exist"),
                                             (StateRequest(dtype="float64"), "not offered")])
def test_bad_requests_fail_at_open(target, request_, words):
    with pytest.raises(InvalidStateRequestError, match=words):
        VerifierSession(target, [1, 2, 3], SamplingParams(), states=request_)
    batcher = BatchedVerifier(target)
    try:
        with pytest.raises(InvalidStateRequestError, match=words):
            batcher.open([1, 2, 3], SamplingParams(), states=request_)
        assert batcher.reserved == 0, "a refused session reserves nothing"
    finally:
        batcher.stop()


def test_batched_states_match_with_chunked_prefill_and_mixed_sessions(target, drafter):
    batcher = BatchedVerifier(target, prefill_chunk_tokens=4, max_batch_tokens=64)
    try:
        prompts = [PROMPTS[0], PROMPTS[3], PROMPTS[10]]
        sessions = []
        for i, prompt in enumerate(prompts):
            ids = target.tokenizer.encode(prompt)
            paged = batcher.open(ids, SamplingParams(), 16, states=ALL_LAYERS if i != 1 else None)
            paged.ready.result(timeout=30)
            sessions.append((ids, paged))
        for i, (ids, paged) in enumerate(sessions):
            if i == 1:
                assert paged.prefill_states is None
                continue
            assert paged.prefill_states.rows == len(ids) - 1
            assert torch.allclose(paged.prefill_states.tensor(), reference_states(target, ids[:-1], (0, 1, 2)),
                                  atol=1e-4)
            draft = drafter.start(ids, SamplingParams())
            tree = draft.propose(DraftLimit(16, 4))
            verdict = batcher.verify(paged, tree).result(timeout=30)
            committed = paged.committed
            assert verdict.states.rows == verdict.num_accepted + 1
            start = len(committed) - 1 - verdict.num_emitted
            want = reference_states(target, committed[:-1], (0, 1, 2))[start:]
            assert torch.allclose(verdict.states.tensor(), want, atol=1e-4)
        for _, paged in sessions:
            batcher.close(paged)
    finally:
        batcher.stop()


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "unbatched"])
def server(target, request):
    srv = VerifierServer(target, VerifierServerConfig(batching=request.param, max_message_bytes=1 << 16),
                         replica="v0").start()
    yield srv
    srv.stop(grace_s=0.5)


def test_states_over_grpc_equal_in_process(target, drafter, server):
    pool = VerifierPool.static([server.address], max_message_bytes=1 << 16, failover_timeout_s=2.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[2])
        wire = StateRequest()  # the last layer, float16
        with pool.open(ids, SamplingParams(), states=wire) as remote:
            result, session = run(remote, drafter, target, ids)
        assert result.token_ids == Engine(target, drafter).generate(PROMPTS[2], MAX_NEW).token_ids
        committed = ids + result.token_ids
        want = reference_states(target, committed[:-1], (target.num_layers,))
        assert torch.allclose(session.states(), want, atol=2e-2, rtol=2e-3), "float16 on the wire"
    finally:
        pool.close()


@pytest.mark.parametrize("request_, code, words", [
    (StateRequest(layers=(9,)), Code.INVALID_ARGUMENT, "layer 9 does not exist"),
    (StateRequest(dtype="int4"), Code.INVALID_ARGUMENT, "not offered"),
    (StateRequest(layers=(0, 1, 2), dtype="float32"), Code.RESOURCE_EXHAUSTED, "ask for fewer layers"),
])
def test_bad_or_oversized_requests_over_grpc(target, server, request_, code, words):
    pool = VerifierPool.static([server.address], max_message_bytes=1 << 16, failover_timeout_s=2.0)
    try:
        long_prompt = (PROMPTS[0] + " ") * 5  # float32 of every layer: beyond the 64 KiB limit
        with pytest.raises(ServiceError, match=words) as err:
            pool.open(target.tokenizer.encode(long_prompt), SamplingParams(), states=request_)
        assert err.value.code is code
        # the replica is fine afterwards
        with pool.open(target.tokenizer.encode(PROMPTS[1]), SamplingParams(), states=StateRequest()) as remote:
            assert remote.prefill_states is not None
    finally:
        pool.close()


def test_a_resumed_session_gets_its_prefix_states_again(target, drafter):
    first = VerifierServer(target, replica="a").start()
    second = VerifierServer(target, replica="b").start()
    pool = VerifierPool.static([first.address, second.address], failover_timeout_s=5.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[4])
        remote = pool.open(ids, SamplingParams(), states=StateRequest(dtype="float32"))
        victim = {"a": first, "b": second}[remote.replica]
        session = Recording(drafter.start(ids, SamplingParams()))
        tokens = []
        stats = GenerationReport()
        for i, chunk in enumerate(speculate(remote, session, target.tokenizer, ids, StopConditions(40), stats)):
            tokens.extend(chunk.token_ids)
            if i == 1:
                victim.stop(grace_s=0)
        assert remote.failovers == 1
        assert tokens == Engine(target, drafter).generate(PROMPTS[4], 40).token_ids
        committed = ids + tokens
        reference = reference_states(target, committed[:-1], (target.num_layers,))
        assert torch.allclose(session.states(), reference, atol=1e-4), "no row lost or doubled by the failover"
        resumed = remote.resumed_states.tensor()
        assert torch.allclose(resumed, reference[:resumed.shape[0]], atol=1e-4)
        remote.close()
    finally:
        pool.close()
        first.stop(0)
        second.stop(0)


def test_sampled_output_unchanged_by_asking_for_states(target, drafter):
    sampling = SamplingParams(temperature=1.0, seed=7)
    ids = target.tokenizer.encode(PROMPTS[8])
    plain = Engine(target, drafter).generate(PROMPTS[8], MAX_NEW, sampling)
    with_states, _ = run(VerifierSession(target, ids, sampling, states=StateRequest()), drafter, target, ids, sampling)
    assert with_states.token_ids == plain.token_ids, "states change no draw"
