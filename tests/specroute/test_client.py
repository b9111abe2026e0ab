"""The client SDK against a real gRPC server on loopback, with a fake SpecRoute servicer.

The fake's behaviour is chosen by the prompt:
    "a b c"           echoes the words, one chunk each (metadata on the first and the last chunk)
    ""                INVALID_ARGUMENT (like the real server; the client must not check it itself)
    "!code:NAME"      aborts with StatusCode.NAME before any output
    "!flaky:N"        UNAVAILABLE for the first N attempts of a request (per request_id / prompt)
    "!midstream"      one chunk, then UNAVAILABLE
    "!sleep:S"        waits S seconds (or until the call ends), then echoes
    "!slowstream"     a chunk every 20 ms for 3 s; sets `client_gone` when the call ends
"""

from __future__ import annotations

import asyncio
import collections
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import fields
from pathlib import Path

import grpc
import pytest

from protos.specroute.v1 import specroute_pb2 as pb
from protos.specroute.v1 import specroute_pb2_grpc as pb_grpc
from specroute import errors
from specroute.client import (AsyncClient, Classification, Client, Completion, Metadata, RoundInfo, StreamChunk,
                              _Attempts)

REPO = Path(__file__).resolve().parents[2]


class FakeSpecRoute(pb_grpc.SpecRouteServicer):
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.requests: dict[str, list[pb.GenerateRequest]] = collections.defaultdict(list)
        self.metadata: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.client_gone = threading.Event()

    def _record(self, key: str, context) -> int:
        with self.lock:
            self.attempts[key] += 1
            self.metadata[key].append(dict(context.invocation_metadata()))
            return self.attempts[key]

    @staticmethod
    def _misbehave(prompt: str, attempt: int, context) -> None:
        """The prompt-selected failures that happen before any output."""
        if prompt == "":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt must not be empty")
        if prompt.startswith("!code:"):
            context.abort(grpc.StatusCode[prompt.split(":")[1]], f"fake {prompt}")
        if prompt.startswith("!flaky:") and attempt <= int(prompt.split(":")[1]):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"warming up (attempt {attempt})")
        if prompt.startswith("!sleep:"):
            end = time.monotonic() + float(prompt.split(":")[1])
            while time.monotonic() < end and context.is_active():
                time.sleep(0.01)

    def Generate(self, request, context):
        with self.lock:
            self.requests[request.request_id].append(request)
        attempt = self._record(request.request_id, context)
        self._misbehave(request.prompt, attempt, context)
        if request.prompt == "!midstream":
            yield pb.GenerateResponse(text="partial", token_ids=[1])
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica lost")
        if request.prompt == "!slowstream":  # takes 3 s unless the client goes away
            context.add_callback(self.client_gone.set)
            for i in range(150):
                if not context.is_active():
                    return
                yield pb.GenerateResponse(text=f"{i} ", token_ids=[i])
                time.sleep(0.02)
            return
        words = request.prompt.split() if not request.prompt.startswith("!") else ["ok", "done"]
        limit = request.max_new_tokens if request.HasField("max_new_tokens") else len(words)
        words = words[:limit]
        for i, word in enumerate(words):
            response = pb.GenerateResponse(text=(" " if i else "") + word, token_ids=[100 + i],
                                           round=pb.RoundInfo(num_drafted=3, rounds=1, num_accepted=i % 2,
                                                              num_emitted=i % 2 + 1, draft_ms=0.5, verify_ms=1.5))
            if i == 0:  # the routing fields
                response.metadata.MergeFrom(pb.RequestMetadata(
                    request_id=request.request_id, task=request.task or "echo", drafter=request.drafter or "ngram",
                    confidence=0.9, route_source="classifier"))
            if i == len(words) - 1:  # everything else (the routing fields task/confidence left unset here)
                response.metadata.MergeFrom(pb.RequestMetadata(
                    request_id=request.request_id, drafter=request.drafter or "ngram", tau=1.5, rounds=len(words),
                    num_generated=len(words), prompt_tokens=7, total_ms=12.5, tokens_per_s=80.0,
                    verifier_replica="replica-0"))
                response.finish_reason = "length" if request.HasField("max_new_tokens") else "eos"
            yield response

    def Classify(self, request, context):
        attempt = self._record(f"classify:{request.prompt}", context)
        self._misbehave(request.prompt, attempt, context)
        return pb.ClassifyResponse(task=request.task or "code", drafter=request.drafter or "code-drafter",
                                   confidence=0.75, route_source="task-override" if request.task else "classifier")

    def ListDrafters(self, request, context):
        self._record("list_drafters", context)
        return pb.ListDraftersResponse(
            drafters=[pb.DrafterInfo(name="code-drafter", kind="model", family="llama", params=1_000_000,
                                     specialised_for="code", serves_tasks=["code", "sql"]),
                      pb.DrafterInfo(name="ngram", kind="ngram")],
            default_drafter="ngram", tasks=["code", "sql", "chat"], target="tiny-target")

    def Health(self, request, context):
        self._record("health", context)
        return pb.HealthResponse(status=pb.HealthResponse.SERVING, verifier_replicas=2, version="test-1")


