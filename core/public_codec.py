"""The public API's codec: `core.api` types and reports <-> `specroute.v1` protobuf messages.

The one module (with `core.verifier_codec` for the verifier API) that imports the generated
code of the public API: the server side (the router's ingress and its servicer registration)
and the client SDK both convert here, so a field's meaning is written once. In particular:
- an unset top_p (0 on the wire) means 1 (`top_p_from_wire`);
- a seed travels as the uint64 `core.seed.normalize_seed` makes of it;
- seconds (`core.reports`, `core.api.RequestStatus`) become the wire's milliseconds here
  (`metadata_fields`, `round_to_proto`), nowhere else.

Conversion only: this module checks nothing a request means (the router validates), and knows
nothing about routing, transports or models. It imports protobuf and grpcio (for the stub),
never torch, so the light SDK can use it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from protos.specroute.v1 import specroute_pb2 as pb
from protos.specroute.v1 import specroute_pb2_grpc as pb_grpc
from core.api import (Classification, DrafterInfo, DrafterList, GenerateParams, Health, Metadata, RequestStatus,
                      RoundInfo, StreamChunk)
from core.reports import RoundReport
from core.seed import normalize_seed

SpecRouteStub = pb_grpc.SpecRouteStub
SERVICE = pb.DESCRIPTOR.services_by_name["SpecRoute"]
"""The `specroute.v1.SpecRoute` service descriptor: its methods and their message types."""


def message_class(name: str) -> type:
    """The generated message class of a `specroute.v1` message, by its short name."""
    return getattr(pb, name)


def top_p_from_wire(top_p: float) -> float:
    """An unset top_p (0, proto3's default) means 1: no nucleus cut."""
    return top_p if top_p != 0 else 1.0


# --- requests ---------------------------------------------------------------------------------

def generate_request_to_proto(params: GenerateParams) -> pb.GenerateRequest:
    """The request message; ValueError if the seed is outside [-2^63, 2^64)."""
    sampling = pb.SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    if params.seed is not None:
        sampling.seed = normalize_seed(params.seed)  # any int64 or uint64 value, as the server takes it
    request = pb.GenerateRequest(prompt=params.prompt, sampling=sampling, stop=list(params.stop),
                                 task=params.task or "", drafter=params.drafter or "",
                                 request_id=params.request_id, single_response=not params.stream)
    if params.max_new_tokens is not None:
        request.max_new_tokens = params.max_new_tokens
    return request


def generate_request_from_proto(request: pb.GenerateRequest) -> GenerateParams:
    s = request.sampling
    return GenerateParams(
        prompt=request.prompt,
        max_new_tokens=request.max_new_tokens if request.HasField("max_new_tokens") else None,
        temperature=s.temperature, top_p=top_p_from_wire(s.top_p), top_k=s.top_k,
        seed=s.seed if s.HasField("seed") else None, stop=tuple(request.stop), task=request.task,
        drafter=request.drafter, request_id=request.request_id, stream=not request.single_response)


def classify_request_to_proto(prompt: str, task: str | None = None, drafter: str | None = None) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(prompt=prompt, task=task or "", drafter=drafter or "")


def classify_request_from_proto(request: pb.ClassifyRequest) -> tuple[str, str, str]:
    """(prompt, task, drafter); "" for an unset task or drafter."""
    return request.prompt, request.task, request.drafter


def list_drafters_request() -> pb.ListDraftersRequest:
    return pb.ListDraftersRequest()


def health_request() -> pb.HealthRequest:
    return pb.HealthRequest()


# --- generation responses ---------------------------------------------------------------------

def round_to_proto(report: RoundReport) -> pb.RoundInfo:
    return pb.RoundInfo(num_drafted=report.num_drafted, num_accepted=report.num_accepted,
                        num_emitted=report.num_emitted, draft_ms=report.draft_time_s * 1e3,
                        verify_ms=report.verify_time_s * 1e3, rounds=report.rounds)


def round_from_proto(message: pb.RoundInfo) -> RoundInfo:
    return RoundInfo(**{f.name: getattr(message, f.name) for f in fields(RoundInfo)})


def metadata_fields(status: RequestStatus) -> dict[str, Any]:
    """The `RequestMetadata` fields a request's status sets, by name, in the wire's units: the
    routing fields always, the time to the first token once known, the figures once finished.
    (The HTTP API sends the same dict as JSON.)"""
    m: dict[str, Any] = {"request_id": status.request_id, "task": status.task, "drafter": status.drafter,
                         "confidence": status.confidence, "route_source": status.route_source,
                         "verifier_replica": status.verifier_replica}
    if status.time_to_first_token_s is not None:
        m["time_to_first_token_ms"] = status.time_to_first_token_s * 1e3
    r = status.report
    if r is not None:
        m.update(tau=r.tau, rounds=r.rounds, num_drafted=r.num_drafted, num_accepted=r.num_accepted,
                 num_generated=r.num_generated, prompt_tokens=r.prompt_tokens, prefill_ms=r.prefill_time_s * 1e3,
                 draft_ms=r.draft_time_s * 1e3, verify_ms=r.verify_time_s * 1e3,
                 total_ms=(status.total_s or 0.0) * 1e3, rounds_drafted_ahead=r.rounds_drafted_ahead,
                 tokens_per_s=r.tokens_per_s)
    return m


def metadata_to_proto(status: RequestStatus) -> pb.RequestMetadata:
    return pb.RequestMetadata(**metadata_fields(status))


def metadata_from_proto(message: pb.RequestMetadata) -> Metadata:
    return Metadata(**{f.name: getattr(message, f.name) for f in fields(Metadata)})


def generate_response_to_proto(text: str, token_ids: tuple[int, ...] | list[int], finish_reason: str | None,
                               round: RoundReport | None = None,
                               status: RequestStatus | None = None) -> pb.GenerateResponse:
    """One streamed chunk; `status` (the metadata) on the first and the last."""
    message = pb.GenerateResponse(text=text, token_ids=token_ids, finish_reason=finish_reason or "")
    if round is not None:
        message.round.CopyFrom(round_to_proto(round))
    if status is not None:
        message.metadata.CopyFrom(metadata_to_proto(status))
    return message


def stream_chunk_from_proto(response: pb.GenerateResponse) -> StreamChunk:
    return StreamChunk(
        text=response.text,
        token_ids=list(response.token_ids),
        finish_reason=response.finish_reason or None,
        round=round_from_proto(response.round) if response.HasField("round") else None,
        metadata=metadata_from_proto(response.metadata) if response.HasField("metadata") else None,
    )


# --- the other methods' responses -------------------------------------------------------------

def classification_to_proto(c: Classification) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(task=c.task, drafter=c.drafter, confidence=c.confidence, route_source=c.route_source)


def classification_from_proto(response: pb.ClassifyResponse) -> Classification:
    return Classification(response.task, response.drafter, response.confidence, response.route_source)


def drafter_list_to_proto(listing: DrafterList) -> pb.ListDraftersResponse:
    drafters = [pb.DrafterInfo(name=d.name, kind=d.kind, family=d.family, params=d.params,
                               specialised_for=d.specialised_for, serves_tasks=d.serves_tasks)
                for d in listing.drafters]
    return pb.ListDraftersResponse(drafters=drafters, default_drafter=listing.default_drafter, tasks=listing.tasks,
                                   target=listing.target)


def drafter_list_from_proto(response: pb.ListDraftersResponse) -> DrafterList:
    drafters = [DrafterInfo(d.name, d.kind, d.family, d.params, d.specialised_for, list(d.serves_tasks))
                for d in response.drafters]
    return DrafterList(drafters, response.default_drafter, list(response.tasks), response.target)


def health_to_proto(health: Health) -> pb.HealthResponse:
    return pb.HealthResponse(status=pb.HealthResponse.Status.Value(health.status),
                             verifier_replicas=health.verifier_replicas, version=health.version)


def health_from_proto(response: pb.HealthResponse) -> Health:
    try:
        status = pb.HealthResponse.Status.Name(response.status)
    except ValueError:  # a status value newer than this client
        status = str(response.status)
    return Health(status, response.verifier_replicas, response.version)
