"""The drafter's side of the verifier API: a pool of verifier replicas and a remote session.

`VerifierPool` knows the live verifier replicas through a `discover()` callable (in the Ray
Serve app: the verifier directory, `verifier_service.directory`; in tests: a fixed list), keeps
one gRPC channel per replica, and opens each session on the least loaded replica it knows of
(the load the replica last reported plus the sessions this pool opened since). It refreshes its
list on use: a session that opens on a list older than `refresh_s` asks its background thread
for a fresh one, so a pool in use follows replicas being added and removed within about
`refresh_s`, and an idle pool costs nothing (no discovery polling while no session opens). A
session that finds no live replica refreshes at once.

`RemoteSession` is the `drafter_service.generation.Verifier` the speculative loop drives: the
same `root`, `can_continue`, `max_draft_depth`, `max_tree_nodes` and `verify(tree)` as an
in-process `VerifierSession`, over one bidirectional stream, and `verify` split into `submit`
and `collect` so the loop can draft ahead while the verifier works. It tracks the committed tokens
itself. If its replica fails mid-stream (UNAVAILABLE, a broken stream, a replica that drains),
it reopens the session on another live replica with every committed token as the prompt, and
re-sends the tree: greedy output is unchanged, and sampled output keeps the target's exact
distribution (the new replica draws from a fresh seeded stream). A session that asked for hidden
states gets its whole prefix's again from the new replica (`resumed_states`; with `last_only`, the
prefix's last row); the re-sent tree's verdict carries its rows as any verdict does, so a drafter
reading states misses none. If no replica can take it
within `failover_timeout_s`, it raises `core.errors.ServiceError` with code UNAVAILABLE: retryable, never
a hang.

Errors the verifier reports about the request itself (INVALID_ARGUMENT, RESOURCE_EXHAUSTED on
every replica, DEADLINE_EXCEEDED) raise `core.errors.ServiceError` with that code and the verifier's message.
Messages are built and read through `core.verifier_codec` only.

This module knows nothing about how trees are drafted, or about Ray.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc
from pydantic import BaseModel, ConfigDict, Field

from core.contracts import DraftTree, SessionOpen, Verdict
from core.errors import Code, ServiceError
from core.sampling import SamplingParams
from core.states import HiddenStates, StateRequest
from core.tls import TlsFiles
from core.verifier_codec import (VerifierStub, close_request, open_request, opened_from_response, tree_request,
                                 verdict_from_response)

log = logging.getLogger(__name__)

FAILOVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
"""Codes that mean "this replica is gone or going": the session moves to another replica."""


@dataclass(frozen=True)
class ReplicaInfo:
    address: str
    active_sessions: int = 0
    replica: str = ""


class VerifierClientConfig(BaseModel):
    """How a drafter reaches the verifier replicas: the drafter's slice of the verifier settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    refresh_s: float = Field(1.0, gt=0, description="How often the replica list is discovered again.")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="The largest message sent or received.")
    failover_timeout_s: float = Field(60.0, gt=0, description="How long to look for a live replica before "
                                                              "failing a request as UNAVAILABLE.")
    tls: TlsFiles | None = Field(None, description="Dial the replicas over TLS with these files.")


