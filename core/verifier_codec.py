"""Contract types <-> protobuf messages, for the gRPC verifier API (`protos/specroute/v1`).

The one module that touches the generated verifier code: the verifier's server and the
drafter's client build and read every message through it, and it re-exports the stub, the
servicer base class and `add_VerifierServicer_to_server` they need.

Per message:
- requests (drafter -> verifier): `open_request(SessionOpen)`, `tree_request(DraftTree)`,
  `close_request()`; the server reads them back with `request_kind`, `open_from_request` and
  `tree_from_request`;
- responses (verifier -> drafter): `opened_response(SessionOpened)` and
  `verdict_response(Verdict, max_tree_nodes)`, read back with `opened_from_response` and
  `verdict_from_response`;
- `SamplingParams`, `DraftTree`, `Verdict`, `StateRequest` and `HiddenStates` have their
  `*_to_proto` / `*_from_proto` pairs. Hidden states travel as one bytes field with their shape
  (no per-value encoding), and only when the session asked for them; `StateRequest.last_only`
  travels as a proto3 bool, so its default adds no byte.

Decoding checks nothing beyond what is needed to rebuild a value; the verifier session
validates a decoded tree as it would any tree. A malformed message (a distribution list of the
wrong length, token and probability lists of different lengths, sampling values out of range)
raises a `core.errors.ServiceError` with code INVALID_ARGUMENT (`InvalidTreeError` for a tree),
so a bad message is refused like a bad value. An unset top_p (0 on the wire) means 1.

This module knows nothing about sessions, servers or models.
"""

from __future__ import annotations

from protos.specroute.v1 import specroute_pb2, verifier_pb2
from protos.specroute.v1.verifier_pb2_grpc import (  # noqa: F401 (re-exported)
    VerifierServicer, VerifierStub, add_VerifierServicer_to_server)
from core.contracts import DraftTree, InvalidTreeError, SessionOpen, SessionOpened, SparseDist, Verdict
from core.errors import Code, ServiceError
from core.public_codec import top_p_from_wire
from core.sampling import SamplingParams, checked_sampling
from core.states import HiddenStates, InvalidStateRequestError, StateRequest

OPEN, TREE, CLOSE = "open", "tree", "close"
"""The kinds of request message (`request_kind`)."""

SessionRequest = verifier_pb2.SessionRequest
SessionResponse = verifier_pb2.SessionResponse


# --- sampling, trees, verdicts ------------------------------------------------------------
def sampling_to_proto(params: SamplingParams) -> specroute_pb2.SamplingParams:
    msg = specroute_pb2.SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    if params.seed is not None:
        msg.seed = params.seed
    return msg


def sampling_from_proto(msg: specroute_pb2.SamplingParams) -> SamplingParams:
    """Raises ServiceError(INVALID_ARGUMENT) naming the offending field's rule when a value is out
    of range. An unset top_p (0 on the wire) means 1, as on the public API (`top_p_from_wire`)."""
    try:
        return checked_sampling(temperature=msg.temperature, top_p=top_p_from_wire(msg.top_p),
                                top_k=msg.top_k, seed=msg.seed if msg.HasField("seed") else None)
    except ValueError as err:
        raise ServiceError(Code.INVALID_ARGUMENT, f"sampling.{err}") from None


def tree_to_proto(tree: DraftTree) -> verifier_pb2.Tree:
    msg = verifier_pb2.Tree(tokens=tree.tokens, parents=tree.parents, deterministic=tree.deterministic)
    if tree.draft_dists is not None:
        for dist in tree.draft_dists:
            entry = msg.dists.add()
            if dist is not None:
                entry.token_ids.extend(dist.token_ids)
                entry.probs.extend(dist.probs)
    return msg


def tree_from_proto(msg: verifier_pb2.Tree) -> DraftTree:
    """Raises InvalidTreeError for distributions that cannot be rebuilt."""
    dists = None
    if len(msg.dists):
        if len(msg.dists) != len(msg.tokens):
            raise InvalidTreeError(f"tree has {len(msg.tokens)} nodes but {len(msg.dists)} draft distributions")
        dists = tuple(_dist_from_proto(entry) for entry in msg.dists)
    return DraftTree(tuple(msg.tokens), tuple(msg.parents), dists, msg.deterministic)


def _dist_from_proto(entry: verifier_pb2.DraftDist) -> SparseDist | None:
    """A node's distribution; None for an empty entry (a node without children)."""
    if len(entry.token_ids) != len(entry.probs):
        raise InvalidTreeError("draft distribution: token_ids and probs differ in length")
    return SparseDist(tuple(entry.token_ids), tuple(entry.probs)) if len(entry.token_ids) else None


def verdict_to_proto(verdict: Verdict) -> verifier_pb2.Verdict:
    msg = verifier_pb2.Verdict(accepted_nodes=verdict.accepted_nodes, accepted_tokens=verdict.accepted_tokens,
                               bonus_token=verdict.bonus_token, num_drafted=verdict.num_drafted,
                               verify_ms=verdict.verify_time_s * 1e3)
    if verdict.states is not None:
        msg.states.CopyFrom(states_to_proto(verdict.states))
    return msg