@pytest.fixture(scope="module")
def server():
    fake = FakeSpecRoute()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_SpecRouteServicer_to_server(fake, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    fake.address = f"127.0.0.1:{port}"
    yield fake
    grpc_server.stop(0)


@pytest.fixture
def client(server):
    with Client(server.address, retry_backoff_s=0.01) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# generate / stream
# ---------------------------------------------------------------------------------------------

def test_generate_drains_the_stream_and_merges_metadata(client):
    done = client.generate("the quick brown fox", request_id="gen-1")
    assert isinstance(done, Completion)
    assert done.text == "the quick brown fox"
    assert done.token_ids == [100, 101, 102, 103]
    assert done.finish_reason == "eos"
    md = done.metadata
    # Routing fields from the first chunk survive; the last chunk's stats are added.
    assert (md.request_id, md.task, md.drafter, md.confidence, md.route_source) == \
        ("gen-1", "echo", "ngram", 0.9, "classifier")
    assert (md.tau, md.rounds, md.num_generated, md.prompt_tokens, md.total_ms, md.verifier_replica) == \
        (1.5, 4, 4, 7, 12.5, "replica-0")


def test_stream_yields_chunks_with_metadata_on_first_and_last(client):
    chunks = list(client.stream("one two three", max_new_tokens=2))
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert [c.text for c in chunks] == ["one", " two"]
    assert [c.finish_reason for c in chunks] == [None, "length"]
    assert chunks[0].metadata.task == "echo" and chunks[0].metadata.tau == 0.0
    assert chunks[-1].metadata.tau == 1.5 and chunks[-1].metadata.task == ""
    assert chunks[1].round == RoundInfo(num_drafted=3, num_accepted=1, num_emitted=2, draft_ms=0.5, verify_ms=1.5, rounds=1)


def test_stream_middle_chunks_have_no_metadata(client):
    chunks = list(client.stream("a b c"))
    assert chunks[1].metadata is None and chunks[1].finish_reason is None


def test_request_is_built_from_the_arguments(client, server):
    client.generate("x y", request_id="req-defaults")
    sent = server.requests["req-defaults"][-1]
    assert not sent.HasField("max_new_tokens") and not sent.sampling.HasField("seed")
    assert (sent.sampling.temperature, sent.sampling.top_p, sent.sampling.top_k) == (0.0, 1.0, 0)
    assert (list(sent.stop), sent.task, sent.drafter) == ([], "", "")

    client.generate("x y", max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=40, seed=0, stop=["\n", "END"],
                    task="code", drafter="code-drafter", request_id="req-full")
    sent = server.requests["req-full"][-1]
    assert sent.HasField("max_new_tokens") and sent.max_new_tokens == 5
    assert sent.sampling.HasField("seed") and sent.sampling.seed == 0
    assert (sent.sampling.temperature, sent.sampling.top_p, sent.sampling.top_k) == (0.7, 0.9, 40)
    assert (list(sent.stop), sent.task, sent.drafter) == (["\n", "END"], "code", "code-drafter")


def test_generate_asks_for_a_single_response_and_stream_does_not(client, server):
    client.generate("x y", request_id="req-single")
    list(client.stream("x y", request_id="req-streamed"))
    assert server.requests["req-single"][-1].single_response
    assert not server.requests["req-streamed"][-1].single_response


def test_request_id_defaults_to_a_fresh_uuid(client):
    first, second = client.generate("a").metadata.request_id, client.generate("a").metadata.request_id
    assert first != second and len(first) == 32 and int(first, 16) >= 0


def test_empty_prompt_is_left_to_the_server(client, server):
    with pytest.raises(errors.InvalidArgumentError, match="must not be empty"):
        client.generate("", request_id="req-empty")
    assert server.attempts["req-empty"] == 1


def test_breaking_out_of_a_stream_cancels_it_on_the_server(client, server):
    server.client_gone.clear()
    chunks = client.stream("!slowstream")
    assert next(chunks).text == "0 "
    chunks.close()
    assert server.client_gone.wait(2.0)


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------

def test_metadata_mirrors_the_proto():
    assert [f.name for f in fields(Metadata)] == [f.name for f in pb.RequestMetadata.DESCRIPTOR.fields]
    assert [f.name for f in fields(RoundInfo)] == [f.name for f in pb.RoundInfo.DESCRIPTOR.fields]


def test_metadata_merge_later_non_default_fields_win():
    first = Metadata(request_id="r", task="code", confidence=0.8, drafter="a")
    last = Metadata(request_id="r", drafter="b", tau=2.5, rounds=3)
    merged = first.merged(last)
    assert (merged.task, merged.confidence, merged.drafter, merged.tau, merged.rounds) == ("code", 0.8, "b", 2.5, 3)
    assert first.merged(None) is first


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

MAPPED = {
    "INVALID_ARGUMENT": errors.InvalidArgumentError,
    "RESOURCE_EXHAUSTED": errors.ResourceExhaustedError,
    "UNAVAILABLE": errors.UnavailableError,
    "DEADLINE_EXCEEDED": errors.DeadlineExceededError,
    "NOT_FOUND": errors.NotFoundError,
    "CANCELLED": errors.RequestCancelledError,
    "UNAUTHENTICATED": errors.UnauthenticatedError,
    "PERMISSION_DENIED": errors.PermissionDeniedError,
    "FAILED_PRECONDITION": errors.FailedPreconditionError,
    "INTERNAL": errors.InternalError,
    "ABORTED": errors.SpecrouteError,
    "DATA_LOSS": errors.SpecrouteError,
}


@pytest.mark.parametrize("name", sorted(MAPPED))
def test_status_codes_map_to_typed_errors(server, name):
    with Client(server.address, max_retries=0) as c:
        for call in (lambda: c.generate(f"!code:{name}"), lambda: c.classify(f"!code:{name}")):
            with pytest.raises(errors.SpecrouteError) as info:
                call()
            err = info.value
            assert type(err) is MAPPED[name]
            assert err.code is grpc.StatusCode[name]
            assert err.details == f"fake !code:{name}"
            assert err.retryable is (name == "UNAVAILABLE")
            assert str(err) == f"{name}: fake !code:{name}"
            assert isinstance(err.__cause__, grpc.RpcError)


def test_from_rpc_error_without_a_status():
    err = errors.from_rpc_error(grpc.RpcError("socket closed"))
    assert type(err) is errors.SpecrouteError and err.code is grpc.StatusCode.UNKNOWN
    assert "socket closed" in str(err)


# ---------------------------------------------------------------------------------------------
# Retries and deadlines
# ---------------------------------------------------------------------------------------------

def test_generate_retries_unavailable_before_the_first_chunk(client, server):
    done = client.generate("!flaky:2", request_id="flaky-ok")
    assert done.text == "ok done"
    assert server.attempts["flaky-ok"] == 3
    assert {r.request_id for r in server.requests["flaky-ok"]} == {"flaky-ok"}


def test_default_request_id_is_kept_across_retries(client, server):
    done = client.generate("!flaky:1")
    assert server.attempts[done.metadata.request_id] == 2


def test_retries_stop_after_max_retries(server):
    with Client(server.address, max_retries=2, retry_backoff_s=0.01) as c:
        with pytest.raises(errors.UnavailableError, match="attempt 3"):
            c.generate("!flaky:10", request_id="flaky-exhausted")
    assert server.attempts["flaky-exhausted"] == 3


def test_no_retry_after_the_first_chunk(client, server):
    chunks = client.stream("!midstream", request_id="mid-stream")
    assert next(chunks).text == "partial"
    with pytest.raises(errors.UnavailableError, match="replica lost"):
        next(chunks)
    with pytest.raises(errors.UnavailableError):
        client.generate("!midstream", request_id="mid-generate")
    assert server.attempts["mid-stream"] == 1 and server.attempts["mid-generate"] == 1


def test_unary_calls_retry_unavailable(client, server):
    assert client.classify("!flaky:2") == Classification("code", "code-drafter", 0.75, "classifier")
    assert server.attempts["classify:!flaky:2"] == 3


def test_deadline_exceeded(server):
    with Client(server.address, timeout=0.2) as c:
        start = time.monotonic()
        with pytest.raises(errors.DeadlineExceededError):
            c.generate("!sleep:3")
        with pytest.raises(errors.DeadlineExceededError):
            c.classify("!sleep:3", timeout=0.1)
        assert time.monotonic() - start < 1.5


def test_an_expired_deadline_fails_without_a_call(client, server):
    # gRPC would read a timeout of 0 as "no deadline"; the client must not.
    with pytest.raises(errors.DeadlineExceededError):
        client.health(timeout=0)
    with pytest.raises(errors.DeadlineExceededError):
        client.generate("a", timeout=0, request_id="expired")
    assert server.attempts["expired"] == 0


def test_the_deadline_covers_retries(server):
    with Client(server.address, retry_backoff_s=0.2, max_retries=5) as c:
        start = time.monotonic()
        with pytest.raises(errors.UnavailableError):
            c.generate("!flaky:100", request_id="flaky-deadline", timeout=0.35)
        # attempt at 0 s, wait 0.2 s, attempt at 0.2 s; a 0.4 s wait would pass the deadline: stop.
        assert time.monotonic() - start < 0.35
    assert server.attempts["flaky-deadline"] == 2


def test_backoff_is_exponential():
    attempts = _Attempts(timeout=None, max_retries=3, backoff_s=0.1)
    unavailable = _FakeError(grpc.StatusCode.UNAVAILABLE)
    assert [attempts.backoff(unavailable) for _ in range(4)] == [0.1, 0.2, 0.4, None]
    assert _Attempts(None, 3, 0.1).backoff(_FakeError(grpc.StatusCode.INTERNAL)) is None


class _FakeError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


def test_unreachable_server_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}", max_retries=1, retry_backoff_s=0.01, timeout=5) as c:
        with pytest.raises(errors.UnavailableError):
            c.health()


