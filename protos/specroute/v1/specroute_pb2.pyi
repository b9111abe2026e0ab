from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "max_new_tokens", "sampling", "stop", "task", "drafter", "request_id", "single_response")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SINGLE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    max_new_tokens: int
    sampling: SamplingParams
    stop: _containers.RepeatedScalarFieldContainer[str]
    task: str
    drafter: str
    request_id: str
    single_response: bool
    def __init__(self, prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., stop: _Optional[_Iterable[str]] = ..., task: _Optional[str] = ..., drafter: _Optional[str] = ..., request_id: _Optional[str] = ..., single_response: _Optional[bool] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("num_drafted", "num_accepted", "num_emitted", "draft_ms", "verify_ms", "rounds")
    NUM_DRAFTED_FIELD_NUMBER: _ClassVar[int]
    NUM_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    NUM_EMITTED_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    num_drafted: int
    num_accepted: int
    num_emitted: int
    draft_ms: float
    verify_ms: float
    rounds: int
    def __init__(self, num_drafted: _Optional[int] = ..., num_accepted: _Optional[int] = ..., num_emitted: _Optional[int] = ..., draft_ms: _Optional[float] = ..., verify_ms: _Optional[float] = ..., rounds: _Optional[int] = ...) -> None: ...

class RequestMetadata(_message.Message):
    __slots__ = ("request_id", "task", "drafter", "confidence", "route_source", "tau", "rounds", "num_drafted", "num_accepted", "num_generated", "prompt_tokens", "prefill_ms", "draft_ms", "verify_ms", "time_to_first_token_ms", "total_ms", "tokens_per_s", "verifier_replica", "rounds_drafted_ahead")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NUM_DRAFTED_FIELD_NUMBER: _ClassVar[int]
    NUM_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    NUM_GENERATED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_REPLICA_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_DRAFTED_AHEAD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    task: str
    drafter: str
    confidence: float
    route_source: str
    tau: float
    rounds: int
    num_drafted: int
    num_accepted: int
    num_generated: int
    prompt_tokens: int
    prefill_ms: float
    draft_ms: float
    verify_ms: float
    time_to_first_token_ms: float
    total_ms: float
    tokens_per_s: float
    verifier_replica: str
    rounds_drafted_ahead: int
    def __init__(self, request_id: _Optional[str] = ..., task: _Optional[str] = ..., drafter: _Optional[str] = ..., confidence: _Optional[float] = ..., route_source: _Optional[str] = ..., tau: _Optional[float] = ..., rounds: _Optional[int] = ..., num_drafted: _Optional[int] = ..., num_accepted: _Optional[int] = ..., num_generated: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., prefill_ms: _Optional[float] = ..., draft_ms: _Optional[float] = ..., verify_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., tokens_per_s: _Optional[float] = ..., verifier_replica: _Optional[str] = ..., rounds_drafted_ahead: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "token_ids", "round", "metadata", "finish_reason")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    round: RoundInfo
    metadata: RequestMetadata
    finish_reason: str
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., round: _Optional[_Union[RoundInfo, _Mapping]] = ..., metadata: _Optional[_Union[RequestMetadata, _Mapping]] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("prompt", "task", "drafter")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    task: str
    drafter: str
    def __init__(self, prompt: _Optional[str] = ..., task: _Optional[str] = ..., drafter: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("task", "drafter", "confidence", "route_source")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DRAFTER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    task: str
    drafter: str
    confidence: float
    route_source: str
    def __init__(self, task: _Optional[str] = ..., drafter: _Optional[str] = ..., confidence: _Optional[float] = ..., route_source: _Optional[str] = ...) -> None: ...

class ListDraftersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrafterInfo(_message.Message):
    __slots__ = ("name", "kind", "family", "params", "specialised_for", "serves_tasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SPECIALISED_FOR_FIELD_NUMBER: _ClassVar[int]
    SERVES_TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    family: str
    params: int
    specialised_for: str
    serves_tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., family: _Optional[str] = ..., params: _Optional[int] = ..., specialised_for: _Optional[str] = ..., serves_tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class ListDraftersResponse(_message.Message):
    __slots__ = ("drafters", "default_drafter", "tasks", "target")
    DRAFTERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DRAFTER_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    drafters: _containers.RepeatedCompositeFieldContainer[DrafterInfo]
    default_drafter: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    target: str
    def __init__(self, drafters: _Optional[_Iterable[_Union[DrafterInfo, _Mapping]]] = ..., default_drafter: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., target: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "verifier_replicas", "version")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthResponse.Status]
        SERVING: _ClassVar[HealthResponse.Status]
        NOT_SERVING: _ClassVar[HealthResponse.Status]
    UNKNOWN: HealthResponse.Status
    SERVING: HealthResponse.Status
    NOT_SERVING: HealthResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    status: HealthResponse.Status
    verifier_replicas: int
    version: str
    def __init__(self, status: _Optional[_Union[HealthResponse.Status, str]] = ..., verifier_replicas: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...
