"""Fuzzing the public gRPC and HTTP APIs and the internal verifier API of a running system.

Property-based (hypothesis), loopback only, bounded in count (and so in time): every answer is
OK or a defined status with a message that says something, never UNKNOWN or INTERNAL, never a
hang; afterwards a normal request still works and no verifier session is left open.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos.specroute.v1 import specroute_pb2 as pb
from protos.specroute.v1 import specroute_pb2_grpc as pb_grpc
from protos.specroute.v1 import verifier_pb2, verifier_pb2_grpc
from specroute.client import Client
from tests.polling import wait_for
from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration

DRAFTERS = ("generic-llama", "ngram")
# No DEADLINE_EXCEEDED: every call here ends its own stream, so a deadline would be a hang.
DEFINED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.FAILED_PRECONDITION}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "def f(x):", "\x00", "🙂" * 10, "a" * 300]))
# JSON may carry what protobuf cannot: lone surrogates (a 400 before any work).
json_texts = st.one_of(texts, st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-300, 1.0, -1.0, 2.0]))
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@pytest.fixture(scope="module")
def system(built_zoo):
    system = start_tiny_system(built_zoo, DRAFTERS, router={"max_new_tokens_limit": 32, "default_max_new_tokens": 8},
                               verifier={"max_sessions": 4})
    yield system
    system.stop()


@pytest.fixture(scope="module")
def stub(system):
    with grpc.insecure_channel(system.grpc_address) as channel:
        yield pb_grpc.SpecRouteStub(channel), (("application", system.config.app_name),)


def _open_sessions(system) -> int:
    from ray import serve
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    return sum(r["active_sessions"] for r in directory.replicas.remote().result(timeout_s=10))


def _verifier_address(system) -> str:
    from ray import serve
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    return directory.replicas.remote().result(timeout_s=10)[0]["address"]


def _assert_defined(err: grpc.RpcError) -> None:
    assert err.code() in DEFINED, (err.code(), err.details())
    assert err.details(), err.code()


requests = st.builds(
    pb.GenerateRequest,
    prompt=texts,
    max_new_tokens=st.one_of(st.none(), st.integers(min_value=-5, max_value=40), int32),
    sampling=st.builds(pb.SamplingParams, temperature=floats, top_p=floats, top_k=int32,
                       seed=st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))),
    stop=st.lists(texts, max_size=10),
    task=st.one_of(st.just(""), texts),
    drafter=st.one_of(st.just(""), st.sampled_from(DRAFTERS), texts),
    request_id=st.one_of(st.just(""), texts),
    single_response=st.booleans(),
)


@FUZZ
@given(request=requests)
def test_the_public_grpc_api_answers_every_message_with_a_defined_status(stub, request):
    stub, metadata = stub
    if request.HasField("max_new_tokens") and request.max_new_tokens > 8:
        request.max_new_tokens = 8  # bound the time: the status, not the length, is under test
    try:
        for message in stub.Generate(request, metadata=metadata, timeout=60):
            assert message.finish_reason in ("", "length", "eos", "stop", "context")
    except grpc.RpcError as err:
        _assert_defined(err)


@FUZZ
@given(raw=st.binary(max_size=64))
def test_the_public_grpc_api_answers_arbitrary_bytes(system, raw):
    with grpc.insecure_channel(system.grpc_address) as channel:
        generate = channel.unary_stream("/specroute.v1.SpecRoute/Generate")
        try:
            list(generate(raw, metadata=(("application", system.config.app_name),), timeout=60))
        except grpc.RpcError as err:
            _assert_defined(err)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     texts), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
bodies = st.fixed_dictionaries({}, optional={
    "prompt": st.one_of(json_texts, json_values), "max_tokens": st.one_of(st.integers(min_value=-3, max_value=8), json_values),
    "temperature": st.one_of(floats.filter(math.isfinite), json_values), "top_p": json_values, "seed": json_values,
    "top_k": st.one_of(st.integers(), json_values),
    "stop": json_values, "model": st.one_of(st.sampled_from(["specroute", *DRAFTERS]), json_texts),
    "stream": st.booleans(),
    "n": json_values, "task": json_values, "drafter": json_values, "extra": json_values})


@FUZZ
@given(body=st.one_of(bodies, json_values))
def test_the_http_api_answers_every_body_with_json(system, body):
    request = urllib.request.Request(system.http_url + "/v1/completions", data=json.dumps(body).encode(),
                                     method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    assert status in (200, 400, 429), (status, text)
    if status != 200:
        error = json.loads(text)["error"]
        assert error["message"] and error["code"] in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"), error


dists = st.builds(verifier_pb2.DraftDist, token_ids=st.lists(int32, max_size=4),
                  probs=st.lists(floats, max_size=4))
session_messages = st.lists(st.one_of(
    st.builds(lambda ids, t, k, n: verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(
        prompt_ids=ids, sampling=pb.SamplingParams(temperature=t, top_k=k), max_new_tokens=n)),
        st.lists(st.one_of(st.integers(min_value=0, max_value=300), int32), max_size=12), floats, int32, int32),
    st.builds(lambda tokens, parents, d, det: verifier_pb2.SessionRequest(tree=verifier_pb2.Tree(
        tokens=tokens, parents=parents, dists=d, deterministic=det)),
        st.lists(st.one_of(st.integers(min_value=0, max_value=300), int32), max_size=6),
        st.lists(st.integers(min_value=-2, max_value=6), max_size=6), st.lists(dists, max_size=6), st.booleans()),
    st.just(verifier_pb2.SessionRequest(close=verifier_pb2.CloseSession())),
    st.just(verifier_pb2.SessionRequest()),
), max_size=5)


@FUZZ
@given(messages=session_messages)
def test_the_internal_verifier_api_answers_every_stream(system, messages):
    with grpc.insecure_channel(_verifier_address(system)) as channel:
        try:
            for _ in verifier_pb2_grpc.VerifierStub(channel).Session(iter(messages), timeout=60):
                pass
        except grpc.RpcError as err:
            _assert_defined(err)


def test_afterwards_a_normal_request_works_and_capacity_is_whole(system):
    assert wait_for(lambda: _open_sessions(system) == 0, 15)
    with Client(system.grpc_address, timeout=60) as client:
        assert client.generate("def f(x):", max_new_tokens=6).metadata.num_generated == 6
    counts = system.replica_counts()
    assert counts["Verifier"] >= 1 and all(counts[f"Drafter-{d}"] == 1 for d in DRAFTERS)
