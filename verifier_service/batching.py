"""Continuous batching: many sessions' trees verified in one target forward.

Orca (Yu et al., OSDI 2022) schedules at the granularity of iterations: requests join and leave
the running batch between model steps instead of waiting for a whole batch to finish. Here an
iteration is one target forward, and the work items are what verification needs:
- a prefill chunk (part of a new session's prompt), and
- a draft tree (one speculative round of one session; a session has at most one in flight).

`BatchedVerifier` owns the target and one `KVPool` (verifier_service.kv_pool) on a thread of its
own. Each iteration it takes queued items in arrival order while they fit `max_batch_tokens` (the
oldest item always goes first, so nothing starves; a long prompt is cut into chunks of at most
`prefill_chunk_tokens`, so it cannot stall the rounds of running sessions), packs them into one
forward over the pool, and hands each tree its rows of logits for the acceptance walk
(`SessionState.walk`, the same math as the unbatched verifier). Greedy output stays the target's
own: each token attends to exactly the keys it would see alone, at the same positions.

Unlike a decode step, a session's next tree is not ready when its verdict leaves: its drafter
must draft it first. So before a forward the loop waits up to `batch_wait_ms` for sessions that
are drafting to send theirs (without the wait, concurrent streams rarely share a forward); it
never waits when every open session is already queued.

Memory is bounded twice: `max_sessions` (the server's) and `max_kv_tokens`, the pool's size. A
session reserves `prompt + max_new_tokens + max_tree_nodes` slots when it opens (the whole context
if it does not say), and an open that would over-commit the pool fails at once with
`PoolFullError`, so a running session never runs out of room mid-generation.

Sessions that asked for hidden states (`core.states`) get their rows from the same forward: the
states of the layers any session in the batch asked for are read by hooks (none when no session
asked), and each session takes its own rows: every prefill chunk's, and each tree's root and
accepted nodes. A session that asked for `last_only` keeps the last row of its final chunk (the
whole prefill's last, not each chunk's) and of each tree's committed path.

What the loop does is reported to a `ForwardObserver` (trees and tree tokens per forward, how long
each tree queued, the pool's slots in use and free after each iteration); the default observer
does nothing, so a process without metrics pays nothing.

Callers (the gRPC servicer, on its event loop) get `concurrent.futures.Future`s; `close` may come
at any time (a cancelled stream): the session's queued work is dropped and its slots freed by the
loop thread, which alone touches the pool.

This module knows nothing about gRPC, drafters or Ray (nor where the observer sends what it sees).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch

from core import cpus as cpu_affinity
from core.contracts import DraftTree
from verifier_service.kv_pool import KVPool, PoolFullError, StepCache, pool_mask
from core.hf import captured_states, stack_states
from core.sampling import SamplingParams
from core.states import HiddenStates, StateRequest
from verifier_service.session import DEFAULT_MAX_TREE_NODES, SessionState
from verifier_service.target import TargetModel
from core.tree_mask import AncestorRows, tree_depths

log = logging.getLogger(__name__)


class ForwardObserver(Protocol):
    """What a verifier's forwards report (a metrics sink; every method must return quickly)."""

    def forward(self, trees: int, tokens: int) -> None:
        """One target forward verified `trees` trees (>= 1) of `tokens` tree tokens in all."""

    def queue_wait(self, seconds: float) -> None:
        """A tree waited this long between its submission and the start of its forward."""

    def kv_slots(self, used: int, free: int) -> None:
        """The KV pool's slots now in use, and free (up to its `max_tokens`)."""


class NoForwardObserver:
    """The default `ForwardObserver`: ignores everything."""

    def forward(self, trees: int, tokens: int) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def kv_slots(self, used: int, free: int) -> None:
        pass