# ---------------------------------------------------------------------------------------------
# Call metadata, unary methods, lifecycle
# ---------------------------------------------------------------------------------------------

def test_api_key_application_and_metadata_hook_reach_the_server(server):
    calls = []

    def hook():
        calls.append(1)
        return [("x-trace-id", f"t{len(calls)}")]

    with Client(server.address, api_key="sk-test", application="specroute", metadata_hook=hook,
                retry_backoff_s=0.01) as c:
        c.generate("hi", request_id="md-gen")
        c.generate("!flaky:1", request_id="md-retry")
        c.list_drafters()
    seen = server.metadata["md-gen"][0]
    assert seen["authorization"] == "Bearer sk-test" and seen["application"] == "specroute"
    assert seen["x-trace-id"] == "t1"
    # The hook runs for every attempt, so a refreshed token reaches a retry.
    assert [m["x-trace-id"] for m in server.metadata["md-retry"]] == ["t2", "t3"]
    assert server.metadata["list_drafters"][-1]["authorization"] == "Bearer sk-test"


def test_no_auth_metadata_without_an_api_key(client, server):
    client.generate("hi", request_id="md-none")
    assert "authorization" not in server.metadata["md-none"][0]
    assert "application" not in server.metadata["md-none"][0]


def test_classify_list_drafters_and_health(client):
    assert client.classify("SELECT 1", task="sql", drafter="d") == Classification("sql", "d", 0.75, "task-override")
    listing = client.list_drafters()
    assert [d.name for d in listing.drafters] == ["code-drafter", "ngram"]
    assert listing.drafters[0].serves_tasks == ["code", "sql"] and listing.drafters[0].params == 1_000_000
    assert (listing.default_drafter, listing.tasks, listing.target) == ("ngram", ["code", "sql", "chat"], "tiny-target")
    health = client.health()
    assert (health.status, health.verifier_replicas, health.version, health.serving) == ("SERVING", 2, "test-1", True)


