"""The verifier codec: contract types survive the wire unchanged; malformed messages are refused
with INVALID_ARGUMENT."""

import pickle

import pytest

from core.contracts import NO_PARENT, DraftTree, InvalidTreeError, SessionOpen, SessionOpened, SparseDist, Verdict
from core.errors import Code, ServiceError
from core.sampling import SEED_MAX, SEED_MIN, SamplingParams
from core.states import StateRequest
from core import verifier_codec as codec
from protos.specroute.v1 import specroute_pb2, verifier_pb2


def wire(msg):
    """The message as the other side reads it: serialised and parsed again."""
    return type(msg).FromString(msg.SerializeToString())


TREES = {
    "root only": DraftTree.root_only(5),
    "greedy chain": DraftTree.chain(5, [6, 7, 8]),
    "deterministic chain": DraftTree.chain(5, [6, 7], deterministic=True),
    "sampled chain": DraftTree.chain(5, [6, 7], [SparseDist((6, 9), (0.75, 0.25)), SparseDist((7,), (1.0,))]),
    "sampled tree": DraftTree((5, 6, 9, 7), (NO_PARENT, 0, 0, 1),
                              (SparseDist((6, 9, 3), (0.5, 0.25, 0.25)), SparseDist((7, 8), (0.5, 0.5)), None, None)),
    "deterministic tree": DraftTree((5, 6, 9, 7), (NO_PARENT, 0, 0, 2), deterministic=True),
}


@pytest.mark.parametrize("name", TREES)
def test_trees_round_trip(name):
    tree = TREES[name]
    assert codec.tree_from_proto(wire(codec.tree_to_proto(tree))) == tree
    request = wire(codec.tree_request(tree))
    assert codec.request_kind(request) == codec.TREE
    assert codec.tree_from_request(request) == tree


@pytest.mark.parametrize("verdict, budget", [
    (Verdict((1, 2), (6, 7), 8, 3, 0.25), 12),
    (Verdict((), (), 4, 0), 0),
])
def test_verdicts_round_trip_with_the_next_tree_budget(verdict, budget):
    assert codec.verdict_from_proto(wire(codec.verdict_to_proto(verdict))) == verdict
    decoded, next_budget = codec.verdict_from_response(wire(codec.verdict_response(verdict, budget)))
    assert decoded == verdict
    assert next_budget == (budget or None), "0 on the wire: the budget is unchanged"


@pytest.mark.parametrize("params", [
    SamplingParams(),
    SamplingParams(temperature=0.7, top_p=0.9, top_k=40, seed=7),
    SamplingParams(temperature=1.0, seed=0),
    SamplingParams(temperature=1.0, seed=SEED_MIN),
    SamplingParams(temperature=1.0, seed=SEED_MAX),
    SamplingParams(temperature=1.0, seed=-1),
])
def test_sampling_round_trips_with_seeds_at_the_domains_ends(params):
    assert codec.sampling_from_proto(wire(codec.sampling_to_proto(params))) == params


def test_unset_sampling_fields_mean_greedy_top_p_1_and_no_seed():
    params = codec.sampling_from_proto(specroute_pb2.SamplingParams())
    assert params == SamplingParams(temperature=0.0, top_p=1.0, top_k=0, seed=None)
    assert codec.sampling_from_proto(specroute_pb2.SamplingParams(temperature=0.5, top_p=0)).top_p == 1.0
    assert codec.sampling_from_proto(specroute_pb2.SamplingParams(seed=0)).seed == 0, "a seed of 0 is a seed"


def test_opening_and_opened_round_trip():
    opening = SessionOpen((1, 2, 3), SamplingParams(temperature=0.5, seed=SEED_MAX), 17, "req-1")
    request = wire(codec.open_request(opening))
    assert codec.request_kind(request) == codec.OPEN
    assert codec.open_from_request(request) == opening
    opened = SessionOpened(max_context=160, max_tree_nodes=64, eos_token_ids=frozenset({2, 0}),
                           prefill_time_s=0.125, replica="v0")
    assert codec.opened_from_response(wire(codec.opened_response(opened))) == opened


@pytest.mark.parametrize("request_", [StateRequest(), StateRequest(layers=(0, 2, -1), dtype="float32", last_only=True)])
def test_state_requests_round_trip_with_last_only(request_):
    assert codec.state_request_from_proto(wire(codec.state_request_to_proto(request_))) == request_
    opening = SessionOpen((1, 2), states=request_)
    assert codec.open_from_request(wire(codec.open_request(opening))) == opening


def test_close_and_empty_requests():
    assert codec.request_kind(wire(codec.close_request())) == codec.CLOSE
    assert codec.request_kind(verifier_pb2.SessionRequest()) is None


@pytest.mark.parametrize("msg, words", [
    (verifier_pb2.Tree(tokens=[5, 6], parents=[-1, 0], dists=[verifier_pb2.DraftDist(token_ids=[6], probs=[1.0])]),
     "draft distributions"),
    (verifier_pb2.Tree(tokens=[5, 6], parents=[-1, 0],
                       dists=[verifier_pb2.DraftDist(token_ids=[6], probs=[0.5, 0.5]), verifier_pb2.DraftDist()]),
     "differ in length"),
])
def test_malformed_trees_are_invalid_argument(msg, words):
    with pytest.raises(InvalidTreeError, match=words) as err:
        codec.tree_from_proto(wire(msg))
    assert err.value.code is Code.INVALID_ARGUMENT
    assert err.value.message.startswith("invalid tree: ")
    with pytest.raises(InvalidTreeError, match=words):
        codec.tree_from_request(verifier_pb2.SessionRequest(tree=msg))


@pytest.mark.parametrize("fields, words", [
    ({"temperature": -1.0}, "sampling.temperature"),
    ({"temperature": float("nan")}, "sampling.temperature"),
    ({"temperature": 1.0, "top_p": 1.5}, "sampling.top_p"),
    ({"temperature": 1.0, "top_p": -0.5}, "sampling.top_p"),
    ({"top_k": -3}, "sampling.top_k"),
])
def test_bad_sampling_values_are_invalid_argument(fields, words):
    msg = specroute_pb2.SamplingParams(**fields)
    with pytest.raises(ServiceError, match=words) as err:
        codec.sampling_from_proto(msg)
    assert err.value.code is Code.INVALID_ARGUMENT
    request = verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(prompt_ids=[1], sampling=msg))
    with pytest.raises(ServiceError, match=words) as err:
        codec.open_from_request(request)
    assert err.value.code is Code.INVALID_ARGUMENT


def test_invalid_tree_error_pickles_as_itself():
    err = pickle.loads(pickle.dumps(InvalidTreeError("node 1: parent 2 must come before its child")))
    assert type(err) is InvalidTreeError and err.code is Code.INVALID_ARGUMENT
    assert err.message == "invalid tree: node 1: parent 2 must come before its child"
