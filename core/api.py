"""The public API's types as plain dataclasses: what a client asks for and what it gets back.

`GenerateParams` is a generation request as it arrives, before validation: the gRPC door, the
HTTP door and the SDK all build one. `RequestStatus` is what the server knows about a request as
it streams (its routing, the typed `GenerationReport` once it finished), in seconds. The rest are
the SDK's results, shaped like the `specroute.v1` messages (milliseconds, as on the wire):
`RoundInfo`, `Metadata`, `StreamChunk`, `Completion`, `Classification`, `DrafterInfo`,
`DrafterList`, `Health`.

`core.public_codec` is the only place these become protobuf messages and back. This module is
pure Python (the light SDK imports it); it knows nothing about gRPC, HTTP, routing or models.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from core.reports import GenerationReport


@dataclass(frozen=True)
class GenerateParams:
    """A generation request as it arrives, before validation (every door builds one)."""

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
class RequestStatus:
    """What the server tells a client about a request: routing, then (at the end) the figures.
    Times are seconds; a codec turns them into the wire's milliseconds."""

    request_id: str
    task: str
    drafter: str
    confidence: float
    route_source: str
    verifier_replica: str = ""
    time_to_first_token_s: float | None = None
    total_s: float | None = None  # with `report`: the request's time in the router so far
    report: GenerationReport | None = None


@dataclass(frozen=True)
class RoundInfo:
    """The figures of the verification rounds a chunk covers (proto `RoundInfo`), summed."""

    num_drafted: int = 0
    num_accepted: int = 0
    num_emitted: int = 0
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    rounds: int = 1


@dataclass(frozen=True)
class Metadata:
    """Per-request metadata (proto `RequestMetadata`); unset fields keep their zero defaults."""

    request_id: str = ""
    task: str = ""
    drafter: str = ""
    confidence: float = 0.0
    route_source: str = ""
    tau: float = 0.0
    rounds: int = 0
    num_drafted: int = 0
    num_accepted: int = 0
    num_generated: int = 0
    prompt_tokens: int = 0
    prefill_ms: float = 0.0
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    total_ms: float = 0.0
    tokens_per_s: float = 0.0
    verifier_replica: str = ""
    rounds_drafted_ahead: int = 0

    def merged(self, later: Metadata | None) -> Metadata:
        """This metadata updated by `later`: each field `later` sets (non-default) wins."""
        if later is None:
            return self
        changes = {f.name: getattr(later, f.name) for f in fields(later) if getattr(later, f.name) != f.default}
        return replace(self, **changes)


@dataclass(frozen=True)
class StreamChunk:
    """One streamed piece of a generation: usually one verification round's new text."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # on the last chunk only: length, eos, stop, context
    round: RoundInfo | None = None
    metadata: Metadata | None = None  # the server sends it on the first and the last chunk


@dataclass(frozen=True)
class Completion:
    """A whole generation: the concatenated chunks and the merged metadata."""

    text: str
    token_ids: list[int]
    finish_reason: str
    metadata: Metadata


@dataclass(frozen=True)
class Classification:
    """How the server would route a prompt, without generating."""

    task: str
    drafter: str
    confidence: float
    route_source: str


@dataclass(frozen=True)
class DrafterInfo:
    name: str
    kind: str
    family: str = ""
    params: int = 0
    specialised_for: str = ""
    serves_tasks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DrafterList:
    drafters: list[DrafterInfo]
    default_drafter: str
    tasks: list[str]
    target: str


@dataclass(frozen=True)
class Health:
    status: str  # UNKNOWN, SERVING, NOT_SERVING
    verifier_replicas: int
    version: str

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"