class VerifierPool:
    @classmethod
    def from_config(cls, discover: Callable[[], list[ReplicaInfo]], config: VerifierClientConfig,
                    eager: bool = True) -> "VerifierPool":
        return cls(discover, refresh_s=config.refresh_s, max_message_bytes=config.max_message_bytes,
                   failover_timeout_s=config.failover_timeout_s, eager=eager, tls=config.tls)

    def __init__(self, discover: Callable[[], list[ReplicaInfo]], refresh_s: float = 1.0,
                 max_message_bytes: int = 1 << 20, failover_timeout_s: float = 60.0, quarantine_s: float = 10.0,
                 eager: bool = True, tls: TlsFiles | None = None):
        """eager: discover once now; otherwise the first discovery happens on the background thread
        (for callers on an event loop, where a blocking discovery is not allowed). tls: dial the
        replicas over TLS (`core.tls`)."""
        self._discover = discover
        self._credentials = tls.channel_credentials() if tls is not None else None
        self.refresh_s, self.failover_timeout_s, self.quarantine_s = refresh_s, failover_timeout_s, quarantine_s
        self._options = [("grpc.max_receive_message_length", max_message_bytes),
                         ("grpc.max_send_message_length", max_message_bytes)]
        self._lock = threading.Lock()
        self._replicas: list[ReplicaInfo] = []
        self._opened: dict[str, int] = {}  # sessions opened here since the last refresh, per address
        self._quarantined: dict[str, float] = {}  # address -> until (monotonic)
        self._channels: dict[str, grpc.Channel] = {}
        self._closed = threading.Event()
        self._wanted = threading.Event()  # a refresh is asked of the background thread
        self._refreshed_at = float("-inf")  # monotonic time of the last discovery
        self.refreshes = 0  # discoveries done, for tests and stats
        if eager:
            self.refresh()
        else:
            self._wanted.set()
        self._refresher = threading.Thread(target=self._refresh_loop, name="verifier-pool", daemon=True)
        self._refresher.start()

    @classmethod
    def static(cls, addresses: list[str], **kwargs) -> "VerifierPool":
        return cls(lambda: [ReplicaInfo(a) for a in addresses], **kwargs)

    def refresh(self) -> None:
        """Discovers the live replicas now (blocking)."""
        self._refreshed_at = time.monotonic()
        self.refreshes += 1
        try:
            replicas = list(self._discover())
        except Exception as err:  # discovery down: keep the last list
            log.warning("verifier discovery failed (%s); keeping %d known replicas", err, len(self._replicas))
            return
        with self._lock:
            self._replicas = replicas
            self._opened = {}
            live = {r.address for r in replicas}
            for address in [a for a in self._channels if a not in live]:
                self._channels.pop(address).close()

    def _refresh_loop(self) -> None:
        while True:
            self._wanted.wait()
            if self._closed.is_set():
                return
            self._wanted.clear()
            self.refresh()
            if self._closed.wait(self.refresh_s):  # at most one discovery per refresh_s
                return

    @property
    def replicas(self) -> list[ReplicaInfo]:
        with self._lock:
            return list(self._replicas)

    def pick(self, exclude: set[str] = frozenset()) -> str | None:
        """The least loaded live replica not excluded or quarantined; None if there is none.
        A list older than refresh_s is refreshed in the background for the next pick."""
        now = time.monotonic()
        if now - self._refreshed_at > self.refresh_s:
            self._wanted.set()
        with self._lock:
            candidates = [r for r in self._replicas
                          if r.address not in exclude and self._quarantined.get(r.address, 0) <= now]
            if not candidates:
                return None
            load = {r.address: r.active_sessions + self._opened.get(r.address, 0) for r in candidates}
            least = min(load.values())
            address = random.choice([a for a, n in load.items() if n == least])
            self._opened[address] = self._opened.get(address, 0) + 1
            return address

    def quarantine(self, address: str) -> None:
        """Skips a replica that failed until discovery has had time to drop it."""
        with self._lock:
            self._quarantined[address] = time.monotonic() + self.quarantine_s

    def stub(self, address: str) -> VerifierStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = (
                    grpc.secure_channel(address, self._credentials, options=self._options) if self._credentials
                    else grpc.insecure_channel(address, options=self._options))
            return VerifierStub(channel)

    def open(self, prompt_ids: list[int], sampling: SamplingParams, request_id: str = "",
             timeout_s: float | None = None, max_new_tokens: int = 0,
             states: StateRequest | None = None) -> "RemoteSession":
        return RemoteSession(self, prompt_ids, sampling, request_id, timeout_s, max_new_tokens, states)

    def close(self) -> None:
        self._closed.set()
        self._wanted.set()
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


_END = object()


