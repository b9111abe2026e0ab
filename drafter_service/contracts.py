"""The types between the router and a drafter service: a request, and the chunks streamed back.

The router validates a request at the edge and sends a `GenerationRequest` to the chosen drafter
deployment (a Ray Serve streaming call: once per request, so a handle hop is paid once, not per
round). The drafter streams `ChunkOut`s, one per verification round, or several rounds merged
into one (`ChunkOut.then`: the deployment coalesces rounds that finish close together, and a
request that does not stream gets a single chunk). Each carries its rounds' typed
`core.reports.RoundReport`; the last has `finish_reason` and the generation's
`core.reports.GenerationReport`. A request that fails ends the stream with one `ChunkOut` whose
`error` is a `core.errors.ServiceError`, so an expected failure reaches the client with its code,
never as an opaque exception.

Plain dataclasses: they pickle across Ray and hold no tensors. Times are seconds. This module
knows nothing about models, gRPC or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ServiceError
from core.reports import GenerationReport, RoundReport
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
class ChunkOut:
    token_ids: tuple[int, ...] = ()
    text: str = ""
    round: RoundReport | None = None  # the rounds this chunk covers
    finish_reason: str | None = None
    report: GenerationReport | None = None  # on the last chunk: the whole generation
    error: ServiceError | None = None
    verifier_replica: str = ""  # on the first chunk, and after a failover moved the session

    @property
    def last(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    def then(self, later: ChunkOut) -> ChunkOut:
        """This chunk and a later one as one (rounds summed). Errors are never merged."""
        assert self.error is None and later.error is None and not self.last
        rounds = later.round if self.round is None else self.round if later.round is None else \
            self.round.then(later.round)
        return ChunkOut(self.token_ids + later.token_ids, self.text + later.text, rounds, later.finish_reason,
                        later.report, None, later.verifier_replica or self.verifier_replica)
