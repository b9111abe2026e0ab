"""Contract types <-> protobuf messages, for the gRPC verifier API (`protos/specroute/v1`).

Conversion only: a `DraftTree` becomes a `Tree` message and back, a `Verdict` likewise, and
`SamplingParams` to and from its message. Decoding a tree from the wire checks nothing beyond
what is needed to rebuild it; the verifier session validates it as it would any tree. Malformed
fields (a distribution list of the wrong length, token and probability lists of different
lengths) raise `InvalidTreeError`, so a bad message is refused like a bad tree.

This module knows nothing about sessions, servers or models.
"""

from __future__ import annotations

from protos.specroute.v1 import specroute_pb2, verifier_pb2
from core.contracts import DraftTree, InvalidTreeError, SparseDist, Verdict
from core.sampling import SamplingParams, checked_sampling


def sampling_to_proto(params: SamplingParams) -> specroute_pb2.SamplingParams:
    msg = specroute_pb2.SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    if params.seed is not None:
        msg.seed = params.seed
    return msg


def sampling_from_proto(msg: specroute_pb2.SamplingParams) -> SamplingParams:
    """Raises ValueError with the offending field's rule when a value is out of range.

    An unset top_p (0 on the wire) means 1.
    """
    try:
        return checked_sampling(temperature=msg.temperature, top_p=msg.top_p if msg.top_p != 0 else 1.0,
                                top_k=msg.top_k, seed=msg.seed if msg.HasField("seed") else None)
    except ValueError as err:
        raise ValueError(f"sampling.{err}") from None


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
    dists = None
    if len(msg.dists):
        if len(msg.dists) != len(msg.tokens):
            raise InvalidTreeError(f"tree has {len(msg.tokens)} nodes but {len(msg.dists)} draft distributions")
        dists = []
        for entry in msg.dists:
            if len(entry.token_ids) != len(entry.probs):
                raise InvalidTreeError("draft distribution: token_ids and probs differ in length")
            dists.append(SparseDist(tuple(entry.token_ids), tuple(entry.probs)) if len(entry.token_ids) else None)
        dists = tuple(dists)
    return DraftTree(tuple(msg.tokens), tuple(msg.parents), dists, msg.deterministic)


def verdict_to_proto(verdict: Verdict) -> verifier_pb2.Verdict:
    return verifier_pb2.Verdict(accepted_nodes=verdict.accepted_nodes, accepted_tokens=verdict.accepted_tokens,
                                bonus_token=verdict.bonus_token, num_drafted=verdict.num_drafted,
                                verify_ms=verdict.verify_time_s * 1e3)


def verdict_from_proto(msg: verifier_pb2.Verdict) -> Verdict:
    return Verdict(tuple(msg.accepted_nodes), tuple(msg.accepted_tokens), msg.bonus_token, msg.num_drafted,
                   msg.verify_ms / 1e3)
