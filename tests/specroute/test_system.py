"""The whole system on a real local Ray cluster: Serve deployments, gRPC on loopback, real Redis.

One system serves the tiny zoo for the whole module (started once: Ray, Serve with its gRPC
proxy, the router, three drafters of different kinds, two verifier replicas, embedded Redis).
Through the SDK and the openai client: greedy output equals the target's own, streaming,
concurrent requests, every bad input, and replicas killed mid-stream. The Llama drafter drafts
ahead (guesses each verdict and drafts the next tree while the verifier works), so every greedy
check covers that path too.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from specroute import errors
from specroute.client import AsyncClient, Client
from tests.polling import wait_for
from tests.specroute.systems import served_drafters, start_tiny_system

pytestmark = pytest.mark.integration

DRAFTERS = ("generic-llama", "prose-gpt2", "ngram")
MAX_NEW = 24
KEY = "test-key"  # api_keys are on: every call below but the health check needs it


@pytest.fixture(scope="module")
def system(built_zoo):
    system = start_tiny_system(built_zoo, DRAFTERS, router={"max_new_tokens_limit": 256, "api_keys": [KEY]},
                               verifier={"deployment": {"num_replicas": 2, "num_cpus": 0.25}, "failover_timeout_s": 30},
                               drafter_options={"generic-llama": {"draft_ahead": 2}},
                               drafter_updates={"prose-gpt2": {"log_acceptance": True}})
    yield system
    system.stop()


@pytest.fixture(scope="module")
def client(system):
    with Client(system.grpc_address, api_key=KEY, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def prompts(built_zoo):
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import load_manifest
    tests = load_split(built_zoo / load_manifest(built_zoo)["corpus"]["files"]["test"])
    by_task = {}
    for ex in tests:
        by_task.setdefault(ex.task, ex.prompt)
    return list(by_task.values())


@pytest.fixture(scope="module")
def reference(built_zoo, prompts):
    """The target's own greedy output for each prompt (plain decoding, in process)."""
    from specroute.engine import Engine
    engine = Engine.load(built_zoo / "target", device="cpu")
    return {p: engine.generate(p, MAX_NEW).token_ids for p in prompts}


def _replica_actor(deployment: str, unique_id: str | None = None):
    import ray
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if name.startswith("SERVE_REPLICA::") and f"#{deployment}#" in name and (unique_id is None or
                                                                                 name.endswith(unique_id)):
            return ray.get_actor(name, namespace=entry["namespace"])
    raise LookupError(f"no replica of {deployment} {unique_id or ''}")


def _wait_running(system, timeout_s=120):
    from ray import serve
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app = serve.status().applications[system.config.app_name]
        if app.status == "RUNNING" and all(d.status == "HEALTHY" for d in app.deployments.values()):
            return
        time.sleep(0.5)
    raise TimeoutError("the app did not recover")


def _open_verifier_sessions(system) -> int:
    from ray import serve
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    return sum(r["active_sessions"] for r in directory.replicas.remote().result(timeout_s=10))


def _wait_sessions_closed(system, timeout_s: float) -> int:
    """Open verifier sessions once they reach 0 or timeout_s passes (the directory hears within a heartbeat)."""
    wait_for(lambda: not _open_verifier_sessions(system), timeout_s, every_s=0.2)
    return _open_verifier_sessions(system)


