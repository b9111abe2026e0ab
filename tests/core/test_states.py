"""Hidden states as they travel: the request's checks, packing, and the codec's round trip."""

from __future__ import annotations

import pytest
import torch

from core import verifier_codec as codec
from core.contracts import SessionOpen, SessionOpened, Verdict
from core.errors import Code
from core.sampling import SamplingParams
from core.states import HiddenStates, InvalidStateRequestError, StateRequest
from protos.specroute.v1 import verifier_pb2


def test_layers_resolve_from_either_end():
    assert StateRequest().resolve(16) == (16,), "the default is the last layer, before the final norm"
    assert StateRequest(layers=(0, 8, -1)).resolve(16) == (0, 8, 16)
    assert StateRequest(layers=(-17,)).resolve(16) == (0,)


@pytest.mark.parametrize("request_, words", [
    (StateRequest(layers=(17,)), "layer 17 does not exist"),
    (StateRequest(layers=(-18,)), "layer -18 does not exist"),
    (StateRequest(layers=()), "names no layer"),
    (StateRequest(layers=(3, -14)), "one layer twice"),
    (StateRequest(dtype="int8"), "dtype 'int8' is not offered"),
])
def test_bad_requests_are_invalid_argument(request_, words):
    with pytest.raises(InvalidStateRequestError, match=words) as err:
        request_.resolve(16)
    assert err.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("dtype, tolerance", [("float32", 0.0), ("float16", 1e-3), ("bfloat16", 1e-2)])
def test_pack_and_unpack(dtype, tolerance):
    values = torch.randn(5, 2, 8)
    packed = HiddenStates.pack(values, dtype)
    assert (packed.rows, packed.layers, packed.hidden) == (5, 2, 8)
    assert torch.allclose(packed.tensor(), values, rtol=tolerance, atol=tolerance)
    assert torch.equal(packed.select([3, 0]).tensor(), packed.tensor()[[3, 0]])
    joined = packed.concat(packed.select([1]))
    assert joined.rows == 6 and torch.equal(joined.tensor()[5], packed.tensor()[1])


def test_bytes_must_match_the_shape():
    with pytest.raises(InvalidStateRequestError, match="needs 64"):
        HiddenStates(b"\0" * 10, rows=2, layers=1, hidden=16, dtype="float16")


def test_codec_round_trip_and_nothing_on_the_wire_when_not_asked():
    states = HiddenStates.pack(torch.randn(3, 1, 4))
    verdict = Verdict((1, 2), (7, 8), 9, 4, 0.001, states)
    back, _ = codec.verdict_from_response(codec.verdict_response(verdict, 0))
    assert back == verdict
    plain = Verdict((1,), (7,), 9, 4)
    message = codec.verdict_response(plain, 0)
    assert not message.verdict.HasField("states") and codec.verdict_from_response(message)[0].states is None
    assert message.ByteSize() == codec.verdict_response(Verdict((1,), (7,), 9, 4), 0).ByteSize()

    opening = SessionOpen((1, 2, 3), states=StateRequest(layers=(2, -1), dtype="bfloat16"))
    assert codec.open_from_request(codec.open_request(opening)) == opening
    assert codec.open_from_request(codec.open_request(SessionOpen((1, 2)))).states is None

    opened = SessionOpened(64, 16, frozenset({0}), 0.01, "v0", states)
    assert codec.opened_from_response(codec.opened_response(opened)) == opened


def test_last_only_keeps_the_last_row_of_each_message():
    assert StateRequest().last_rows([0, 3, 4]) == [0, 3, 4], "the default: every row"
    assert StateRequest(last_only=True).last_rows([0, 3, 4]) == [4]
    assert StateRequest(last_only=True).last_rows([0]) == [0], "nothing accepted: the root's row"
    assert StateRequest(last_only=True).last_rows([]) == [], "an empty prefill: no row"


def test_codec_carries_last_only_and_the_default_adds_no_byte():
    opening = SessionOpen((1, 2, 3), states=StateRequest(layers=(0, 1, -1), dtype="float32", last_only=True))
    message = codec.open_request(opening)
    assert message.open.states.last_only
    assert codec.open_from_request(type(message).FromString(message.SerializeToString())) == opening
    default = codec.open_request(SessionOpen((1, 2, 3), states=StateRequest(layers=(0, 1, -1), dtype="float32")))
    assert codec.open_from_request(default).states.last_only is False
    without_field = codec.SessionRequest(open=verifier_pb2.OpenSession(
        prompt_ids=(1, 2, 3), sampling=codec.sampling_to_proto(SamplingParams()),
        states=verifier_pb2.StateRequest(layers=(0, 1, -1), dtype="float32")))
    assert default.SerializeToString() == without_field.SerializeToString(), "default off: the same bytes as before"
    assert message.ByteSize() == default.ByteSize() + 2, "on: one tag byte and one value byte"


def test_an_empty_state_request_on_the_wire_means_the_defaults():
    message = codec.open_request(SessionOpen((1, 2), states=StateRequest()))
    message.open.states.ClearField("layers")
    message.open.states.dtype = ""
    assert codec.open_from_request(message).states == StateRequest((-1,), "float16")


def test_malformed_states_on_the_wire_are_invalid_argument():
    message = codec.verdict_response(Verdict((), (), 9, 0, states=HiddenStates.pack(torch.randn(2, 1, 4))), 0)
    message.verdict.states.rows = 3
    with pytest.raises(InvalidStateRequestError) as err:
        codec.verdict_from_response(message)
    assert err.value.code is Code.INVALID_ARGUMENT