def test_close_ends_the_client(server):
    c = Client(server.address)
    with c:
        assert c.health().serving
    with pytest.raises(Exception):
        c.health()


# ---------------------------------------------------------------------------------------------
# AsyncClient
# ---------------------------------------------------------------------------------------------

def test_async_generate_stream_and_unary(server):
    async def main():
        async with AsyncClient(server.address, api_key="sk-async", application="app") as c:
            done = await c.generate("alpha beta gamma", max_new_tokens=2, request_id="async-gen")
            chunks = [chunk async for chunk in c.stream("alpha beta gamma")]
            classification = await c.classify("q")
            listing = await c.list_drafters()
            health = await c.health()
        return done, chunks, classification, listing, health

    done, chunks, classification, listing, health = asyncio.run(main())
    assert (done.text, done.token_ids, done.finish_reason) == ("alpha beta", [100, 101], "length")
    assert (done.metadata.task, done.metadata.confidence, done.metadata.tau) == ("echo", 0.9, 1.5)
    assert [c.text for c in chunks] == ["alpha", " beta", " gamma"]
    assert chunks[0].metadata is not None and chunks[1].metadata is None and chunks[-1].finish_reason == "eos"
    assert classification.task == "code" and listing.default_drafter == "ngram" and health.serving
    seen = server.metadata["async-gen"][0]
    assert seen["authorization"] == "Bearer sk-async" and seen["application"] == "app"