def _http(system, method: str, path: str, headers: dict | None = None, body: bytes | dict | None = None):
    """(status, parsed JSON body or text) of one HTTP request to the ingress, on loopback."""
    import json
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(system.http_url + path, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_health_and_drafters(client, built_zoo):
    from router.assign import GREEDY, RoutingTable
    assert client.health().serving
    listing = client.list_drafters()
    table = RoutingTable.load(built_zoo / "tasks")
    served = served_drafters(DRAFTERS)  # and `plain` (no drafting)
    assert {d.name for d in listing.drafters} == served
    assert listing.default_drafter == table.routes(GREEDY).default
    assert {d.kind for d in listing.drafters} == {"model", "ngram", "plain"}
    assert {d.family for d in listing.drafters if d.kind == "model"} == {"llama", "gpt2"}


@pytest.mark.parametrize("drafter", [None, *DRAFTERS, "plain"])
def test_greedy_through_the_sdk_equals_the_target(client, prompts, reference, drafter):
    drafted_ahead = {}
    for prompt in prompts:
        done = client.generate(prompt, max_new_tokens=MAX_NEW, drafter=drafter)
        assert done.token_ids == reference[prompt], (drafter, prompt)
        m = done.metadata
        assert m.drafter == (drafter or m.drafter) and m.rounds > 0 and m.tau >= 1.0
        assert m.num_generated == MAX_NEW == len(done.token_ids)
        assert m.route_source == ("drafter-override" if drafter else m.route_source)
        drafted_ahead[m.drafter] = drafted_ahead.get(m.drafter, 0) + m.rounds_drafted_ahead
    if drafter == "generic-llama":
        assert drafted_ahead[drafter] > 0, "some verdicts guessed while verifying should come true"
    elif drafter is not None:
        assert drafted_ahead[drafter] == 0, "only a drafter with draft_ahead drafts ahead"


def test_streaming_chunks_and_metadata(client, prompts, reference):
    chunks = list(client.stream(prompts[0], max_new_tokens=MAX_NEW))
    assert len(chunks) > 1
    assert chunks[0].metadata is not None and chunks[0].metadata.drafter
    assert chunks[-1].finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert [t for c in chunks for t in c.token_ids] == reference[prompts[0]]
    last = chunks[-1].metadata
    assert last.tau == pytest.approx(sum(c.round.num_emitted for c in chunks if c.round) / last.rounds)
    assert last.time_to_first_token_ms > 0 and last.total_ms >= last.time_to_first_token_ms
    assert client.classify(prompts[0]).drafter in DRAFTERS


def test_a_single_response_request_gets_one_message_with_every_round(system, prompts, reference):
    from protos.specroute.v1 import specroute_pb2 as pb
    from protos.specroute.v1 import specroute_pb2_grpc as pb_grpc
    request = pb.GenerateRequest(prompt=prompts[0], max_new_tokens=MAX_NEW, drafter="generic-llama",
                                 single_response=True)
    with grpc.insecure_channel(system.grpc_address) as channel:
        messages = list(pb_grpc.SpecRouteStub(channel).Generate(
            request, timeout=120, metadata=(("application", system.config.app_name), ("authorization", f"Bearer {KEY}"))))
    assert len(messages) == 1
    (only,) = messages
    assert list(only.token_ids) == reference[prompts[0]] and only.finish_reason == "length"
    assert only.metadata.rounds > 1 and only.round.rounds == only.metadata.rounds


def test_plain_samples_through_the_services_are_the_targets_own(client, built_zoo, prompts):
    """No drafts: every token is the verifier's own seeded draw, as in process without a drafter."""
    from specroute.engine import Engine
    from core.sampling import SamplingParams
    engine = Engine.load(built_zoo / "target", device="cpu")
    for seed in range(3):
        done = client.generate(prompts[seed], max_new_tokens=16, temperature=1.0, seed=seed, drafter="plain")
        own = engine.generate(prompts[seed], 16, sampling=SamplingParams(temperature=1.0, seed=seed))
        assert done.token_ids == own.token_ids and done.metadata.tau == 1.0


def test_sampling_with_a_seed_is_reproducible(client, prompts):
    a = client.generate(prompts[1], max_new_tokens=16, temperature=0.8, top_p=0.9, seed=3)
    b = client.generate(prompts[1], max_new_tokens=16, temperature=0.8, top_p=0.9, seed=3)
    assert a.token_ids == b.token_ids


def test_asyncio_client(system, prompts, reference):
    import asyncio

    async def run():
        async with AsyncClient(system.grpc_address, api_key=KEY, timeout=60) as c:
            done = await c.generate(prompts[2], max_new_tokens=MAX_NEW)
            streamed = [t async for chunk in c.stream(prompts[2], max_new_tokens=MAX_NEW) for t in chunk.token_ids]
            return done.token_ids, streamed
    done, streamed = asyncio.run(run())
    assert done == streamed == reference[prompts[2]]


def test_concurrent_requests(client, prompts, reference):
    jobs = [(p, d) for p in prompts for d in DRAFTERS][:12]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda job: client.generate(job[0], max_new_tokens=MAX_NEW, drafter=job[1]), jobs))
    for (prompt, _), done in zip(jobs, results):
        assert done.token_ids == reference[prompt]


