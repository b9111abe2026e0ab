"""The verifier's gRPC server: one bidirectional stream per generation, on its own grpc.aio server.

`VerifierServer` runs a `grpc.aio` server on a thread of its own (its own event loop), so it works
the same inside a Ray Serve replica and in a plain process. Per-round traffic reaches it over a
direct channel, not through a Serve handle or proxy, which would add a hop to every round.
Messages are built and read through `core.verifier_codec` only.

One stream is one session (`verifier_service.session.VerifierSession`): the first message opens
it (prompt ids and sampling; the prompt is prefilled), then each tree gets one verdict, in order.
A session that asks for hidden states gets them with its opening and each verdict
(`core.states`; with `last_only`, one row each); others get none.
The session lives exactly as long as its stream: a close message, a half-close, a client
cancellation, a broken connection, an expired deadline or `idle_timeout_s` without a message end
the handler, and its `finally` frees the session at once.

Each verdict also carries the node budget of its session's next tree (`tree_budget`): the open
sessions share `step_tokens` evenly, or by each one's predicted acceptance (`split="weighted"`,
`verifier_service.split`, whose estimates the server keeps per open session).

Target forwards run off the event loop, so it stays free to accept, cancel and answer health
checks while a forward runs. With `batching` (the default) they run on the continuous batcher's
thread (`verifier_service.batching`): concurrent sessions' trees share one forward. Without it,
each session verifies on its own `VerifierSession`, one forward at a time on one worker thread
(the baseline the scale benchmark compares against).

Every expected failure is a `core.errors.ServiceError` (`InvalidPromptError`, `InvalidTreeError`,
`PoolFullError`, ...), whoever raises it; `VerifierServicer.Session` alone turns it into the
stream's status (`core.errors.grpc_status`) and message. Any other exception is a bug: it is
logged and answered INTERNAL, never as the caller's fault. The statuses:
- INVALID_ARGUMENT: a bad prompt (empty, beyond the context, ids outside the vocabulary), bad
  sampling values, a malformed or invalid tree, hidden states of a layer the target does not
  have or in a dtype it does not offer;
- RESOURCE_EXHAUSTED: `max_sessions` streams stayed open for `admission_wait_s` after a new one
  asked (it carries a `retry-after-ms` hint), a message exceeds `max_message_bytes` (the hidden
  states a session asked for included), or the KV pool (`max_kv_tokens`) cannot reserve room
  for a new session;
- FAILED_PRECONDITION: messages out of order (a tree before the session is open, two opens);
- UNAVAILABLE: the server is draining (being removed);
- DEADLINE_EXCEEDED: the client's deadline passed (gRPC's own), or no message came for
  `idle_timeout_s`;
- INTERNAL: a bug in the verifier.
The gRPC health protocol (grpc.health.v1) reports SERVING, or NOT_SERVING while draining.

A session's log lines carry its request's id (`core.logs.request_scope`, entered once the opening
message is read): one "session opened" and one "session closed" line per session. What the server
does is reported to a `VerifierObserver` (open sessions, refused sessions by reason, and the
forwards, queue waits and KV slots of `verifier_service.batching.ForwardObserver`); the default
observer does nothing, so in-process use pays nothing. The Serve deployment passes one that
records Ray metrics (`verifier_service.metrics`).

This module knows nothing about drafters, routing or Ray.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic import BaseModel, ConfigDict, Field

from core import cpus as cpu_affinity
from core.contracts import SessionOpen, SessionOpened
from core.states import HiddenStates, StateRequest
from core.errors import Code, ServiceError, grpc_status
from core.logs import request_scope
from core.tls import TlsFiles
from core.verifier_codec import (CLOSE, OPEN, TREE, SessionRequest, add_VerifierServicer_to_server,
                                 open_from_request, opened_response, request_kind, tree_from_request,
                                 verdict_response)
from core.verifier_codec import VerifierServicer as VerifierServicerBase
from verifier_service.batching import BatchedVerifier, ForwardObserver, NoForwardObserver
from verifier_service.kv_pool import PoolFullError
from verifier_service.session import DEFAULT_MAX_TREE_NODES, VerifierSession
from verifier_service.split import (AcceptanceEstimate, ForwardCost, ForwardCostFit, Split, allocate, even_budget,
                                    tree_depth)
from verifier_service.target import TargetModel

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = "specroute.v1.Verifier"
STATES_HEADROOM_BYTES = 4096
"""Room left in a message for its other fields when hidden states fill most of it."""
RETRY_AFTER_MS = 100
"""The back-off a RESOURCE_EXHAUSTED answer suggests (a session usually frees within it)."""


class VerifierServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 on a cluster.")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    advertise_host: str | None = Field(None, description="Host that drafters dial; default: host, or this "
                                                         "machine's address when host is 0.0.0.0.")
    max_sessions: int = Field(16, ge=1, description="Open streams at once; beyond it, RESOURCE_EXHAUSTED.")
    max_tree_nodes: int = Field(DEFAULT_MAX_TREE_NODES, ge=1, description="Most nodes a tree may have, root included.")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="Larger messages get RESOURCE_EXHAUSTED.")
    idle_timeout_s: float = Field(60.0, gt=0, description="A session with no message for this long is closed.")
    batching: bool = Field(True, description="Verify concurrent sessions' trees in one forward (continuous batching).")
    max_batch_tokens: int = Field(512, ge=1,
                                  description="Most new tokens (tree nodes, prefill) in one batched forward.")
    prefill_chunk_tokens: int = Field(256, ge=1, description="Prompts are prefilled in chunks of at most this many "
                                                             "tokens, so running sessions keep their pace.")
    max_kv_tokens: int | None = Field(None, ge=1, description="Tokens the batched KV pool may hold; default "
                                                              "max_sessions x (context + max_tree_nodes).")
    batch_wait_ms: float = Field(10.0, ge=0, description="A batched forward waits up to this long for sessions "
                                                         "that are drafting to send their trees.")
    step_tokens: int | None = Field(128, ge=1, description="Under load, each verdict gives its session a node budget "
                                                           "for the next tree, the open sessions sharing step_tokens "
                                                           "as `split` says, so a forward stays near this many tokens; "
                                                           "None: only max_tree_nodes bounds trees.")
    min_tree_nodes: int = Field(4, ge=1, description="The smallest node budget a verdict gives (even split).")
    split: Split = Field("even", description="How open sessions share step_tokens (`verifier_service.split`): "
                                             "`even`, or `weighted` by each session's predicted acceptance, "
                                             "a session whose next node does not pay for its verify cost "
                                             "getting a root-only tree (plain decoding).")
    forward_base_ms: float = Field(20.0, ge=0, description="Weighted split: the fixed time of one batched forward "
                                                           "(a in a + b * tokens), until measured forwards replace it.")
    forward_per_token_ms: float = Field(0.25, ge=0, description="Weighted split: a batched forward's time per tree "
                                                                "token (b in a + b * tokens), until measured.")
    tls: TlsFiles | None = Field(None, description="Serve the drafter-verifier channel over TLS (mutual TLS with "
                                                   "`ca`); drafters then dial with the same files.")
    admission_wait_s: float = Field(0.5, ge=0, description="At the session limit, a new session waits this long for "
                                                           "one to close before RESOURCE_EXHAUSTED (a client that "
                                                           "cancels and retries gets the room its dead session frees).")


class VerifierObserver(ForwardObserver, Protocol):
    """What the verifier server reports (a metrics sink; every method must return quickly)."""

    def sessions_open(self, sessions: int) -> None:
        """Sessions now open on this server."""

    def session_refused(self, reason: str) -> None:
        """A session was refused before it opened (reason: one of REFUSAL_REASONS' values)."""


class NoObserver(NoForwardObserver):
    """The default `VerifierObserver`: ignores everything."""

    def sessions_open(self, sessions: int) -> None:
        pass

    def session_refused(self, reason: str) -> None:
        pass


DRAINING, SESSION_LIMIT, POOL_FULL, INVALID = "draining", "session_limit", "pool_full", "invalid"
REFUSAL_REASONS = {Code.UNAVAILABLE: DRAINING, Code.INVALID_ARGUMENT: INVALID, Code.FAILED_PRECONDITION: INVALID,
                   Code.DEADLINE_EXCEEDED: "idle"}
"""A refused session's reason, by the code it was refused with (RESOURCE_EXHAUSTED: `refusal_reason`)."""


def refusal_reason(err: ServiceError) -> str:
    """The reason a session refused with `err` is counted under."""
    if isinstance(err, PoolFullError):
        return POOL_FULL
    if err.code is Code.RESOURCE_EXHAUSTED:
        return SESSION_LIMIT
    return REFUSAL_REASONS.get(err.code, err.code.name.lower())


class _Unbatched:
    """One `VerifierSession` per stream; forwards one at a time on one worker thread."""

    def __init__(self, target: TargetModel, config: VerifierServerConfig, cpus: list[int] | None = None,
                 observer: VerifierObserver | None = None):
        self.target, self.config = target, config
        self.observer = observer or NoObserver()
        self._forward = ThreadPoolExecutor(1, thread_name_prefix="verifier-forward", initializer=cpu_affinity.pin,
                                           initargs=(cpus,))

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._forward, fn, *args)

    async def open(self, prompt_ids: list[int], sampling, max_new_tokens: int, states: StateRequest | None = None):
        return await self._run(VerifierSession, self.target, prompt_ids, sampling, self.config.max_tree_nodes, states)

    async def verify(self, session, tree):
        submitted = time.perf_counter()

        def verify():
            self.observer.queue_wait(time.perf_counter() - submitted)
            verdict = session.verify(tree)
            self.observer.forward(1, tree.num_nodes)
            return verdict
        return await self._run(verify)

    def close(self, session) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {}

    def kv_slots(self) -> tuple[int, int]:
        return 0, 0

    def stop(self) -> None:
        self._forward.shutdown(wait=False, cancel_futures=True)


