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
which the codecs put on the wire.

Observability: every step of a request's stream runs inside `core.logs.request_scope(request_id)`
(the client's id or a generated one), so its log lines carry the id; one INFO line says how it was
routed and one how it finished. What each request did goes to a `RequestRecorder` (a no-op unless
the ingress passes its metrics, `router.metrics`): its first token, each chunk's tokens and rounds,
and exactly one `finished` call per request with its code ("OK", a `core.errors.Code` name,
"CANCELLED" when the client went away), requests the ingress refused before they reached here
included (`refused`). This module knows nothing about gRPC messages, HTTP or Ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.api import GenerateParams, RequestStatus
from core.errors import Code, ServiceError
from core.logs import request_scope
from core.reports import GenerationReport, RoundReport
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


def checked_request_id(value: str, max_bytes: int) -> str:
    """A client's request id: at most max_bytes of printable text (it is written into log lines and
    echoed in headers); INVALID_ARGUMENT otherwise. "" stays "" (the server generates one)."""
    checked_text("request_id", value, max_bytes)
    if not value.isprintable():
        raise _invalid("request_id: only printable characters are allowed")
    return value


def request_id_or_fresh(given: str | None, max_bytes: int) -> tuple[str, ServiceError | None]:
    """The id a request's log lines carry: the client's, or a fresh one when it sent none or one
    that is not valid (then also the error; an id that is not printable text never enters a line)."""
    try:
        return checked_request_id(given or "", max_bytes) or uuid.uuid4().hex, None
    except ServiceError as err:
        return uuid.uuid4().hex, err


OK = "OK"
CANCELLED = Code.CANCELLED.value


class RequestRecorder:
    """Where the frontend reports each request; this base records nothing (tests, in-process use).
    task and drafter are "" for a request that failed before it was routed."""

    def first_token(self, task: str, drafter: str, seconds: float) -> None:
        """The request's first token was streamed `seconds` after it reached the ingress."""

    def chunk(self, task: str, drafter: str, tokens: int, rounds: RoundReport | None) -> None:
        """A chunk returned `tokens` tokens to the client, covering `rounds` (None: no rounds reported)."""

    def finished(self, code: str, task: str, drafter: str, source: str, tokens: int, ttft_s: float | None,
                 e2e_s: float) -> None:
        """The request ended with `code` ("OK" or a `core.errors.Code` name) after `e2e_s` seconds
        (to its last chunk when OK), having streamed `tokens` tokens, the first after `ttft_s`."""


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


@dataclass
class _Outcome:
    """What one request did so far, for its `finished` record and its last log line. Times count
    from `start`, the request's arrival at the ingress (its `progress` counts from its routing)."""

    start: float
    task: str = ""
    drafter: str = ""
    source: str = ""
    tokens: int = 0
    last_chunk_s: float | None = None  # set by the chunk that finished the generation
    progress: Progress | None = None  # once routed

    @property
    def ttft_s(self) -> float | None:
        p = self.progress
        return None if p is None or p.first_token_s is None else p.start + p.first_token_s - self.start

    @property
    def report(self) -> GenerationReport | None:
        return self.progress.report if self.progress is not None else None


class RouterFrontend:
    def __init__(self, router: Router, drafter_stream: Callable[[str, GenerationRequest], AsyncIterator[ChunkOut]],
                 limits: Limits = Limits(), quota: KeyQuota | None = None, recorder: RequestRecorder | None = None):
        self.router, self.drafter_stream, self.limits = router, drafter_stream, limits
        self.quota = quota or KeyQuota()
        self.recorder = recorder or RequestRecorder()

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
        for name in ("task", "drafter"):
            checked_text(name, getattr(p, name) or "", lim.max_name_bytes)
        checked_request_id(p.request_id or "", lim.max_name_bytes)
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

    async def generate(self, p: GenerateParams, key: str = "",
                       start: float | None = None) -> AsyncIterator[tuple[ChunkOut, Progress]]:
        """Yields (chunk, progress) per round; raises ServiceError. The caller reads the status off
        progress. `key` (from `authorize`) is counted against its rate and its open streams
        (`router.quota`, RESOURCE_EXHAUSTED with how long to back off). `start`: when the request
        reached the ingress (`time.perf_counter()`), for its latencies; now by default.

        Each step runs in the request's log scope, entered and left within the step: a stream's
        steps may run in different asyncio tasks (an HTTP response streams in its own)."""
        start = time.perf_counter() if start is None else start
        request_id = self.request_id_for(p.request_id)
        if not p.request_id:
            p = dataclasses.replace(p, request_id=request_id)
        steps = self._generate(p, key, _Outcome(start))
        try:
            while True:
                with request_scope(request_id):
                    try:
                        item = await anext(steps)
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            with request_scope(request_id):
                await steps.aclose()

    def request_id_for(self, given: str | None) -> str:
        """The id the request's log lines carry (`request_id_or_fresh`; `prepare` refuses an invalid one)."""
        return request_id_or_fresh(given, self.limits.max_name_bytes)[0]

    async def _generate(self, p: GenerateParams, key: str,
                        outcome: _Outcome) -> AsyncIterator[tuple[ChunkOut, Progress]]:
        code = CANCELLED
        try:
            self.quota.acquire(key)  # first: a key over its limits costs no validation or routing
            try:
                request, decision = self.prepare(p)
                outcome.task, outcome.drafter, outcome.source = decision.task or "", decision.drafter, decision.source
                log.info("routed: task=%s drafter=%s source=%s confidence=%.3f", outcome.task, decision.drafter,
                         decision.source, decision.confidence)
                async for item in self._stream(p, request, decision, outcome):
                    yield item
            finally:
                self.quota.release(key)
            code = OK
        except ServiceError as err:
            code = err.code.value
            raise
        except (asyncio.CancelledError, GeneratorExit):
            raise  # CANCELLED, unless the generation had finished (the caller stopped after the last chunk)
        except Exception:
            code = Code.INTERNAL.value
            raise
        finally:
            if code == CANCELLED and outcome.last_chunk_s is not None:
                code = OK
            self._finished(code, outcome, time.perf_counter() - outcome.start)

    async def _stream(self, p: GenerateParams, request: GenerationRequest, decision: RouteDecision,
                      outcome: _Outcome) -> AsyncIterator[tuple[ChunkOut, Progress]]:
        progress = outcome.progress = Progress(request.request_id, decision)
        got_any = False
        task, drafter = outcome.task, outcome.drafter
        try:
            async for chunk in self.drafter_stream(decision.drafter, request):
                if chunk.error is not None:
                    raise chunk.error
                now = time.perf_counter()
                if progress.first_token_s is None and chunk.token_ids:
                    progress.first_token_s = now - progress.start
                    self.recorder.first_token(task, drafter, outcome.ttft_s)
                if chunk.report is not None:
                    progress.report = chunk.report
                if chunk.verifier_replica:
                    progress.verifier_replica = chunk.verifier_replica
                outcome.tokens += len(chunk.token_ids)
                self.recorder.chunk(task, drafter, len(chunk.token_ids), chunk.round)
                if chunk.finish_reason is not None:
                    outcome.last_chunk_s = now - outcome.start
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

    def _finished(self, code: str, outcome: _Outcome, elapsed_s: float) -> None:
        """The request's one `finished` record and its last log line."""
        e2e_s = outcome.last_chunk_s if code == OK and outcome.last_chunk_s is not None else elapsed_s
        r = outcome.report
        log.info("finished: code=%s tokens=%d rounds=%d tau=%.2f seconds=%.3f", code, outcome.tokens,
                 r.rounds if r else 0, r.tau if r else 0.0, e2e_s)
        self.recorder.finished(code, outcome.task, outcome.drafter, outcome.source, outcome.tokens, outcome.ttft_s,
                               e2e_s)

    def refused(self, err: Exception, request_id: str = "", start: float | None = None) -> None:
        """Records a request the ingress refused before `generate` (no API key, a malformed
        message, an invalid body): its one `finished` record, code INVALID_ARGUMENT and the like
        (INTERNAL for a bug), task and drafter ""."""
        code = err.code.value if isinstance(err, ServiceError) else Code.INTERNAL.value
        outcome = _Outcome(time.perf_counter() if start is None else start)
        with request_scope(request_id):
            self._finished(code, outcome, time.perf_counter() - outcome.start)

    def classify(self, prompt: str, task: str | None = None, drafter: str | None = None) -> RouteDecision:
        try:
            return self.router.route(prompt, task or None, drafter or None)
        except ValueError as err:
            raise _invalid(str(err)) from None