def test_openai_client(system, prompts, reference, built_zoo):
    import openai
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(built_zoo / "target")
    api = openai.OpenAI(base_url=system.http_url + "/v1", api_key=KEY, max_retries=0)
    expected = tok.decode(reference[prompts[0]])
    done = api.completions.create(model="specroute", prompt=prompts[0], max_tokens=MAX_NEW, temperature=0)
    assert done.choices[0].text == expected and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == MAX_NEW
    pieces = api.completions.create(model="ngram", prompt=prompts[0], max_tokens=MAX_NEW, temperature=0, stream=True)
    assert "".join(p.choices[0].text for p in pieces) == expected
    assert {m.id for m in api.models.list()} == {"specroute", *served_drafters(DRAFTERS)}
    with pytest.raises(openai.BadRequestError, match="max_new_tokens"):
        api.completions.create(model="specroute", prompt=prompts[0], max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        api.completions.create(model="specroute", prompt=prompts[0], max_tokens=4, temperature=-1)


@pytest.mark.parametrize("kwargs, words", [
    ({"prompt": ""}, "empty"),
    ({"prompt": "   "}, "empty"),
    ({"prompt": "word " * 2000}, "context"),
    ({"prompt": "x" * 70_000}, "bytes"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -5}, "max_new_tokens"),
    ({"max_new_tokens": 10_000}, "max_new_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": 1.0, "top_p": 1.5}, "top_p"),
    ({"temperature": 1.0, "top_p": -0.1}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"task": "no-such-task"}, "unknown task"),
    ({"drafter": "no-such-drafter"}, "unknown drafter"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["s" * 300]}, "stop: 300 bytes; the limit is 256"),
    ({"request_id": "r" * (1 << 20)}, "request_id: 1048576 bytes"),
    ({"task": "t" * 1000}, "task: 1000 bytes"),
    ({"temperature": 1.0, "seed": 2**64}, "seed must be an integer"),  # refused by the SDK, as by the server
    ({"temperature": 1.0, "seed": -(2**63) - 1}, "seed must be an integer"),
])
def test_bad_input_is_invalid_argument(client, kwargs, words):
    kwargs = {"prompt": "def f(x):", "max_new_tokens": 8, **kwargs}
    with pytest.raises(errors.InvalidArgumentError, match=words):
        client.generate(kwargs.pop("prompt"), **kwargs)


def test_oversized_message_is_refused_before_any_work(client):
    # Ray Serve's gRPC proxy admits large messages; the router refuses them by size, before
    # tokenising. (Oversized messages on the internal API: tests/verifier_service/test_server.py.)
    with pytest.raises(errors.InvalidArgumentError, match="5242880 bytes; the limit is 65536"):
        client.generate("y" * (5 << 20), max_new_tokens=4)


def test_malformed_tree_on_the_internal_api(system, client):
    from ray import serve

    from protos.specroute.v1 import verifier_pb2, verifier_pb2_grpc
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    address = directory.replicas.remote().result(timeout_s=10)[0]["address"]
    with grpc.insecure_channel(address) as channel:
        stub = verifier_pb2_grpc.VerifierStub(channel)
        messages = [verifier_pb2.SessionRequest(open=verifier_pb2.OpenSession(prompt_ids=[5, 6])),
                    verifier_pb2.SessionRequest(tree=verifier_pb2.Tree(tokens=[6, 7, 8], parents=[-1, 5, 0]))]
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Session(iter(messages), timeout=30))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parent" in err.value.details()


def test_no_session_leaks_and_no_replica_died(system, client):
    assert client.generate("def f(x):", max_new_tokens=4).metadata.num_generated == 4
    assert _wait_sessions_closed(system, timeout_s=10) == 0
    counts = system.replica_counts()
    assert counts["Verifier"] == 2 and all(counts[f"Drafter-{d}"] == 1 for d in DRAFTERS)


