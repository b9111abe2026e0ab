"""The router's request handling, with no transport: validate, route, stream, record.

`RouterFrontend` is what both front doors of the ingress share (gRPC through Ray Serve's proxy,
and the OpenAI-compatible HTTP endpoint): it checks a request at the edge and turns it into a
`GenerationRequest` for the drafter the router (`router.router`) picks, streams that drafter's
chunks with per-request metadata (task, drafter, confidence, tau, rounds, timings), and records
the finished request in Redis. Every problem with a request raises `core.errors.ServiceError`
with a code and a message that names the problem:
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
(a Serve handle in the app, anything in tests). The chunks carry typed reports
(`core.reports`); `Progress.status()` gives the request's `core.api.RequestStatus` in seconds,
which the codecs put on the wire. This module knows nothing about gRPC messages, HTTP or Ray.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.api import GenerateParams, RequestStatus
from core.errors import Code, ServiceError
from core.reports import GenerationReport
from core.sampling import checked_sampling
from drafter_service.contracts import ChunkOut, GenerationRequest
from router.quota import KeyQuota
from router.router import RouteDecision, Router

log = logging.getLogger("specroute.router")


class Limits(BaseModel):
    """What the router accepts of a request (the system config's `router` section inherits these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_max_new_tokens: int = Field(64, ge=1)
    max_new_tokens_limit: int = Field(1024, ge=1)
    max_prompt_bytes: int = Field(64 * 1024, ge=1, description="Longer prompts get INVALID_ARGUMENT before tokenising.")
    max_stop_strings: int = Field(8, ge=0)
    request_timeout_s: float = Field(300.0, gt=0, description="Server-side deadline of one generation.")
    api_keys: tuple[str, ...] = Field((), description="If any, requests must send `authorization: Bearer KEY`.")
    max_stop_bytes: int = Field(256, ge=1, description="The longest stop string, in UTF-8 bytes.")
    max_name_bytes: int = Field(256, ge=1, description="The longest task, drafter or model name, or request id.")

    @model_validator(mode="after")
    def _default_within_limit(self) -> Limits:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens is above max_new_tokens_limit")
        return self


def _invalid(message: str) -> ServiceError:
    return ServiceError(Code.INVALID_ARGUMENT, message)


def checked_text(field: str, value: str, max_bytes: int) -> str:
    """`value` if it is UTF-8-encodable text of at most max_bytes; INVALID_ARGUMENT otherwise."""
    if not isinstance(value, str):
        raise _invalid(f"{field}: must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid(f"{field}: not valid Unicode text (a lone UTF-16 surrogate?)") from None
    if size > max_bytes:
        raise _invalid(f"{field}: {size} bytes; the limit is {max_bytes}")
    return value


@dataclass
class Progress:
    """What the frontend knows about a request as it streams: routing, then the typed report."""

    request_id: str
    decision: RouteDecision
    start: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    report: GenerationReport | None = None
    verifier_replica: str = ""

    def status(self) -> RequestStatus:
        """The request's status now (seconds; the codecs turn them into the wire's milliseconds)."""
        d = self.decision
        return RequestStatus(self.request_id, d.task or "", d.drafter, d.confidence, d.source, self.verifier_replica,
                             self.first_token_s, time.perf_counter() - self.start if self.report is not None else None,
                             self.report)


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
            raise ServiceError(Code.UNAUTHENTICATED, "a valid API key is required (authorization: Bearer KEY)")
        return key

    def prepare(self, p: GenerateParams) -> tuple[GenerationRequest, RouteDecision]:
        """Validates a request and routes it; raises ServiceError(INVALID_ARGUMENT, ...)."""
        lim = self.limits
        if not isinstance(p.prompt, str) or not p.prompt.strip():
            raise _invalid("the prompt is empty")
        try:
            size = len(p.prompt.encode("utf-8"))
        except UnicodeEncodeError:
            raise _invalid("prompt: not valid Unicode text (a lone UTF-16 surrogate?)") from None
        if size > lim.max_prompt_bytes:
            raise _invalid(f"the prompt is {size} bytes; the limit is {lim.max_prompt_bytes}")
        for name in ("task", "drafter", "request_id"):
            checked_text(name, getattr(p, name) or "", lim.max_name_bytes)
        for stop in p.stop:
            checked_text("stop", stop, lim.max_stop_bytes)
        max_new = lim.default_max_new_tokens if p.max_new_tokens is None else p.max_new_tokens
        if not 1 <= max_new <= lim.max_new_tokens_limit:
            raise _invalid(f"max_new_tokens must be in [1, {lim.max_new_tokens_limit}], got {max_new}")
        if len(p.stop) > lim.max_stop_strings or any(not s for s in p.stop):
            raise _invalid(f"stop: at most {lim.max_stop_strings} non-empty strings, got {list(p.stop)!r}")
        try:
            sampling = checked_sampling(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, seed=p.seed)
        except ValueError as err:
            raise _invalid(str(err)) from None
        try:
            decision = self.router.route(p.prompt, p.task or None, p.drafter or None, greedy=sampling.greedy,
                                         seeded=p.seed is not None)
        except ValueError as err:
            raise _invalid(str(err)) from None
        request = GenerationRequest(p.prompt, max_new, sampling, tuple(p.stop), p.request_id or uuid.uuid4().hex,
                                    lim.request_timeout_s, p.stream)
        return request, decision

    async def generate(self, p: GenerateParams, key: str = "") -> AsyncIterator[tuple[ChunkOut, Progress]]:
        """Yields (chunk, progress) per round; raises ServiceError. The caller reads the status off
        progress. `key` (from `authorize`) is counted against its rate and its open streams
        (`router.quota`, RESOURCE_EXHAUSTED with how long to back off)."""
        self.quota.acquire(key)  # first: a key over its limits costs no validation or routing
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
                    raise chunk.error
                if progress.first_token_s is None and chunk.token_ids:
                    progress.first_token_s = time.perf_counter() - progress.start
                if chunk.report is not None:
                    progress.report = chunk.report
                if chunk.verifier_replica:
                    progress.verifier_replica = chunk.verifier_replica
                got_any = True
                yield chunk, progress
        except ServiceError:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as err:  # the drafter replica died or Ray failed under it
            log.warning("drafter %s failed for request %s: %s", decision.drafter, request.request_id, err)
            raise ServiceError(Code.UNAVAILABLE, f"drafter {decision.drafter} failed "
                               f"{'mid-stream' if got_any else 'before the first token'}; retry the request") from None
        if progress.report is not None:
            r = progress.report
            await asyncio.to_thread(self.router.record, decision, p.prompt, r.num_generated, r.rounds,
                                    r.draft_time_s + r.verify_time_s)

    def classify(self, prompt: str, task: str | None = None, drafter: str | None = None) -> RouteDecision:
        try:
            return self.router.route(prompt, task or None, drafter or None)
        except ValueError as err:
            raise _invalid(str(err)) from None