class _Batched:
    """Sessions in one KV pool; their trees share forwards (`verifier_service.batching`)."""

    def __init__(self, target: TargetModel, config: VerifierServerConfig, cpus: list[int] | None = None,
                 observer: VerifierObserver | None = None, on_forward=None):
        max_kv = config.max_kv_tokens or config.max_sessions * (target.max_context + config.max_tree_nodes)
        self.config = config
        self.batcher = BatchedVerifier(target, config.max_batch_tokens, max_kv, config.prefill_chunk_tokens,
                                       config.batch_wait_ms, cpus=cpus, observer=observer, on_forward=on_forward)

    async def open(self, prompt_ids: list[int], sampling, max_new_tokens: int, states: StateRequest | None = None):
        session = self.batcher.open(prompt_ids, sampling, self.config.max_tree_nodes, max_new_tokens, states)
        try:
            return await asyncio.wrap_future(session.ready)
        except BaseException:  # cancelled or failed while prefilling: free its room now
            self.batcher.close(session)
            raise

    async def verify(self, session, tree):
        return await asyncio.wrap_future(self.batcher.verify(session, tree))

    def close(self, session) -> None:
        self.batcher.close(session)

    def stats(self) -> dict[str, float]:
        return {"forwards": self.batcher.forwards, "trees": self.batcher.trees_verified}

    def kv_slots(self) -> tuple[int, int]:
        """(used, free) slots of the pool (read from another thread: a snapshot, maybe a step old)."""
        pool = self.batcher.pool
        used = pool.used
        return used, pool.max_tokens - used

    def stop(self) -> None:
        self.batcher.stop()