def test_a_client_that_goes_away_frees_its_session(system, client, prompts):
    stream = client.stream(prompts[0], max_new_tokens=200)
    next(stream)
    stream.close()  # cancels the call
    assert _wait_sessions_closed(system, timeout_s=15) == 0


def test_verifier_replica_killed_mid_stream_resumes_elsewhere(system, client, built_zoo, prompts):
    import ray

    from specroute.engine import Engine
    long_new = 120
    expected = Engine.load(built_zoo / "target", device="cpu").generate(prompts[3], long_new).token_ids
    stream = client.stream(prompts[3], max_new_tokens=long_new, drafter="generic-llama")
    first = next(stream)
    replica = first.metadata.verifier_replica if first.metadata and first.metadata.verifier_replica else None
    victim = _replica_actor("Verifier", replica) if replica else _replica_actor("Verifier")
    ray.kill(victim, no_restart=False)
    rest = list(stream)
    tokens = [t for c in [first, *rest] for t in c.token_ids]
    assert tokens == expected
    assert rest[-1].finish_reason == "length"
    _wait_running(system)


def test_drafter_replica_killed_mid_stream_fails_retryably(system, client, prompts):
    import ray
    stream = client.stream(prompts[0], max_new_tokens=250, drafter="prose-gpt2")
    next(stream)
    ray.kill(_replica_actor("Drafter-prose-gpt2"), no_restart=False)
    start = time.monotonic()
    with pytest.raises(errors.UnavailableError) as err:
        for _ in stream:
            pass
    assert err.value.retryable and time.monotonic() - start < 60
    _wait_running(system)
    assert client.generate(prompts[0], max_new_tokens=8, drafter="prose-gpt2").metadata.num_generated == 8


def test_demo_requests_print_routing_and_text(client, built_zoo, capsys):
    from specroute.demo import demo_prompts, show_requests
    from specroute.zoo.manifest import load_manifest
    examples = demo_prompts(built_zoo, load_manifest(built_zoo), per_task=1)
    results = show_requests(client, examples, max_new_tokens=8)
    out = capsys.readouterr().out
    assert len(results) == len(examples) == 6
    served = served_drafters(DRAFTERS)  # `plain` too: the routing table may send a task there
    assert all(r.metadata.drafter in served and 0 < r.metadata.num_generated <= 8 for r in results), results
    assert out.count("\ntext:") == 6, out


def test_a_drafter_that_logs_acceptance_writes_every_node_to_the_query_logs_redis(client, system, prompts):
    """`log_acceptance`: the drafter service sends each round's drafted nodes, labelled by the verdict, to
    the stream `{prefix}:acceptance` of the system's Redis; drafters without it send nothing."""
    from drafter_service.acceptance_log import COLUMNS, read_redis_log
    url, prefix = system.config.redis.url, system.config.redis.prefix
    before = len(read_redis_log(url, prefix))
    done = client.generate(prompts[1], max_new_tokens=MAX_NEW, temperature=1.0, seed=3, drafter="prose-gpt2")
    entries = read_redis_log(url, prefix)[before:]
    assert entries and {e["drafter"] for e in entries} == {"prose-gpt2"}
    assert sum(len(e["depth"]) for e in entries) == done.metadata.num_drafted
    for e in entries:
        assert set(COLUMNS) <= set(e) and len(e["q"]) == 11 * len(e["depth"])
        assert all(a <= r for a, r in zip(e["accepted"], e["reached"])) and set(e["greedy"]) == {0}
    client.generate(prompts[1], max_new_tokens=MAX_NEW, drafter="generic-llama")
    assert {e["drafter"] for e in read_redis_log(url, prefix)[before:]} == {"prose-gpt2"}


