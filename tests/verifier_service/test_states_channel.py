"""The target's hidden states in verdicts: in-process, batched, and over gRPC on loopback.

A session that asks for states gets one row per prefilled token, then one per processed position
on each committed path (the root and the accepted nodes): together, the target's own states of
every committed token but the last, as one forward over the whole sequence computes them. Output
is unchanged, a session that asks for nothing gets nothing, and bad requests are refused with
INVALID_ARGUMENT (RESOURCE_EXHAUSTED beyond the message size). With `last_only`, each message holds
the last row it would otherwise hold.
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
LAST_ONLY = StateRequest(layers=(0, 1, -1), dtype="float32", last_only=True)


class Recording(DraftSession):
    """A model drafter's session that keeps every state row it is given (one tensor per message)."""

    def __init__(self, inner: DraftSession, last_only: bool = False):
        super().__init__(inner.context, inner.sampling)
        self.inner, self.rows, self.last_only = inner, [], last_only
        self.emitted: list[int] = []  # tokens each verdict committed

    def prime(self, states: HiddenStates) -> None:
        self.rows.append(states.tensor())

    def propose(self, limit):
        return self.inner.propose(limit)

    def observe(self, verdict) -> None:
        assert verdict.states is not None and verdict.states.rows == (1 if self.last_only else verdict.num_accepted + 1)
        self.rows.append(verdict.states.tensor())
        self.emitted.append(verdict.num_emitted)
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


def run(verifier, drafter, target, ids, sampling=SamplingParams(), last_only=False):
    session = Recording(drafter.start(ids, sampling), last_only)
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


def last_positions(prompt_len: int, emitted: list[int]) -> list[int]:
    """The position each message's last row is of: the last prefilled token (none for a one-token
    prompt), then each verdict's last committed path node (the committed tokens so far, less two)."""
    positions = [prompt_len - 2]
    for n in emitted:
        positions.append(positions[-1] + n)
    return [p for p in positions if p >= 0]


def assert_last_rows(full: Recording, last: Recording, atol: float = 0.0):
    """Every message of `last` is the last row of the same message of `full`."""
    assert len(last.rows) == len(full.rows) and last.emitted == full.emitted
    for whole, row in zip(full.rows, last.rows):
        assert row.shape == whole[-1:].shape, "one row per message (none for an empty prefill)"
        assert torch.allclose(row, whole[-1:], rtol=0, atol=atol)


@pytest.mark.parametrize("prompt", [PROMPTS[0], PROMPTS[21]])
def test_in_process_last_only_is_the_last_row_of_each_message(target, drafter, prompt):
    ids = target.tokenizer.encode(prompt)
    full_result, full = run(VerifierSession(target, ids, SamplingParams(), states=ALL_LAYERS), drafter, target, ids)
    result, last = run(VerifierSession(target, ids, SamplingParams(), states=LAST_ONLY), drafter, target, ids,
                       last_only=True)
    assert result.token_ids == full_result.token_ids, "greedy output is unchanged with last_only"
    assert_last_rows(full, last)
    reference = reference_states(target, (ids + result.token_ids)[:-1], (0, 1, 2))
    assert torch.allclose(last.states(), reference[last_positions(len(ids), last.emitted)], atol=1e-4)


def test_last_only_of_an_empty_prefill_is_no_row(target):
    root = target.tokenizer.encode(PROMPTS[0])[:1]
    session = VerifierSession(target, root, SamplingParams(), states=LAST_ONLY)
    assert session.prefill_states.rows == 0
    assert session.decode_step().states.rows == 1, "nothing accepted: the root's row"
    batcher = BatchedVerifier(target)
    try:
        paged = batcher.open(root, SamplingParams(), states=LAST_ONLY)
        assert paged.ready.result(timeout=30).prefill_states.rows == 0
        batcher.close(paged)
    finally:
        batcher.stop()