class VerifierServicer(VerifierServicerBase):
    def __init__(self, target: TargetModel, config: VerifierServerConfig, replica: str,
                 cpus: list[int] | None = None, observer: VerifierObserver | None = None):
        self.target, self.config, self.replica = target, config, replica
        self.observer: VerifierObserver = observer or NoObserver()
        self.active_sessions = 0
        self.sessions_served = 0
        self.waiting = 0  # opens and trees waiting for a forward: the autoscaler's queue signal
        self.draining = False
        # The weighted split's bookkeeping, on the server's loop: each open session's acceptance
        # estimate (by a key of its own), and the forward cost (the config's until batched forwards of
        # different sizes are observed).
        self.estimates: dict[int, AcceptanceEstimate] = {}
        self.forward_cost = ForwardCostFit(ForwardCost(config.forward_base_ms, config.forward_per_token_ms))
        self._keys = itertools.count()
        if config.batching:
            self.backend = _Batched(target, config, cpus, self.observer, on_forward=self.observe_forward)
        else:
            self.backend = _Unbatched(target, config, cpus, self.observer)
        self._closed = asyncio.Event()  # set (then cleared) whenever a session closes; on the server's loop

    async def _admit(self) -> None:
        """Takes a session slot, waiting up to admission_wait_s for one to free; else raises
        RESOURCE_EXHAUSTED with a retry-after hint."""
        deadline = time.monotonic() + self.config.admission_wait_s
        while self.active_sessions >= self.config.max_sessions:
            left = deadline - time.monotonic()
            if left <= 0:
                self.observer.session_refused(SESSION_LIMIT)
                raise ServiceError(Code.RESOURCE_EXHAUSTED,
                                   f"verifier {self.replica} has {self.active_sessions} sessions open, its limit; "
                                   f"retry after {RETRY_AFTER_MS} ms", retry_after_s=RETRY_AFTER_MS / 1e3)
            try:
                async with asyncio.timeout(left):
                    await self._closed.wait()
            except TimeoutError:
                pass
        self.active_sessions += 1
        self.observer.sessions_open(self.active_sessions)

    def _release(self) -> None:
        self.active_sessions -= 1
        self.observer.sessions_open(self.active_sessions)
        self._closed.set()
        self._closed.clear()  # waiters already woken see the set; later waiters wait for the next close

    def report_gauges(self) -> None:
        """Sets the observer's gauges (open sessions, KV slots) to their current values; any thread."""
        self.observer.sessions_open(self.active_sessions)
        self.observer.kv_slots(*self.backend.kv_slots())

    def stats(self) -> dict[str, float]:
        """Counters since start: sessions served, forwards and trees verified (batched mode)."""
        return {"sessions_served": self.sessions_served, "waiting": self.waiting, **self.backend.stats()}

    def tree_budget(self, key: int | None = None) -> int:
        """Nodes the next tree of the session `key` may have: the open sessions share `step_tokens`
        (`verifier_service.split`).

        Verification compute is what concurrent sessions share, and most drafted nodes are
        rejected: under load, smaller trees buy more accepted tokens per forward (goodput-driven
        speculation length, Liu et al. 2024, "Optimizing Speculative Decoding for Serving Large
        Language Models Using Goodput"). With the `even` split each session gets step_tokens /
        open sessions (at least min_tree_nodes); one session alone keeps the whole max_tree_nodes.
        With `weighted`, the nodes go to the sessions whose next nodes are most likely to be
        accepted, while a node pays for its verify cost (`split.allocate`, DSpark's scheduler): under
        heavy load that is a root-only tree, plain decoding. Either way the budget bounds the next
        tree before it is drafted and never depends on drawn values: greedy output is unchanged and
        sampling stays lossless. key: the session's (None, or one without an estimate: the even split).
        A session's first tree is budgeted the same way when it opens, with its estimate at the neutral
        prior (`split.PRIOR_ALPHA`), so a new session does not take max_tree_nodes from a loaded step."""
        config = self.config
        if config.split == "weighted" and key in self.estimates:
            step = config.step_tokens or config.max_tree_nodes * len(self.estimates)
            alphas = {k: estimate.alpha for k, estimate in self.estimates.items()}
            return allocate(alphas, step, config.max_tree_nodes, self.forward_cost.cost())[key]
        if config.step_tokens is None:
            return config.max_tree_nodes
        return even_budget(self.active_sessions, config.step_tokens, config.min_tree_nodes, config.max_tree_nodes)

    def observe_forward(self, tokens: int, seconds: float) -> None:
        """One batched forward over `tokens` new tokens took `seconds`: the weighted split's cost
        model learns from it (any thread; a few float updates)."""
        self.forward_cost.observe(tokens, seconds)

    async def Session(self, request_iterator, context):
        """One stream, one session. Every expected failure is a ServiceError, answered with its
        status here and only here; anything else is a bug: logged, and answered INTERNAL."""
        # A coroutine that writes, not an async generator that yields: cancelling a generator
        # handler while gRPC writes its last response leaves it suspended at the `yield`, so its
        # `finally` (which frees the session and its KV slots) waits for the garbage collector
        # (grpc/grpc#42295). Here cancellation raises inside this coroutine, wherever it waits.
        try:
            await self._serve(aiter(request_iterator), context)
        except ServiceError as err:
            await _abort(context, err)
        except grpc.aio.BaseError:  # gRPC's own (an abort, a transport failure): it has its status
            raise
        except Exception:
            log.exception("verifier %s: a session failed", self.replica)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"verifier {self.replica} failed while serving the session (a bug; see its log)")

    async def _serve(self, requests, context) -> None:
        """Admission, the opening, then one verdict per tree until the stream ends; the session and
        its slot are freed however it ends."""
        if self.draining:
            self.observer.session_refused(DRAINING)
            raise ServiceError(Code.UNAVAILABLE, f"verifier {self.replica} is draining; retry elsewhere")
        await self._admit()
        try:
            try:
                opening = await self._receive_open(requests)
            except ServiceError as err:
                self.observer.session_refused(refusal_reason(err))
                raise
            if opening is None:
                return
            with request_scope(opening.request_id):
                await self._session(opening, requests, context)
        finally:
            self._release()

    async def _session(self, opening: SessionOpen, requests, context) -> None:
        """Opens the session (the prompt's prefill), then verifies its trees; logs its opening and
        its end, and closes it however it ends."""
        start = time.perf_counter()
        try:
            session = await self._counted(self.backend.open(list(opening.prompt_ids), opening.sampling,
                                                            opening.max_new_tokens, opening.states))
        except ServiceError as err:
            self.observer.session_refused(refusal_reason(err))
            log.info("session refused: %s %s", err.code.name, err.message)
            raise
        mode = "batched" if self.config.batching else "unbatched"
        log.info("session opened: %d prompt tokens, %s, max_new_tokens %d", len(opening.prompt_ids), mode,
                 opening.max_new_tokens)
        reason = "error"
        key = next(self._keys)
        self.estimates[key] = AcceptanceEstimate()
        try:
            self.sessions_served += 1
            self._check_size(session.prefill_states)
            await context.write(opened_response(SessionOpened(  # the first tree's budget is split like the rest
                self.target.max_context, self.tree_budget(key), frozenset(self.target.eos_token_ids),
                time.perf_counter() - start, self.replica, session.prefill_states)))
            reason = await self._verify_trees(session, requests, context, key)
        except ServiceError as err:
            reason = err.code.name
            raise
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as err:  # gRPC's own (a broken stream) or a bug (`Session` logs it)
            reason = type(err).__name__
            raise
        finally:
            self.estimates.pop(key, None)
            self.backend.close(session)
            log.info("session closed: %d rounds, %d tokens committed, %s", session.rounds,
                     len(session.committed) - len(opening.prompt_ids), reason)

    async def _receive_open(self, requests) -> SessionOpen | None:
        """The first message, which must open the session; None if the stream ends first."""
        first = await self._next(requests)
        if first is None:
            return None
        if request_kind(first) != OPEN:
            raise ServiceError(Code.FAILED_PRECONDITION, "the first message of a session must be `open`")
        return open_from_request(first)

    async def _verify_trees(self, session, requests, context, key: int) -> str:
        """Answers each tree with its verdict, in order, until a close or a half-close (returns
        which) or an error; each verdict updates the session's acceptance estimate (key: its
        key in `estimates`) before its next tree's budget is set."""
        while True:
            message = await self._next(requests)
            kind = None if message is None else request_kind(message)
            if kind in (None, CLOSE):
                return "half-closed" if kind is None else "closed"
            if kind != TREE:
                raise ServiceError(Code.FAILED_PRECONDITION,
                                   f"a session is open: expected `tree` or `close`, got `{kind}`")
            tree = tree_from_request(message)
            verdict = await self._counted(self.backend.verify(session, tree))
            self._check_size(verdict.states)
            self.estimates[key].update(tree_depth(tree.parents), verdict.num_accepted)
            await context.write(verdict_response(verdict, self.tree_budget(key)))

    def _check_size(self, states: HiddenStates | None) -> None:
        """Hidden states count against the message-size limit: RESOURCE_EXHAUSTED, naming it, before
        gRPC would fail the send with a less helpful message."""
        limit = self.config.max_message_bytes
        if states is not None and states.nbytes > limit - STATES_HEADROOM_BYTES:
            raise ServiceError(Code.RESOURCE_EXHAUSTED,
                               f"the hidden states of {states.rows} positions take {states.nbytes} bytes; messages "
                               f"are limited to {limit} (ask for fewer layers, a smaller dtype or a shorter prompt)")

    async def _next(self, requests) -> SessionRequest | None:
        """The next message; None when the stream ends. DEADLINE_EXCEEDED after idle_timeout_s."""
        try:
            # asyncio.timeout, not wait_for: no task per message on the per-round path.
            async with asyncio.timeout(self.config.idle_timeout_s):
                return await anext(requests)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise ServiceError(Code.DEADLINE_EXCEEDED,
                               f"no message for {self.config.idle_timeout_s:g} s: the session is closed") from None

    async def _counted(self, work: Awaitable[T]) -> T:
        """Awaits work for a forward (an open's prefill, a tree), counted in `waiting` meanwhile."""
        self.waiting += 1
        try:
            return await work
        finally:
            self.waiting -= 1


