"""The types between the router and a drafter service: a request, and the chunks streamed back.

The router validates a request at the edge and sends a `GenerationRequest` to the chosen drafter
deployment (a Ray Serve streaming call: once per request, so the ~20 ms of a handle hop is paid
once, not per round). The drafter streams `ChunkOut`s, one per verification round (or a single
one, when the request does not stream); the last has `finish_reason` and the generation's
`stats`. A request that fails ends the stream with one `ChunkOut` whose `error` is set (a gRPC
status code name and a message), so an expected failure reaches the client with its code, never
as an opaque exception.

Plain dataclasses: they pickle across Ray and hold no tensors. This module knows nothing about
models, gRPC or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    request_id: str = ""
    timeout_s: float | None = None
    stream: bool = True  # False: the caller wants the whole completion at once, so rounds are not streamed


@dataclass(frozen=True)
class ServiceErrorInfo:
    code: str  # a grpc.StatusCode name: INVALID_ARGUMENT, UNAVAILABLE, ...
    message: str


@dataclass(frozen=True)
class ChunkOut:
    token_ids: tuple[int, ...] = ()
    text: str = ""
    round: dict | None = None  # num_drafted, num_accepted, num_emitted, draft_ms, verify_ms
    finish_reason: str | None = None
    stats: dict | None = None  # on the last chunk: GenerationReport.as_dict() plus prompt_tokens, verifier_replica
    error: ServiceErrorInfo | None = None
    verifier_replica: str = ""  # on the first chunk, and after a failover moved the session

    @property
    def last(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    def then(self, later: "ChunkOut") -> "ChunkOut":
        """This chunk and a later one as one (rounds summed). Errors are never merged."""
        assert self.error is None and later.error is None and not self.last
        rounds = None
        if self.round is not None or later.round is not None:
            a, b = self.round or {}, later.round or {}
            rounds = {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
        return ChunkOut(self.token_ids + later.token_ids, self.text + later.text, rounds, later.finish_reason,
                        later.stats, None, later.verifier_replica or self.verifier_replica)