def test_async_errors_retries_and_deadlines(server):
    async def main():
        async with AsyncClient(server.address, retry_backoff_s=0.01) as c:
            retried = await c.generate("!flaky:2", request_id="async-flaky")
            assert (await c.classify("!flaky:1")).drafter == "code-drafter"
            with pytest.raises(errors.ResourceExhaustedError):
                await c.generate("!code:RESOURCE_EXHAUSTED")
            with pytest.raises(errors.InvalidArgumentError):
                await c.classify("!code:INVALID_ARGUMENT")
            stream = c.stream("!midstream", request_id="async-mid")
            assert (await stream.__anext__()).text == "partial"
            with pytest.raises(errors.UnavailableError, match="replica lost"):
                await stream.__anext__()
            with pytest.raises(errors.DeadlineExceededError):
                await c.generate("!sleep:3", timeout=0.2)
            with pytest.raises(errors.DeadlineExceededError):
                await c.health(timeout=0.0)
            return retried

    start = time.monotonic()
    retried = asyncio.run(main())
    assert time.monotonic() - start < 2.0
    assert retried.text == "ok done" and server.attempts["async-flaky"] == 3
    assert server.attempts["classify:!flaky:1"] == 2
    assert server.attempts["async-mid"] == 1


def test_async_stream_closed_early_cancels_it_on_the_server(server):
    async def main():
        async with AsyncClient(server.address) as c:
            stream = c.stream("!slowstream")
            assert (await stream.__anext__()).text == "0 "
            await stream.aclose()
            # Still inside `async with`: the channel is open, so only aclose() can have ended the call.
            return await asyncio.get_running_loop().run_in_executor(None, server.client_gone.wait, 2.0)

    server.client_gone.clear()
    assert asyncio.run(main())


def test_async_client_cannot_be_used_after_close(server):
    async def main():
        c = AsyncClient(server.address)
        await c.close()
        with pytest.raises(ValueError):
            await c.health()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------------

def test_importing_the_client_is_light():
    code = ("import sys, specroute.client, specroute.errors; "
            "print(sorted(m for m in ('torch', 'ray', 'transformers', 'numpy', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