def verdict_from_proto(msg: verifier_pb2.Verdict) -> Verdict:
    states = states_from_proto(msg.states) if msg.HasField("states") else None
    return Verdict(tuple(msg.accepted_nodes), tuple(msg.accepted_tokens), msg.bonus_token, msg.num_drafted,
                   msg.verify_ms / 1e3, states)


# --- hidden states ------------------------------------------------------------------------
DEFAULT_WIRE_DTYPE = "float16"


def state_request_to_proto(request: StateRequest) -> verifier_pb2.StateRequest:
    return verifier_pb2.StateRequest(layers=request.layers, dtype=request.dtype, last_only=request.last_only)


def state_request_from_proto(msg: verifier_pb2.StateRequest) -> StateRequest:
    """Unset fields take the defaults ([-1], float16, every row); the verifier checks the layers and dtype."""
    return StateRequest(tuple(msg.layers) or (-1,), msg.dtype or DEFAULT_WIRE_DTYPE, msg.last_only)


def states_to_proto(states: HiddenStates) -> verifier_pb2.HiddenStates:
    return verifier_pb2.HiddenStates(data=states.data, rows=states.rows, layers=states.layers,
                                     hidden=states.hidden, dtype=states.dtype)


def states_from_proto(msg: verifier_pb2.HiddenStates) -> HiddenStates:
    """Raises InvalidStateRequestError (INVALID_ARGUMENT) when the bytes do not match the shape."""
    try:
        return HiddenStates(msg.data, msg.rows, msg.layers, msg.hidden, msg.dtype or DEFAULT_WIRE_DTYPE)
    except InvalidStateRequestError:
        raise
    except (TypeError, ValueError) as err:
        raise InvalidStateRequestError(f"malformed hidden states: {err}") from None


# --- requests: drafter -> verifier --------------------------------------------------------
def open_request(opening: SessionOpen) -> SessionRequest:
    msg = SessionRequest(open=verifier_pb2.OpenSession(
        prompt_ids=opening.prompt_ids, sampling=sampling_to_proto(opening.sampling),
        request_id=opening.request_id, max_new_tokens=opening.max_new_tokens))
    if opening.states is not None:
        msg.open.states.CopyFrom(state_request_to_proto(opening.states))
    return msg


def tree_request(tree: DraftTree) -> SessionRequest:
    return SessionRequest(tree=tree_to_proto(tree))


def close_request() -> SessionRequest:
    return SessionRequest(close=verifier_pb2.CloseSession())


def request_kind(msg: SessionRequest) -> str | None:
    """OPEN, TREE or CLOSE; None for a message that carries none of them."""
    return msg.WhichOneof("kind")


def open_from_request(msg: SessionRequest) -> SessionOpen:
    """The opening an OPEN request carries; ServiceError(INVALID_ARGUMENT) for bad sampling values."""
    opening = msg.open
    states = state_request_from_proto(opening.states) if opening.HasField("states") else None
    return SessionOpen(tuple(opening.prompt_ids), sampling_from_proto(opening.sampling), opening.max_new_tokens,
                       opening.request_id, states)


def tree_from_request(msg: SessionRequest) -> DraftTree:
    """The tree a TREE request carries; InvalidTreeError for a malformed one."""
    return tree_from_proto(msg.tree)


# --- responses: verifier -> drafter -------------------------------------------------------
def opened_response(opened: SessionOpened) -> SessionResponse:
    msg = SessionResponse(opened=verifier_pb2.SessionOpened(
        max_context=opened.max_context, max_tree_nodes=opened.max_tree_nodes,
        eos_token_ids=sorted(opened.eos_token_ids), prefill_ms=opened.prefill_time_s * 1e3,
        replica=opened.replica))
    if opened.states is not None:
        msg.opened.states.CopyFrom(states_to_proto(opened.states))
    return msg


def opened_from_response(msg: SessionResponse) -> SessionOpened:
    opened = msg.opened
    states = states_from_proto(opened.states) if opened.HasField("states") else None
    return SessionOpened(opened.max_context, opened.max_tree_nodes, frozenset(opened.eos_token_ids),
                         opened.prefill_ms / 1e3, opened.replica, states)


def verdict_response(verdict: Verdict, max_tree_nodes: int) -> SessionResponse:
    """A verdict with the node budget of the session's next tree (0: unchanged)."""
    msg = verdict_to_proto(verdict)
    msg.max_tree_nodes = max_tree_nodes
    return SessionResponse(verdict=msg)


def verdict_from_response(msg: SessionResponse) -> tuple[Verdict, int | None]:
    """The verdict and the node budget of the next tree (None: unchanged)."""
    return verdict_from_proto(msg.verdict), msg.verdict.max_tree_nodes or None