class RemoteSession:
    """One generation's session on a remote verifier, with failover (see the module docstring)."""

    def __init__(self, pool: VerifierPool, prompt_ids: list[int], sampling: SamplingParams, request_id: str = "",
                 timeout_s: float | None = None, max_new_tokens: int = 0, states: StateRequest | None = None):
        """max_new_tokens: what the generation may add (0: unknown), so the verifier reserves no
        more KV room than it needs. states: the hidden states to ask for (`core.states`): the
        prefill's arrive in `prefill_states`, each verdict's in `Verdict.states`."""
        self.pool, self.sampling, self.request_id = pool, sampling, request_id
        self.state_request = states
        self.prefill_states: HiddenStates | None = None  # the first opening's
        # the last failover's: every committed token but the root (with `last_only`, the last of them)
        self.resumed_states: HiddenStates | None = None
        self.end = len(prompt_ids) + max_new_tokens if max_new_tokens > 0 else None
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.committed: list[int] = list(prompt_ids)
        self.failovers = 0
        self.replica = ""
        self.address: str | None = None
        self.prefill_time_s = 0.0
        self._call = None
        self._requests: queue.SimpleQueue | None = None
        self._pending = None  # the last tree sent, to re-send after a failover
        self._connect(exclude=set())

    # --- the Verifier protocol -------------------------------------------------------------
    @property
    def root(self) -> int:
        return self.committed[-1]

    @property
    def prefix_len(self) -> int:
        return len(self.committed) - 1

    @property
    def can_continue(self) -> bool:
        return self.prefix_len < self.max_context

    @property
    def max_draft_depth(self) -> int:
        return max(0, self.max_context - 1 - self.prefix_len)

    def verify(self, tree: DraftTree) -> Verdict:
        self.submit(tree)
        return self.collect()

    def submit(self, tree: DraftTree) -> None:
        """Sends a tree; `collect` waits for its verdict. Between the two the caller may work."""
        self._pending = tree_request(tree)
        self._requests.put(self._pending)

    def collect(self) -> Verdict:
        """The verdict of the tree `submit` sent (re-sent to another replica on a failover)."""
        while True:
            try:
                verdict, budget = verdict_from_response(next(self._call))
                if budget:  # the verifier's budget for the next tree, from its load
                    self.max_tree_nodes = budget
                break
            except (grpc.RpcError, StopIteration) as err:
                self._failover(err)
                self._requests.put(self._pending)
        self.committed.extend(verdict.emitted_tokens)
        return verdict

    def close(self) -> None:
        """Ends the stream; the verifier frees the session at once. Idempotent."""
        if self._requests is not None:
            self._requests.put(close_request())
            self._requests.put(_END)
            self._requests = None
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- connection and failover -------------------------------------------------------------
    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ServiceError(Code.DEADLINE_EXCEEDED, "the request's deadline passed")
        return left

    def _connect(self, exclude: set[str]) -> None:
        """Opens the session on a replica; tries others while replicas fail, up to the failover timeout."""
        give_up = time.monotonic() + self.pool.failover_timeout_s
        last_error = "no verifier replica is known"
        tried = set(exclude)
        while True:
            address = self.pool.pick(tried)
            if address is None:
                if time.monotonic() >= give_up:
                    raise ServiceError(Code.UNAVAILABLE,
                                        f"no verifier replica could take the session ({last_error}); retry later")
                time.sleep(min(0.5, self.pool.refresh_s))
                self.pool.refresh()
                tried = set()  # a replica that failed may have come back; quarantine still applies
                continue
            requests: queue.SimpleQueue = queue.SimpleQueue()
            requests.put(open_request(SessionOpen(
                tuple(self.committed), self.sampling,
                max_new_tokens=0 if self.end is None else max(1, self.end - len(self.committed)),
                request_id=self.request_id, states=self.state_request)))
            call = self.pool.stub(address).Session(iter(requests.get, _END), timeout=self._remaining())
            try:
                opened = opened_from_response(next(call))
            except (grpc.RpcError, StopIteration) as err:
                requests.put(_END)
                code, details = _status(err)
                if code in FAILOVER_CODES or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        self.pool.quarantine(address)
                    tried.add(address)
                    last_error = f"{address}: {code.name} {details}"
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and not self._others_left(tried):
                        raise ServiceError(Code.of(code), details) from None
                    continue
                raise ServiceError(Code.of(code), details) from None
            self._call, self._requests, self.address = call, requests, address
            self.replica, self.max_context = opened.replica, opened.max_context
            self.max_tree_nodes = opened.max_tree_nodes
            self.eos_token_ids = opened.eos_token_ids
            self.prefill_time_s += opened.prefill_time_s
            if self.failovers:
                self.resumed_states = opened.states
            else:
                self.prefill_states = opened.states
            return

    def _others_left(self, tried: set[str]) -> bool:
        return any(r.address not in tried for r in self.pool.replicas)

    def _failover(self, err: BaseException) -> None:
        code, details = _status(err)
        if code not in FAILOVER_CODES or self._call is None:
            if self._requests is not None:
                self._requests.put(_END)
            self._requests, self._call = None, None
            raise ServiceError(Code.of(code), details) from None
        log.warning("verifier %s failed mid-stream (%s: %s); resuming on another replica",
                    self.address, code.name, details)
        self.pool.quarantine(self.address)
        failed = self.address
        self._requests.put(_END)
        self._call.cancel()
        self.failovers += 1
        self._connect(exclude={failed})


def _status(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """A failed call's code and message; a stream that just ended counts as UNAVAILABLE."""
    if isinstance(err, grpc.RpcError):
        return err.code(), err.details()
    return grpc.StatusCode.UNAVAILABLE, "the stream ended"