def test_batched_last_only_keeps_the_whole_prefills_last_row_across_chunks(target, drafter):
    batcher = BatchedVerifier(target, prefill_chunk_tokens=4, max_batch_tokens=64)
    try:
        for prompt in (PROMPTS[0], PROMPTS[10]):
            ids = target.tokenizer.encode(prompt)
            assert len(ids) - 1 > 2 * 4, "the prompt prefills in several chunks"
            opened = [batcher.open(ids, SamplingParams(), 16, states=asked) for asked in (ALL_LAYERS, LAST_ONLY, None)]
            full, last, plain = (paged.ready.result(timeout=30) for paged in opened)
            assert plain.prefill_states is None
            assert last.prefill_states.rows == 1
            assert torch.allclose(last.prefill_states.tensor(), full.prefill_states.tensor()[-1:], atol=1e-5)
            for _ in range(3):
                tree = drafter.start(list(full.committed), SamplingParams()).propose(DraftLimit(16, 4))
                whole, only = (batcher.verify(paged, tree).result(timeout=30) for paged in (full, last))
                assert only.accepted_nodes == whole.accepted_nodes and only.states.rows == 1
                assert torch.allclose(only.states.tensor(), whole.states.tensor()[-1:], atol=1e-5)
            for paged in (full, last, plain):
                batcher.close(paged)
    finally:
        batcher.stop()


def test_last_only_over_grpc_is_the_last_row_of_each_message(target, drafter, server):
    pool = VerifierPool.static([server.address], max_message_bytes=1 << 16, failover_timeout_s=2.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[2])
        runs = []
        for last_only in (False, True):
            with pool.open(ids, SamplingParams(), states=StateRequest(last_only=last_only)) as remote:
                runs.append(run(remote, drafter, target, ids, last_only=last_only))
        (full_result, full), (result, last) = runs
        assert result.token_ids == full_result.token_ids
        assert_last_rows(full, last)
        # every layer in float32 of a long prompt is beyond the 64 KiB limit (see above), but not its last row
        long_prompt = target.tokenizer.encode((PROMPTS[0] + " ") * 5)
        with pool.open(long_prompt, SamplingParams(), states=LAST_ONLY) as remote:
            assert remote.prefill_states.rows == 1
    finally:
        pool.close()


def test_a_resumed_last_only_session_gets_its_prefixs_last_row(target, drafter):
    first = VerifierServer(target, replica="a").start()
    second = VerifierServer(target, replica="b").start()
    pool = VerifierPool.static([first.address, second.address], failover_timeout_s=5.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[4])
        remote = pool.open(ids, SamplingParams(), states=LAST_ONLY)
        victim = {"a": first, "b": second}[remote.replica]

        class Marking(Recording):
            """Notes the first message after the failover."""
            resumed_at = None

            def observe(self, verdict) -> None:
                if self.resumed_at is None and remote.failovers:
                    self.resumed_at = len(self.rows)
                super().observe(verdict)

        session = Marking(drafter.start(ids, SamplingParams()), last_only=True)
        tokens = []
        stats = GenerationReport()
        for i, chunk in enumerate(speculate(remote, session, target.tokenizer, ids, StopConditions(40), stats)):
            tokens.extend(chunk.token_ids)
            if i == 1:
                victim.stop(grace_s=0)
        assert remote.failovers == 1 and session.resumed_at is not None
        assert tokens == Engine(target, drafter).generate(PROMPTS[4], 40).token_ids
        reference = reference_states(target, (ids + tokens)[:-1], (0, 1, 2))
        assert torch.allclose(session.states(), reference[last_positions(len(ids), session.emitted)], atol=1e-4)
        resumed = remote.resumed_states
        assert resumed.rows == 1, "the prefix's last row only"
        before = session.rows[session.resumed_at - 1]  # the last row the session had before the failover
        assert torch.allclose(resumed.tensor(), before, atol=1e-4)
        remote.close()
    finally:
        pool.close()
        first.stop(0)
        second.stop(0)