async def _abort(context, err: ServiceError) -> None:
    """Ends the stream with the error's gRPC status and message (and a retry-after-ms hint in the
    trailing metadata when the error carries one)."""
    if err.retry_after_s is not None:
        context.set_trailing_metadata((("retry-after-ms", str(round(err.retry_after_s * 1e3))),))
    await context.abort(grpc_status(err.code), err.message)


class VerifierServer:
    """A VerifierServicer on a grpc.aio server, on a thread and event loop of its own."""

    def __init__(self, target: TargetModel, config: VerifierServerConfig = VerifierServerConfig(),
                 replica: str = "verifier", cpus: list[int] | None = None, observer: VerifierObserver | None = None):
        """cpus: the CPUs the forward thread runs on (`core.cpus`; None: anywhere). observer: told
        what the server does (None: nothing is recorded)."""
        cpu_affinity.check(cpus, "verifier.deployment.cpus")
        self.config = config
        self.servicer = VerifierServicer(target, config, replica, cpus, observer)
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="verifier-grpc", daemon=True)

    @property
    def address(self) -> str:
        host = self.config.advertise_host or self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = _node_ip()
        return f"{host}:{self.port}"

    @property
    def active_sessions(self) -> int:
        return self.servicer.active_sessions

    def start(self) -> "VerifierServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        log.info("verifier %s serving on %s", self.servicer.replica, self.address)
        return self

    async def _start(self) -> None:
        size = self.config.max_message_bytes
        self._server = grpc.aio.server(options=[("grpc.max_receive_message_length", size),
                                                ("grpc.max_send_message_length", size)])
        add_VerifierServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = f"{self.config.host}:{self.config.port}"
        self.port = (self._server.add_secure_port(address, self.config.tls.server_credentials()) if self.config.tls
                     else self._server.add_insecure_port(address))
        if not self.port:
            raise RuntimeError(f"could not bind {self.config.host}:{self.config.port}")
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def drain(self) -> None:
        """Refuses new sessions (UNAVAILABLE) and reports NOT_SERVING; open sessions continue."""
        self.servicer.draining = True

        async def _not_serving():
            for service in ("", SERVICE_NAME):
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_not_serving(), self._loop).result(timeout=5)

    def stop(self, grace_s: float = 5.0) -> None:
        """Drains, lets open sessions finish for up to grace_s, then closes everything."""
        if self._server is None or not self._thread.is_alive():
            return
        self.drain()
        asyncio.run_coroutine_threadsafe(self._server.stop(grace_s), self._loop).result(timeout=grace_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.servicer.backend.stop()


def _node_ip() -> str:
    return socket.gethostbyname(socket.gethostname())
