"""The public API's codec: every message it converts survives a round trip, in the wire's units."""

from dataclasses import fields

import pytest

from core import public_codec as codec
from core.api import (Classification, DrafterInfo, DrafterList, GenerateParams, Health, Metadata, RequestStatus,
                      RoundInfo)
from core.reports import GenerationReport, RoundReport


@pytest.mark.parametrize("params", [
    GenerateParams(prompt="def f(x):", request_id="r1"),
    GenerateParams(prompt="héllo", max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=40, seed=0,
                   stop=("\n", "END"), task="code", drafter="d", request_id="r2", stream=False),
    GenerateParams(prompt="x", seed=2**64 - 1, request_id="r3"),
])
def test_generate_request_round_trip(params):
    message = codec.generate_request_to_proto(params)
    back = codec.generate_request_from_proto(type(message).FromString(message.SerializeToString()))
    expected = {**params.__dict__, "task": params.task or "", "drafter": params.drafter or ""}
    assert back.__dict__ == expected
    assert message.single_response is (not params.stream)
    assert message.HasField("max_new_tokens") is (params.max_new_tokens is not None)


def test_a_negative_seed_travels_as_its_uint64_and_an_out_of_range_one_is_refused():
    assert codec.generate_request_to_proto(GenerateParams("x", seed=-1)).sampling.seed == 2**64 - 1
    with pytest.raises(ValueError, match="seed"):
        codec.generate_request_to_proto(GenerateParams("x", seed=2**64))


def test_an_unset_top_p_means_one():
    message = codec.generate_request_to_proto(GenerateParams("x"))
    message.sampling.ClearField("top_p")
    assert codec.generate_request_from_proto(message).top_p == 1.0
    assert codec.top_p_from_wire(0.0) == 1.0 and codec.top_p_from_wire(0.5) == 0.5


def test_classify_request_round_trip():
    message = codec.classify_request_to_proto("SELECT 1", "sql", None)
    assert codec.classify_request_from_proto(message) == ("SELECT 1", "sql", "")


def test_a_round_travels_in_milliseconds():
    report = RoundReport(rounds=2, num_drafted=6, num_accepted=3, num_emitted=5, draft_time_s=0.002,
                         verify_time_s=0.004, rounds_drafted_ahead=1)
    info = codec.round_from_proto(codec.round_to_proto(report))
    assert info == RoundInfo(num_drafted=6, num_accepted=3, num_emitted=5, draft_ms=pytest.approx(2.0),
                             verify_ms=pytest.approx(4.0), rounds=2)


def test_metadata_carries_routing_first_and_the_report_at_the_end():
    routed = RequestStatus("r", "code", "d", 0.8, "classifier", "v0")
    first = codec.metadata_from_proto(codec.metadata_to_proto(routed))
    assert first == Metadata(request_id="r", task="code", drafter="d", confidence=0.8, route_source="classifier",
                             verifier_replica="v0")
    report = GenerationReport(rounds=4, num_drafted=12, num_accepted=6, num_emitted=10, draft_time_s=0.01,
                              verify_time_s=0.03, num_generated=9, wall_time_s=0.05, prefill_time_s=0.02,
                              prompt_tokens=7, rounds_drafted_ahead=2)
    done = RequestStatus("r", "code", "d", 0.8, "classifier", "v0", time_to_first_token_s=0.025, total_s=0.1,
                         report=report)
    fields_sent = codec.metadata_fields(done)
    last = codec.metadata_from_proto(codec.metadata_to_proto(done))
    assert set(fields_sent) == {f.name for f in fields(Metadata)}
    assert (last.tau, last.rounds, last.num_drafted, last.num_accepted, last.num_generated, last.prompt_tokens,
            last.rounds_drafted_ahead) == (2.5, 4, 12, 6, 9, 7, 2)
    assert (last.prefill_ms, last.draft_ms, last.verify_ms, last.time_to_first_token_ms, last.total_ms) == \
        pytest.approx((20.0, 10.0, 30.0, 25.0, 100.0))
    assert last.tokens_per_s == pytest.approx(9 / 0.05)
    assert "time_to_first_token_ms" not in codec.metadata_fields(routed) and "tau" not in codec.metadata_fields(routed)


def test_generate_response_round_trip():
    status = RequestStatus("r", "", "d", 0.0, "low-confidence")
    message = codec.generate_response_to_proto("ab", (1, 2), "eos", RoundReport(num_emitted=2), status)
    chunk = codec.stream_chunk_from_proto(type(message).FromString(message.SerializeToString()))
    assert (chunk.text, chunk.token_ids, chunk.finish_reason) == ("ab", [1, 2], "eos")
    assert chunk.round == RoundInfo(num_emitted=2) and chunk.metadata.drafter == "d"
    middle = codec.stream_chunk_from_proto(codec.generate_response_to_proto("c", [3], None))
    assert (middle.finish_reason, middle.round, middle.metadata) == (None, None, None)


def test_unary_responses_round_trip():
    c = Classification("sql", "d", 0.75, "task-override")
    assert codec.classification_from_proto(codec.classification_to_proto(c)) == c
    drafters = [DrafterInfo("a", "model", "llama", 10**6, "code", ["code", "sql"]), DrafterInfo("n", "ngram")]
    listing = DrafterList(drafters, "n", ["code", "sql"], "tiny-target")
    assert codec.drafter_list_from_proto(codec.drafter_list_to_proto(listing)) == listing
    for status in ("UNKNOWN", "SERVING", "NOT_SERVING"):
        health = Health(status, 2, "specroute.v1")
        assert codec.health_from_proto(codec.health_to_proto(health)) == health


def test_the_service_names_every_message_the_codec_knows():
    for method in codec.SERVICE.methods:
        assert codec.message_class(method.input_type.name).DESCRIPTOR.full_name == method.input_type.full_name
        assert codec.message_class(method.output_type.name).DESCRIPTOR.full_name == method.output_type.full_name
