"""The router's request handling, with no transport: validate, route, stream, record.

`RouterFrontend` is what both front doors of the ingress share (gRPC through Ray Serve's proxy,
and the OpenAI-compatible HTTP endpoint): it checks a request at the edge and turns it into a
`GenerationRequest` for the drafter the router (`router.router`) picks, streams that drafter's
chunks with per-request metadata (task, drafter, confidence, tau, rounds, timings), and records
the finished request in Redis. Every problem with a request raises `RequestError` with a gRPC
status name and a message that names the problem:
- INVALID_ARGUMENT: an empty or oversized prompt, max_new_tokens outside [1, limit], a
  temperature < 0, a top_p outside (0, 1], a top_k < 0, a seed outside [-2^63, 2^64), too many
  or too long stop strings, text that is not valid Unicode (a lone surrogate), a task, drafter
  or request id over `max_name_bytes`, an unknown task or drafter, a prompt beyond the target's
  context (reported by the verifier);
- UNAUTHENTICATED: api keys are configured and the request has none of them;
- UNAVAILABLE (retryable): the drafter replica or every verifier replica failed;
- RESOURCE_EXHAUSTED: the caller's key is over its rate or its open streams (`router.quota`),
  with how long to back off; and as the verifier reports it;
- DEADLINE_EXCEEDED: as the verifier reports it.

Drafters are reached through `drafter_stream(name, request)`, an async iterator of `ChunkOut`
(a Serve handle in the app, anything in tests). This module knows nothing about gRPC messages,
HTTP or Ray.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from drafter_service.contracts import ChunkOut, GenerationRequest
from router.quota import KeyQuota, QuotaExceeded
from router.router import RouteDecision, Router
from core.sampling import checked_sampling

log = logging.getLogger("specroute.router")

RETRYABLE = ("UNAVAILABLE",)


class RequestError(Exception):
    """A request that cannot be served. `code` is a grpc.StatusCode name; `retry_after_s`, for
    RESOURCE_EXHAUSTED, how long the caller should back off."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s

    def __reduce__(self):  # Ray pickles exceptions raised in replicas
        return RequestError, (self.code, self.message, self.retry_after_s)


@dataclass(frozen=True)
class GenerateParams:
    """A generation request as it arrives, before validation (both transports build one)."""

    prompt: str
    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    task: str | None = None
    drafter: str | None = None
    request_id: str = ""
    stream: bool = True  # False: one chunk at the end (a non-streaming call)


@dataclass(frozen=True)
class Limits:
    default_max_new_tokens: int = 64
    max_new_tokens_limit: int = 1024
    max_prompt_bytes: int = 64 * 1024
    max_stop_strings: int = 8
    request_timeout_s: float = 300.0
    api_keys: tuple[str, ...] = ()
    max_stop_bytes: int = 256
    max_name_bytes: int = 256  # a task, drafter or model name, a request id


