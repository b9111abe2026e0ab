"""Continuous batching: many sessions' trees in one forward over one KV pool, losslessly.

Each batched session must give exactly the verdicts of its own unbatched `VerifierSession` on
the same trees (ragged prompts, chunked prefill, trees of every shape, greedy and seeded
sampling); long prompts must not hold up running sessions; memory stays within its bounds and
closing frees everything.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.polling import wait_for
from verifier_service.batching import BatchedVerifier
from core.contracts import NO_PARENT, DraftTree, InvalidTreeError
from verifier_service.kv_pool import KVPool, PoolFullError
from core.sampling import SamplingParams
from verifier_service.session import InvalidPromptError, VerifierSession

GREEDY = SamplingParams()


@pytest.fixture
def batcher(target):
    b = BatchedVerifier(target, max_batch_tokens=96, prefill_chunk_tokens=16)
    yield b
    b.stop()


def greedy_continuation(target, prompt, n):
    session = VerifierSession(target, prompt, GREEDY)
    for _ in range(n):
        session.decode_step()
    return session.committed[len(prompt):]


def make_tree(rng, root, truth, vocab):
    """A tree whose main branch follows `truth` (the target's own tokens) for a random number of
    steps, then guesses, with random side branches: acceptance lengths vary from 0 to all."""
    tokens, parents = [root], [NO_PARENT]
    right = rng.randrange(len(truth) + 1)
    for depth, token in enumerate(truth[:rng.randrange(1, len(truth) + 1)]):
        tokens.append(token if depth < right else rng.randrange(vocab))
        parents.append(len(tokens) - 2 if depth else 0)
    for _ in range(rng.randrange(4)):
        parents.append(rng.randrange(len(tokens)))
        tokens.append(rng.randrange(vocab))
    return DraftTree(tuple(tokens), tuple(parents))


def test_concurrent_sessions_match_their_unbatched_verdicts(target, batcher):
    rng = random.Random(0)
    vocab = target.vocab_size
    prompts = [[rng.randrange(vocab) for _ in range(n)] for n in (1, 2, 7, 23, 40, 61)]  # ragged, some chunked
    reference = [VerifierSession(target, p, GREEDY) for p in prompts]
    sessions = [batcher.open(p, GREEDY, max_new_tokens=40) for p in prompts]
    for s in sessions:
        s.ready.result(timeout=30)
    rounds = 0
    while rounds < 8:
        trees = [make_tree(rng, r.root, greedy_continuation(target, r.committed, 5), vocab) for r in reference]
        futures = [batcher.verify(s, t) for s, t in zip(sessions, trees)]  # all queued before any finishes
        for r, t, f in zip(reference, trees, futures):
            expected, got = r.verify(t), f.result(timeout=30)
            assert (got.accepted_nodes, got.accepted_tokens, got.bonus_token) == \
                   (expected.accepted_nodes, expected.accepted_tokens, expected.bonus_token)
        rounds += 1
    assert [s.committed for s in sessions] == [r.committed for r in reference]
    assert any(len(r.committed) - len(p) > 2 * rounds for r, p in zip(reference, prompts))  # trees were accepted
    assert batcher.mean_batch > 2  # trees really shared forwards
    for s in sessions:
        batcher.close(s)
    assert wait_for(lambda: batcher.pool.used == 0 and batcher.reserved == 0)


def test_seeded_sampling_matches_unbatched(target, batcher):
    sampling = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
    prompts = [[5, 6, 7], [9] * 20, [3]]
    reference = [VerifierSession(target, p, sampling) for p in prompts]
    sessions = [batcher.open(p, sampling) for p in prompts]
    for s in sessions:
        s.ready.result(timeout=30)
    for _ in range(10):
        futures = [batcher.verify(s, DraftTree.root_only(s.root)) for s in sessions]
        for r, f in zip(reference, futures):
            assert f.result(timeout=30).bonus_token == r.decode_step().bonus_token
    for s in sessions:
        batcher.close(s)


def test_a_long_prompt_does_not_stall_running_sessions(target, batcher):
    running = batcher.open([1, 2, 3], GREEDY, max_new_tokens=10)
    running.ready.result(timeout=30)
    done = []
    long_prompt = batcher.open([4] * 100, GREEDY, max_new_tokens=10)  # 7 chunks of 16
    long_prompt.ready.add_done_callback(lambda f: done.append("long prefill"))
    tree = batcher.verify(running, DraftTree.root_only(running.root))
    tree.add_done_callback(lambda f: done.append("running tree"))
    long_prompt.ready.result(timeout=30)
    assert wait_for(lambda: len(done) == 2)
    assert done == ["running tree", "long prefill"]
    for s in (running, long_prompt):
        batcher.close(s)


def test_bad_trees_fail_at_once_and_leave_the_session_usable(target, batcher):
    session = batcher.open([1, 2, 3], GREEDY)
    session.ready.result(timeout=30)
    with pytest.raises(InvalidTreeError, match="root"):
        batcher.verify(session, DraftTree.root_only(session.root + 1))
    with pytest.raises(InvalidTreeError, match="nodes"):
        batcher.verify(session, DraftTree((session.root,) * 65, (NO_PARENT, *range(64))))
    first = batcher.verify(session, DraftTree.root_only(session.root))
    with pytest.raises(RuntimeError, match="in flight"):
        batcher.verify(session, DraftTree.root_only(session.root))
    first.result(timeout=30)
    assert len(session.committed) == 4
    batcher.close(session)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.verify(session, DraftTree.root_only(session.root))


def test_memory_is_bounded_by_reservations(target):
    batcher = BatchedVerifier(target, max_kv_tokens=200)
    try:
        first = batcher.open([1] * 50, GREEDY, max_tree_nodes=16, max_new_tokens=50)  # reserves 116
        with pytest.raises(PoolFullError, match="unreserved"):
            batcher.open([1] * 50, GREEDY, max_tree_nodes=16, max_new_tokens=50)
        with pytest.raises(InvalidPromptError, match="empty"):
            batcher.open([], GREEDY)
        batcher.close(first)  # even before its prefill is done
        assert wait_for(lambda: batcher.reserved == 0 and batcher.pool.used == 0)
        second = batcher.open([1] * 50, GREEDY, max_tree_nodes=16, max_new_tokens=50)
        second.ready.result(timeout=30)
        assert batcher.pool.used == 49
    finally:
        batcher.stop()


def test_a_session_opened_right_after_a_close_gets_its_room(target):
    """A client that cancels and retries at once: the closed session's reservation is free the
    moment close returns, not when the loop thread next runs."""
    batcher = BatchedVerifier(target, max_kv_tokens=200)
    try:
        session = batcher.open([1] * 50, GREEDY, max_tree_nodes=16, max_new_tokens=50)  # 116 of 200
        for _ in range(20):
            batcher.close(session)
            session = batcher.open([1] * 50, GREEDY, max_tree_nodes=16, max_new_tokens=50)
        session.ready.result(timeout=30)
        assert batcher.reserved == 116
        batcher.close(session)
        assert wait_for(lambda: batcher.reserved == 0 and batcher.pool.used == 0)
    finally:
        batcher.stop()


def test_closing_with_work_queued_cancels_it_and_frees_slots(target):
    batcher = BatchedVerifier(target, prefill_chunk_tokens=8)
    try:
        sessions = [batcher.open([2] * 60, GREEDY) for _ in range(4)]
        for s in sessions:
            batcher.close(s)
        assert wait_for(lambda: batcher.queued == 0 and batcher.pool.used == 0 and batcher.reserved == 0)
        assert all(s.ready.done() for s in sessions)
    finally:
        batcher.stop()


def test_pool_hands_out_lowest_slots_and_grows():
    pool = KVPool(max_tokens=8, initial_tokens=2)
    a = pool.allocate(3)
    assert a == [0, 1, 2] and pool.capacity >= 3
    b = pool.allocate(2)
    pool.free([1, 0])
    assert pool.allocate(1) == [0] and pool.extent == 5
    pool.free(b)
    assert pool.extent == 3
    with pytest.raises(PoolFullError):
        pool.allocate(7)


def test_a_forward_waits_briefly_for_drafting_sessions(target):
    batcher = BatchedVerifier(target, batch_wait_ms=300)
    try:
        sessions = [batcher.open([1, 2, 3], GREEDY), batcher.open([4, 5], GREEDY)]
        for s in sessions:
            s.ready.result(timeout=30)
        forwards = batcher.forwards
        first = batcher.verify(sessions[0], DraftTree.root_only(sessions[0].root))
        time.sleep(0.05)  # the other session is still drafting: the forward waits for it
        second = batcher.verify(sessions[1], DraftTree.root_only(sessions[1].root))
        first.result(timeout=30), second.result(timeout=30)
        assert batcher.forwards == forwards + 1
        batcher.close(sessions[1])  # one session left: no wait at all (else this would take 5 s)
        batcher.batch_wait_s = 5.0
        start = time.monotonic()
        batcher.verify(sessions[0], DraftTree.root_only(sessions[0].root)).result(timeout=30)
        assert time.monotonic() - start < 2.0
    finally:
        batcher.stop()