def test_sampled_generation_with_a_model_drafter_on_every_task(client, prompts):
    """A regression: sampling with a model drafter crashed (an empty tree level) as soon as the
    verifier's per-session node budget fell."""
    for i, prompt in enumerate(prompts):
        done = client.generate(prompt, max_new_tokens=MAX_NEW, temperature=1.0, seed=i, drafter="generic-llama")
        assert done.metadata.num_generated == MAX_NEW or done.finish_reason != "length"


def test_seeds_across_their_whole_domain_and_vanishing_sampling_values(client, system, prompts, reference):
    for seed in (0, 2**63, 2**64 - 1):  # the proto's uint64, top values included
        a = client.generate(prompts[1], max_new_tokens=8, temperature=1.0, seed=seed, drafter="generic-llama")
        b = client.generate(prompts[1], max_new_tokens=8, temperature=1.0, seed=seed, drafter="generic-llama")
        assert a.token_ids == b.token_ids
    tiny = client.generate(prompts[0], max_new_tokens=MAX_NEW, temperature=1e-40, seed=1)
    assert tiny.token_ids == reference[prompts[0]]  # below the float32-safe floor: greedy
    assert client.generate(prompts[0], max_new_tokens=8, temperature=1.0, top_p=1e-46, seed=1).metadata.num_generated
    headers = {"authorization": f"Bearer {KEY}"}
    body = {"prompt": prompts[0], "max_tokens": 4, "temperature": 1.0}
    assert _http(system, "POST", "/v1/completions", headers, {**body, "seed": -1})[0] == 200  # the openai client's kind
    status, answer = _http(system, "POST", "/v1/completions", headers, {**body, "seed": 2**64})
    assert status == 400 and "seed" in answer["error"]["message"]


def test_a_seeded_request_is_reproducible_through_the_router(client, prompts):
    """The router explores other drafters on some traffic; never on a seeded request."""
    texts = {client.generate(prompts[2], max_new_tokens=12, temperature=1.0, seed=11).text for _ in range(12)}
    assert len(texts) == 1


def test_malformed_json_text_is_a_json_400_before_any_work(system):
    for raw in ('{"prompt": "a\\ud800b", "max_tokens": 4}', '{"prompt": "ab", "model": "\\udfff", "max_tokens": 4}',
                '{"prompt": "ab", "max_tokens": 4, "stop": ["\\ud800"]}'):
        status, answer = _http(system, "POST", "/v1/completions", {"authorization": f"Bearer {KEY}"}, raw.encode())
        assert status == 400 and "surrogate" in answer["error"]["message"], (raw, answer)


def test_every_endpoint_but_health_needs_the_key_before_anything_else(system):
    assert _http(system, "GET", "/healthz")[0] == 200
    for method, path, body in [("GET", "/v1/models", None), ("GET", "/docs", None), ("GET", "/openapi.json", None),
                               ("POST", "/v1/completions", {"max_tokens": "not a number"}), ("GET", "/no/such", None)]:
        for headers in ({}, {"authorization": "Bearer wrong"}):
            status, answer = _http(system, method, path, headers, body)
            assert status == 401 and answer["error"]["code"] == "UNAUTHENTICATED", (path, answer)
    good = {"authorization": f"Bearer {KEY}"}
    assert _http(system, "GET", "/v1/models", good)[0] == 200
    assert _http(system, "POST", "/v1/completions", good, {"max_tokens": "x"})[0] == 400
    with Client(system.grpc_address, timeout=60) as anonymous:
        with pytest.raises(errors.UnauthenticatedError):
            anonymous.generate("def f(x):", max_new_tokens=4)


def test_malformed_protobuf_on_the_public_api_is_invalid_argument(system):
    with grpc.insecure_channel(system.grpc_address) as channel:
        generate = channel.unary_stream("/specroute.v1.SpecRoute/Generate")  # raw bytes, no serializer
        metadata = (("authorization", f"Bearer {KEY}"), ("application", system.config.app_name))
        for raw in (b"\xff\xff\xff", b"\x0a\x05ab"):  # a bad tag; a string field cut short
            with pytest.raises(grpc.RpcError) as err:
                list(generate(raw, metadata=metadata, timeout=60))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "not a valid" in err.value.details()
    assert _wait_sessions_closed(system, timeout_s=10) == 0