def checked_text(field: str, value: str, max_bytes: int) -> str:
    """`value` if it is UTF-8-encodable text of at most max_bytes; RequestError otherwise."""
    if not isinstance(value, str):
        raise RequestError("INVALID_ARGUMENT", f"{field}: must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RequestError("INVALID_ARGUMENT", f"{field}: not valid Unicode text (a lone UTF-16 surrogate?)") from None
    if size > max_bytes:
        raise RequestError("INVALID_ARGUMENT", f"{field}: {size} bytes; the limit is {max_bytes}")
    return value


@dataclass
class Progress:
    """What the frontend knows about a request as it streams: routing, then the figures."""

    request_id: str
    decision: RouteDecision
    start: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    stats: dict | None = None
    verifier_replica: str = ""

    def metadata(self) -> dict:
        m = {"request_id": self.request_id, "task": self.decision.task or "", "drafter": self.decision.drafter,
             "confidence": self.decision.confidence, "route_source": self.decision.source,
             "verifier_replica": self.verifier_replica}
        if self.first_token_s is not None:
            m["time_to_first_token_ms"] = self.first_token_s * 1e3
        if self.stats is not None:
            s = self.stats
            decode_s = s["wall_time_s"]
            m.update(tau=s["tau"], rounds=s["rounds"], num_drafted=s["num_drafted"], num_accepted=s["num_accepted"],
                     num_generated=s["num_generated"], prompt_tokens=s["prompt_tokens"],
                     prefill_ms=s["prefill_time_s"] * 1e3, draft_ms=s["draft_time_s"] * 1e3,
                     verify_ms=s["verify_time_s"] * 1e3, total_ms=(time.perf_counter() - self.start) * 1e3,
                     rounds_drafted_ahead=s.get("rounds_drafted_ahead", 0),
                     tokens_per_s=s["num_generated"] / decode_s if decode_s > 0 else 0.0)
        return m


class RouterFrontend:
    def __init__(self, router: Router, drafter_stream: Callable[[str, GenerationRequest], AsyncIterator[ChunkOut]],
                 limits: Limits = Limits(), quota: KeyQuota | None = None):
        self.router, self.drafter_stream, self.limits = router, drafter_stream, limits
        self.quota = quota or KeyQuota()

    def authorize(self, metadata: dict[str, str]) -> str:
        """The caller's API key ("" when no keys are configured); UNAUTHENTICATED if it has none."""
        if not self.limits.api_keys:
            return ""
        auth = metadata.get("authorization", "")
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else metadata.get("x-api-key", "")
        if not any(hmac.compare_digest(key.encode(), known.encode()) for known in self.limits.api_keys):
            raise RequestError("UNAUTHENTICATED", "a valid API key is required (authorization: Bearer KEY)")
        return key

    def prepare(self, p: GenerateParams) -> tuple[GenerationRequest, RouteDecision]:
        """Validates a request and routes it; raises RequestError(INVALID_ARGUMENT, ...)."""
        lim = self.limits
        if not isinstance(p.prompt, str) or not p.prompt.strip():
            raise RequestError("INVALID_ARGUMENT", "the prompt is empty")
        try:
            size = len(p.prompt.encode("utf-8"))
        except UnicodeEncodeError:
            raise RequestError("INVALID_ARGUMENT", "prompt: not valid Unicode text (a lone UTF-16 surrogate?)") from None
        if size > lim.max_prompt_bytes:
            raise RequestError("INVALID_ARGUMENT", f"the prompt is {size} bytes; the limit is {lim.max_prompt_bytes}")
        for name in ("task", "drafter", "request_id"):
            checked_text(name, getattr(p, name) or "", lim.max_name_bytes)
        for stop in p.stop:
            checked_text("stop", stop, lim.max_stop_bytes)
        max_new = lim.default_max_new_tokens if p.max_new_tokens is None else p.max_new_tokens
        if not 1 <= max_new <= lim.max_new_tokens_limit:
            raise RequestError("INVALID_ARGUMENT",
                               f"max_new_tokens must be in [1, {lim.max_new_tokens_limit}], got {max_new}")
        if len(p.stop) > lim.max_stop_strings or any(not s for s in p.stop):
            raise RequestError("INVALID_ARGUMENT",
                               f"stop: at most {lim.max_stop_strings} non-empty strings, got {list(p.stop)!r}")
        try:
            sampling = checked_sampling(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, seed=p.seed)
        except ValueError as err:
            raise RequestError("INVALID_ARGUMENT", str(err)) from None
        try:
            decision = self.router.route(p.prompt, p.task or None, p.drafter or None, greedy=sampling.greedy,
                                         seeded=p.seed is not None)
        except ValueError as err:
            raise RequestError("INVALID_ARGUMENT", str(err)) from None
        request = GenerationRequest(p.prompt, max_new, sampling, tuple(p.stop), p.request_id or uuid.uuid4().hex,
                                    lim.request_timeout_s, p.stream)
        return request, decision

    async def generate(self, p: GenerateParams, key: str = "") -> AsyncIterator[tuple[ChunkOut, Progress]]:
        """Yields (chunk, progress) per round; raises RequestError. The caller reads metadata off progress.
        `key` (from `authorize`) is counted against its rate and its open streams (`router.quota`)."""
        try:
            self.quota.acquire(key)  # first: a key over its limits costs no validation or routing
        except QuotaExceeded as err:
            raise RequestError("RESOURCE_EXHAUSTED", f"{err.message}; retry after {err.retry_after_s:.2g} s",
                               err.retry_after_s) from None
        try:
            request, decision = self.prepare(p)
            async for item in self._stream(p, request, decision):
                yield item
        finally:
            self.quota.release(key)

    async def _stream(self, p: GenerateParams, request: GenerationRequest,
                      decision: RouteDecision) -> AsyncIterator[tuple[ChunkOut, Progress]]:
        progress = Progress(request.request_id, decision)
        got_any = False
        try:
            async for chunk in self.drafter_stream(decision.drafter, request):
                if chunk.error is not None:
                    raise RequestError(chunk.error.code, chunk.error.message)
                if progress.first_token_s is None and chunk.token_ids:
                    progress.first_token_s = time.perf_counter() - progress.start
                if chunk.stats is not None:
                    progress.stats = chunk.stats
                if chunk.verifier_replica:
                    progress.verifier_replica = chunk.verifier_replica
                got_any = True
                yield chunk, progress
        except RequestError:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as err:  # the drafter replica died or Ray failed under it
            log.warning("drafter %s failed for request %s: %s", decision.drafter, request.request_id, err)
            raise RequestError("UNAVAILABLE", f"drafter {decision.drafter} failed "
                               f"{'mid-stream' if got_any else 'before the first token'}; retry the request") from None
        if progress.stats is not None:
            s = progress.stats
            await asyncio.to_thread(self.router.record, decision, p.prompt, s["num_generated"], s["rounds"],
                                    s["draft_time_s"] + s["verify_time_s"])

    def classify(self, prompt: str, task: str | None = None, drafter: str | None = None) -> RouteDecision:
        try:
            return self.router.route(prompt, task or None, drafter or None)
        except ValueError as err:
            raise RequestError("INVALID_ARGUMENT", str(err)) from None
