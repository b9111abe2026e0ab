from protos.specroute.v1 import specroute_pb2 as _specroute_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenSession(_message.Message):
    __slots__ = ("prompt_ids", "sampling", "request_id", "max_new_tokens", "states")
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    prompt_ids: _containers.RepeatedScalarFieldContainer[int]
    sampling: _specroute_pb2.SamplingParams
    request_id: str
    max_new_tokens: int
    states: StateRequest
    def __init__(self, prompt_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[_specroute_pb2.SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., states: _Optional[_Union[StateRequest, _Mapping]] = ...) -> None: ...

class StateRequest(_message.Message):
    __slots__ = ("layers", "dtype", "last_only")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_ONLY_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    last_only: bool
    def __init__(self, layers: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., last_only: _Optional[bool] = ...) -> None: ...

class HiddenStates(_message.Message):
    __slots__ = ("data", "rows", "layers", "hidden", "dtype")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    rows: int
    layers: int
    hidden: int
    dtype: str
    def __init__(self, data: _Optional[bytes] = ..., rows: _Optional[int] = ..., layers: _Optional[int] = ..., hidden: _Optional[int] = ..., dtype: _Optional[str] = ...) -> None: ...

class DraftDist(_message.Message):
    __slots__ = ("token_ids", "probs")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., probs: _Optional[_Iterable[float]] = ...) -> None: ...

class Tree(_message.Message):
    __slots__ = ("tokens", "parents", "dists", "deterministic")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    DISTS_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    parents: _containers.RepeatedScalarFieldContainer[int]
    dists: _containers.RepeatedCompositeFieldContainer[DraftDist]
    deterministic: bool
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., parents: _Optional[_Iterable[int]] = ..., dists: _Optional[_Iterable[_Union[DraftDist, _Mapping]]] = ..., deterministic: _Optional[bool] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("open", "tree", "close")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    open: OpenSession
    tree: Tree
    close: CloseSession
    def __init__(self, open: _Optional[_Union[OpenSession, _Mapping]] = ..., tree: _Optional[_Union[Tree, _Mapping]] = ..., close: _Optional[_Union[CloseSession, _Mapping]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("max_context", "max_tree_nodes", "eos_token_ids", "prefill_ms", "replica", "states")
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_TREE_NODES_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    max_context: int
    max_tree_nodes: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    prefill_ms: float
    replica: str
    states: HiddenStates
    def __init__(self, max_context: _Optional[int] = ..., max_tree_nodes: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., prefill_ms: _Optional[float] = ..., replica: _Optional[str] = ..., states: _Optional[_Union[HiddenStates, _Mapping]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("accepted_nodes", "accepted_tokens", "bonus_token", "num_drafted", "verify_ms", "max_tree_nodes", "states")
    ACCEPTED_NODES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BONUS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NUM_DRAFTED_FIELD_NUMBER: _ClassVar[int]
    VERIFY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_TREE_NODES_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    accepted_nodes: _containers.RepeatedScalarFieldContainer[int]
    accepted_tokens: _containers.RepeatedScalarFieldContainer[int]
    bonus_token: int
    num_drafted: int
    verify_ms: float
    max_tree_nodes: int
    states: HiddenStates
    def __init__(self, accepted_nodes: _Optional[_Iterable[int]] = ..., accepted_tokens: _Optional[_Iterable[int]] = ..., bonus_token: _Optional[int] = ..., num_drafted: _Optional[int] = ..., verify_ms: _Optional[float] = ..., max_tree_nodes: _Optional[int] = ..., states: _Optional[_Union[HiddenStates, _Mapping]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("opened", "verdict")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    verdict: Verdict
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...