class PagedSession(SessionState):
    """A session whose cached tokens (committed[:-1]) live in slots of the shared pool."""

    def __init__(self, target: TargetModel, prompt_ids: list[int], sampling: SamplingParams,
                 max_tree_nodes: int, reserved: int, states: StateRequest | None = None):
        super().__init__(target, prompt_ids, sampling, max_tree_nodes, states)
        if self.state_layers is not None:
            self.prefill_states = HiddenStates.empty(len(self.state_layers), target.hidden_size, states.dtype)
        self.slots: list[int] = []  # pool slots of committed[:-1], in order
        # its trees' ancestor matrices, sliced from one pre-built matrix (it grows for larger trees)
        self.ancestors = AncestorRows(min(max_tree_nodes, DEFAULT_MAX_TREE_NODES))
        self.reserved = reserved
        self.closed = False
        self.busy = False  # a work item of this session is queued or running
        self.ready: Future = Future()  # resolved (to the session) once the prompt is prefilled

    @property
    def to_prefill(self) -> int:
        """Prompt tokens not in the pool yet."""
        return self.prefix_len - len(self.slots)


@dataclass
class _Work:
    session: PagedSession
    tree: DraftTree | None  # None: the next prefill chunk
    future: Future
    submitted: float


class BatchedVerifier:
    def __init__(self, target: TargetModel, max_batch_tokens: int = 512, max_kv_tokens: int = 1 << 16,
                 prefill_chunk_tokens: int = 256, batch_wait_ms: float = 10.0, cpus: list[int] | None = None,
                 observer: ForwardObserver | None = None, on_forward: Callable[[int, float], None] | None = None):
        """observer: told about every forward, queue wait and the pool's slots (on the loop thread).
        on_forward(tokens, seconds): called after each forward with its new tokens and its time (a
        cost model's input; on the loop thread, so it must return quickly)."""
        if max_batch_tokens < 1 or prefill_chunk_tokens < 1:
            raise ValueError("max_batch_tokens and prefill_chunk_tokens must be >= 1")
        self.target = target
        self.observer: ForwardObserver = observer or NoForwardObserver()
        self.on_forward = on_forward
        self.max_batch_tokens, self.prefill_chunk_tokens = max_batch_tokens, prefill_chunk_tokens
        self.batch_wait_s = batch_wait_ms / 1e3
        self._open: set[PagedSession] = set()
        self.pool = KVPool(max_kv_tokens, device=target.device)
        self.reserved = 0
        self.forwards = 0
        self.trees_verified = 0
        self._queue: deque[_Work] = deque()
        self._closing: list[PagedSession] = []
        self._cv = threading.Condition()
        self._stopped = False
        cpu_affinity.check(cpus)
        self._cpus = cpus  # the forward thread's CPUs (`core.cpus`); None: anywhere
        self._thread = threading.Thread(target=self._loop, name="verifier-batcher", daemon=True)
        self._thread.start()

    # --- called from any thread -----------------------------------------------------------
    @property
    def queued(self) -> int:
        """Work items waiting for a forward."""
        return len(self._queue)

    @property
    def mean_batch(self) -> float:
        """Trees per forward so far."""
        return self.trees_verified / max(1, self.forwards)

    def open(self, prompt_ids: list[int], sampling: SamplingParams, max_tree_nodes: int = DEFAULT_MAX_TREE_NODES,
             max_new_tokens: int = 0, states: StateRequest | None = None) -> PagedSession:
        """A new session; `session.ready` (a Future) resolves once its prompt is prefilled. Close
        it whatever happens (`close`), even before it is ready: that frees its reservation.
        `states`: the hidden states it gets with its prefill and verdicts (`SessionState`).

        Raises at once: `InvalidPromptError` for a bad prompt (empty, beyond the context, ids outside
        the vocabulary), `InvalidStateRequestError` for states the target does not have,
        `PoolFullError` when the pool cannot reserve room for it.
        """
        context = self.target.max_context
        length = min(context, len(prompt_ids) + max_new_tokens) if max_new_tokens > 0 else context
        reserve = length + max_tree_nodes
        with self._cv:
            session = PagedSession(self.target, prompt_ids, sampling, max_tree_nodes, reserve, states)
            if self.reserved + reserve > self.pool.max_tokens:
                unreserved = self.pool.max_tokens - self.reserved
                raise PoolFullError(f"the KV pool ({self.pool.max_tokens} tokens) has {unreserved} "
                                    f"unreserved; this session needs {reserve}")
            self.reserved += reserve
            self._open.add(session)
            if session.prefix_len == 0:  # a one-token prompt: nothing to prefill
                session.ready.set_result(session)
            else:
                session.ready = self._submit(session, None)
            return session

    def verify(self, session: PagedSession, tree: DraftTree) -> Future:
        """A future of the tree's Verdict. Raises InvalidTreeError at once for a tree that fails
        the session's checks; the session is then unchanged."""
        if session.closed:
            raise RuntimeError("the session is closed")
        if session.busy:
            raise RuntimeError("the session already has a tree in flight")
        session.check(tree)
        with self._cv:
            return self._submit(session, tree)

    def close(self, session: PagedSession) -> None:
        """Ends the session: drops its queued work, frees its slots and reservation. Idempotent.

        The reservation is returned here, at once, so a session opened right after this close
        (a client that cancels and retries) finds the room. Its slots are freed by the loop
        thread before that thread allocates for anyone else, so the pool still never holds more
        than the reservations allow."""
        with self._cv:
            if session.closed:
                return
            session.closed = True
            self._open.discard(session)
            self.reserved -= session.reserved
            session.reserved = 0
            self._closing.append(session)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=30)
        for work in list(self._queue):
            work.future.cancel()

    def _submit(self, session: PagedSession, tree: DraftTree | None) -> Future:
        future: Future = Future()
        session.busy = True
        self._queue.append(_Work(session, tree, future, time.perf_counter()))
        self._cv.notify()
        return future

    # --- the loop thread ------------------------------------------------------------------
    def _loop(self) -> None:
        cpu_affinity.pin(self._cpus)
        while True:
            with self._cv:
                while not (self._queue or self._closing or self._stopped):
                    self._cv.wait()
                if self._stopped:
                    return
                self._gather()
                closing, self._closing = self._closing, []
                for session in closing:
                    self.pool.free(session.slots)
                    session.slots = []
                batch = self._take()
            if batch:
                self._step(batch)
            if batch or closing:
                used = self.pool.used
                self.observer.kv_slots(used, self.pool.max_tokens - used)

    def _drafting(self) -> int:
        """Open, prefilled sessions with nothing queued: each is drafting its next tree."""
        return sum(1 for s in self._open if not s.busy and s.ready.done())

    def _gather(self) -> None:
        """Waits up to `batch_wait_s` for drafting sessions to send their trees, so they join this
        forward instead of the next (a dynamic batcher's queue delay). No wait when every open
        session is already queued, as with a single stream."""
        deadline = time.monotonic() + self.batch_wait_s
        while not (self._closing or self._stopped) and self._drafting():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(left)

    def _take(self) -> list[tuple[_Work, int]]:
        """(work, tokens) items for one forward: arrival order, within the token budget; the
        oldest always goes. A prefill longer than its chunk stays queued for the rest."""
        batch, budget, kept = [], self.max_batch_tokens, deque()
        while self._queue:
            work = self._queue.popleft()
            if work.session.closed:
                work.future.cancel()
                continue
            if work.tree is None:
                left = work.session.to_prefill
                n = min(left, self.prefill_chunk_tokens, budget if batch else left)
                if n < left:
                    kept.append(work)  # more chunks to come; it keeps its place
                if n <= 0:
                    continue
            else:
                n = work.tree.num_nodes
                if batch and n > budget:
                    kept.append(work)
                    continue
            batch.append((work, n))
            budget -= n
        self._queue.extendleft(reversed(kept))
        return batch

    def _step(self, batch: list[tuple[_Work, int]]) -> None:
        rows, tokens, positions, slots, keep_rows, placed, offsets = [], [], [], [], [], [], []
        started = time.perf_counter()
        trees = [(work, n) for work, n in batch if work.tree is not None]
        for work, _ in trees:
            self.observer.queue_wait(started - work.submitted)
        try:
            for work, n in batch:
                session = work.session
                if work.tree is not None:
                    new_tokens, parents = list(work.tree.tokens), list(work.tree.parents)
                    depth = [session.prefix_len + d for d in tree_depths(parents)]
                    keep_rows.extend(range(len(tokens), len(tokens) + n))
                    ancestors = session.ancestors.rows(parents)  # a view, read by this step's pool_mask
                else:
                    start = len(session.slots)
                    new_tokens = session.committed[start:start + n]
                    depth = list(range(start, start + n))
                    ancestors = torch.ones(n, n, dtype=torch.bool).tril()
                new_slots = self.pool.allocate(n)
                placed.append(new_slots)
                offsets.append(len(tokens))
                rows.append((session.slots, new_slots, ancestors))
                tokens += new_tokens
                positions += depth
                slots += new_slots
        except PoolFullError as err:  # reservations make this rare: fail the batch, keep sessions intact
            for new_slots in placed:
                self.pool.free(new_slots)
            for work, _ in batch:
                self._finish(work, error=err)
            return
        layers = sorted({i for work, _ in batch for i in (work.session.state_layers or ())})
        forward_start = time.perf_counter()
        try:
            logits, captured = self._forward(rows, tokens, positions, slots, keep_rows, tuple(layers))
        except BaseException as err:
            log.exception("batched forward failed")
            for new_slots in placed:
                self.pool.free(new_slots)
            for work, _ in batch:
                self._finish(work, error=err)
            return
        self.forwards += 1
        if self.on_forward is not None:
            self.on_forward(len(tokens), time.perf_counter() - forward_start)
        if trees:
            self.observer.forward(len(trees), sum(n for _, n in trees))
        row = 0
        for (work, n), new_slots, offset in zip(batch, placed, offsets):
            session = work.session
            hidden = None
            if session.state_layers is not None:
                hidden = stack_states(captured, session.state_layers)[offset:offset + n]
            if work.tree is None:
                session.slots.extend(new_slots)
                if hidden is not None:
                    session.pack_prefill(hidden)
                if not session.to_prefill:
                    self._finish(work, result=session)
                continue
            try:
                walk = session.walk(work.tree, logits[row:row + n])
            except BaseException as err:
                self.pool.free(new_slots)
                self._finish(work, error=err)
            else:
                kept = [0, *walk.accepted_nodes]  # the root and the accepted path
                self.pool.free([s for i, s in enumerate(new_slots) if i not in kept])
                session.slots.extend(new_slots[i] for i in kept)
                verdict = session.commit(work.tree, walk, hidden)
                self.trees_verified += 1
                self._finish(work, result=replace(verdict, verify_time_s=time.perf_counter() - work.submitted))
            row += n

    @torch.inference_mode()
    def _forward(self, rows, tokens, positions, slots, keep_rows,
                 layers: tuple[int, ...]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """One forward over the packed new tokens: logits [len(keep_rows), V] of the tree rows, and the
        hidden states of `layers` over every packed token ({layer: [tokens, H]}; empty: none asked)."""
        device, model = self.target.device, self.target.model
        extent = self.pool.extent
        mask = pool_mask(rows, extent, model.dtype).to(device)
        if not layers:
            captured: dict[int, torch.Tensor] = {}
            out = self._run(model, device, mask, tokens, positions, slots, extent, keep_rows)
        else:
            with captured_states(model, layers) as captured:
                out = self._run(model, device, mask, tokens, positions, slots, extent, keep_rows)
        return out.logits[0].float().cpu(), captured

    def _run(self, model, device, mask, tokens, positions, slots, extent, keep_rows):
        return model(input_ids=torch.tensor([tokens], dtype=torch.long, device=device),
                     position_ids=torch.tensor([positions], dtype=torch.long, device=device),
                     attention_mask=mask, past_key_values=StepCache(self.pool, slots, extent), use_cache=True,
                     logits_to_keep=torch.tensor(keep_rows, dtype=torch.long, device=device))

    def _finish(self, work: _Work, result=None, error: BaseException | None = None) -> None:
        work.session.busy = False
        try:
            if error is not None:
                work.future.set_exception(error)
            else:
                work.future.set_result(result)
        except InvalidStateError:  # cancelled by its caller (a stream that went away)
            pass
