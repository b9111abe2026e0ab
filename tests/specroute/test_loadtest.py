"""`specroute loadtest`: the pure parts, the run against a scripted in-process gRPC server, the CLI,
and (marked integration) a bounded run against the real system on the tiny zoo."""

from __future__ import annotations

import json
import math
import random
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from pydantic import ValidationError

from protos.specroute.v1 import specroute_pb2 as pb
from protos.specroute.v1 import specroute_pb2_grpc as pb_grpc
from router.redis_server import free_port
from specroute.cli import main
from specroute.loadtest import (LoadTestConfig, PromptItem, PromptMix, RequestRecord, bucket_widths, bucketize,
                                check_target, inter_token_latencies, load_prompt_source, load_prompts_file,
                                load_zoo_prompts, parse_mix, percentile, ray_replica_counter, run_loadtest)
from specroute.loadtest.statistics import timeline

PROMPTS = [PromptItem("code", "def f(x):"), PromptItem("code", "import os"), PromptItem("math", "2 + 2 ="),
           PromptItem("prose", "Once upon a time")]


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------

def test_percentile_matches_numpy_linear():
    assert percentile([], 50) is None
    assert percentile([7.0], 1) == percentile([7.0], 99) == 7.0
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4], 0) == 1 and percentile([1, 2, 3, 4], 100) == 4
    rng = random.Random(0)
    data = [rng.expovariate(1.0) for _ in range(101)]
    for q in (1, 25, 50, 90, 99, 99.9):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_inter_token_latency_is_the_gap_over_the_later_chunks_tokens():
    # chunks at 0.1 (2 tokens), 0.3 (4 tokens), 0.35 (1 token), 0.65 (3 tokens)
    itl = inter_token_latencies([0.1, 0.3, 0.35, 0.65], [2, 4, 1, 3])
    assert itl == pytest.approx([0.05] * 4 + [0.05] + [0.1] * 3)
    assert len(itl) == 4 + 1 + 3  # one sample per token after the first chunk
    assert inter_token_latencies([0.1, 0.2, 0.4], [1, 0, 2]) == pytest.approx([0.15, 0.15])  # no-token chunk skipped
    assert inter_token_latencies([0.5], [3]) == [] and inter_token_latencies([], []) == []
    with pytest.raises(ValueError):
        inter_token_latencies([0.1, 0.2], [1])


def test_buckets():
    assert bucket_widths(2.5) == pytest.approx([1.0, 1.0, 0.5])
    assert bucket_widths(3.0) == pytest.approx([1.0, 1.0, 1.0])
    assert bucket_widths(0.0) == [0.0] and len(bucket_widths(0.2)) == 1
    sums = bucketize([-0.5, 0.0, 0.99, 1.0, 2.4, 9.0], [100, 1, 2, 3, 4, 5], 2.5)
    assert sums == [3, 3, 9]  # negative times (warmup) out; beyond the end into the last bucket
    assert bucketize([0.1, 0.2, 1.5], None, 2.0) == [2, 1]


def test_timeline_rates_use_each_buckets_width():
    done = RequestRecord(0, "code", start_s=0.0, end_s=1.2, status="ok", tokens=6,
                         chunk_times=[0.5, 1.2], chunk_tokens=[2, 4])
    failed = RequestRecord(1, "code", start_s=1.3, end_s=1.4, status="error", error_code="UNAVAILABLE")
    buckets = timeline([done, failed], 1.5)
    assert [b["tokens"] for b in buckets] == [2, 4]
    assert buckets[1]["width_s"] == pytest.approx(0.5) and buckets[1]["tokens_per_s"] == pytest.approx(8.0)
    assert [b["requests_ok"] for b in buckets] == [0, 1] and [b["errors"] for b in buckets] == [0, 1]


def test_parse_mix():
    assert parse_mix("code,math") == {"code": 1.0, "math": 1.0}
    assert parse_mix(" code=3 , math=1.5") == {"code": 3.0, "math": 1.5}
    for bad, words in [("", "empty"), ("code,", "empty"), ("=3", "no task"), ("code=x", "not a number"),
                       ("code=0", "> 0"), ("code=-1", "> 0"), ("code=inf", "> 0"), ("code,code=2", "twice")]:
        with pytest.raises(ValueError, match=words):
            parse_mix(bad)


def test_mix_weights_and_determinism():
    mix = PromptMix(PROMPTS, parse_mix("code=3,math=1"), seed=5)
    assert mix.shares == pytest.approx({"code": 0.75, "math": 0.25})
    picks = [mix.pick(i) for i in range(4000)]
    share = sum(p.task == "code" for p in picks) / len(picks)
    assert abs(share - 0.75) < 0.03
    assert {p.prompt for p in picks if p.task == "code"} == {"def f(x):", "import os"}  # both prompts drawn
    assert [mix.pick(i) for i in range(50)] == picks[:50]  # request i's prompt depends on (seed, i) only
    assert [p.prompt for p in (mix.pick(i) for i in range(50))] != \
        [p.prompt for p in (PromptMix(PROMPTS, {"code": 3, "math": 1}, seed=6).pick(i) for i in range(50))]
    default = PromptMix(PROMPTS)  # every task of the source, equally
    assert default.shares == pytest.approx({"code": 1 / 3, "math": 1 / 3, "prose": 1 / 3})
    with pytest.raises(ValueError, match="available: code, math, prose"):
        PromptMix(PROMPTS, {"code": 1, "poetry": 1})
    with pytest.raises(ValueError, match="no prompts"):
        PromptMix([])


@pytest.mark.parametrize("address", ["127.0.0.1:9000", "localhost:1", "my-lb.internal:443", "[::1]:9000"])
def test_target_accepts_one_host_port(address):
    assert check_target(address) == address


@pytest.mark.parametrize("address", ["", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "http://127.0.0.1:9000",
                                     "dns:///127.0.0.1:9000", "ipv4:127.0.0.1:1,127.0.0.2:1", "unix:/tmp/s",
                                     "a:1,b:2", "host:port", "[::1]"])
def test_target_refuses_schemes_lists_and_bad_ports(address):
    with pytest.raises(ValueError, match="HOST:PORT|empty"):
        check_target(address)


@pytest.mark.parametrize("kwargs, field", [
    ({"concurrency": 0}, "concurrency"), ({"concurrency": 257}, "concurrency"),
    ({"duration_s": 0}, "duration_s"), ({"duration_s": -1}, "duration_s"), ({"duration_s": 3601}, "duration_s"),
    ({"duration_s": math.nan}, "duration_s"), ({"max_requests": 0}, "max_requests"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -0.1}, "temperature"),
    ({"request_timeout_s": 0}, "request_timeout_s"), ({"drain_s": -1}, "drain_s"),
    ({"target": "http://x:1"}, "target"), ({"mix": "code=0"}, "mix"), ({"mix": {"code": -2}}, "mix"),
    ({"warmup_requests": -1}, "warmup_requests"), ({"bogus": 1}, "bogus"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValidationError) as info:
        LoadTestConfig(**kwargs)
    assert info.value.errors()[0]["loc"][0] == field


def test_config_defaults_mix_and_secret():
    config = LoadTestConfig(mix="code=2,math", api_key="s3cret")
    assert config.target == "127.0.0.1:9000" and config.max_requests >= 1000
    assert config.mix == {"code": 2.0, "math": 1.0}
    assert LoadTestConfig(mix="").mix is None
    assert "s3cret" not in json.dumps(config.public_dict()) and config.public_dict()["api_key"] == "set"


def test_prompt_files(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a", "task": "x"}\n\n{"prompt": "b"}\n{"prompt": "   ", "task": "x"}\n')
    assert load_prompts_file(good) == [PromptItem("x", "a"), PromptItem("unlabelled", "b")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        load_prompts_file(bad)
    bad.write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="prompt"):
        load_prompts_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts_file(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="exactly one"):
        load_prompt_source(zoo=tmp_path, prompts_file=good)
    # a zoo's test split, read through its manifest
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "test.jsonl").write_text(
        json.dumps({"task": "code", "prompt": "def g():", "continuation": " pass"}) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"corpus": {"files": {"test": "corpus/test.jsonl"}}}))
    assert load_zoo_prompts(tmp_path) == [PromptItem("code", "def g():")]


def test_replica_counter_off_or_unreachable(monkeypatch):
    counter, note, disconnect = ray_replica_counter("none")
    assert counter is None and "off" in note
    disconnect()
    t = time.perf_counter()
    counter, note, _ = ray_replica_counter(f"127.0.0.1:{free_port()}")  # nobody there: no minutes of retries
    assert counter is None and "nothing answers" in note and time.perf_counter() - t < 5
    import ray

    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    counter, note, _ = ray_replica_counter("auto")
    assert counter is None and "could not reach Ray" in note and "Could not find" in note


# --------------------------------------------------------------------------------------------
# Against a scripted gRPC server in this process
# --------------------------------------------------------------------------------------------

class ScriptedSpecRoute(pb_grpc.SpecRouteServicer):
    """Streams: a metadata-only chunk, then `chunks` chunks of `per_chunk` tokens `gap_s` apart,
    the last with the final metadata (tau = per_chunk). Prompts containing FULL fail with
    RESOURCE_EXHAUSTED; `hang` never answers (until cancelled)."""

    def __init__(self, chunks=4, per_chunk=2, gap_s=0.01, hang=False, api_key=None):
        self.chunks, self.per_chunk, self.gap_s, self.hang, self.api_key = chunks, per_chunk, gap_s, hang, api_key
        self.requests = 0

    def Generate(self, request, context):
        self.requests += 1
        if self.api_key and ("authorization", f"Bearer {self.api_key}") not in \
                [(m.key, m.value) for m in context.invocation_metadata()]:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid api key")
        if self.hang:
            while context.is_active():
                time.sleep(0.02)
            return
        if "FULL" in request.prompt:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "server full")
        yield pb.GenerateResponse(metadata=pb.RequestMetadata(task="t-" + request.prompt[:4], drafter="fake"))
        for i in range(self.chunks):
            time.sleep(self.gap_s)
            last = i == self.chunks - 1
            response = pb.GenerateResponse(text="xy", token_ids=[5] * self.per_chunk,
                                           round=pb.RoundInfo(num_emitted=self.per_chunk, rounds=1))
            if last:
                response.finish_reason = "length"
                response.metadata.CopyFrom(pb.RequestMetadata(task="t", drafter="fake", tau=float(self.per_chunk),
                                                              rounds=self.chunks))
            yield response


@pytest.fixture
def scripted():
    servers = []

    def start(**kwargs):
        servicer = ScriptedSpecRoute(**kwargs)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        pb_grpc.add_SpecRouteServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        server.stop(0)


def test_run_measures_a_scripted_server(scripted, tmp_path):
    address, servicer = scripted(chunks=4, per_chunk=2, gap_s=0.01)
    config = LoadTestConfig(target=address, concurrency=3, duration_s=1.5, warmup_requests=2, mix="code=3,math=1",
                            request_timeout_s=10)
    calls = []

    def replicas():
        calls.append(time.perf_counter())
        return {"Router": 1, "Verifier": 1 if len(calls) < 2 else 2}

    t = time.perf_counter()
    report = run_loadtest(config, PROMPTS, replica_counts=replicas, out_dir=tmp_path, progress=False)
    assert time.perf_counter() - t < 10
    s = report.summary
    assert s["requests"]["ok"] == s["requests"]["started"] > 3 and s["requests"]["errors"] == 0
    assert servicer.requests == s["requests"]["started"] + 2  # plus the warmup, which is not counted
    assert report.warmup["requests"] == 2 and report.warmup["ok"] == 2
    assert s["tokens"] == 8 * s["requests"]["ok"] and s["tokens_per_request"] == 8
    assert s["tau_mean"] == pytest.approx(2.0) and s["tau_pooled"] == pytest.approx(2.0)
    assert s["itl"]["n"] == 6 * s["requests"]["ok"]  # 3 later chunks x 2 tokens each
    assert 0 <= s["itl"]["p50_ms"] <= s["itl"]["p99_ms"] < 1000  # ~10 ms gaps over 2 tokens (the client may lag)
    assert 10 <= s["ttft"]["p50_ms"] <= s["ttft"]["p99_ms"]  # the metadata-only chunk is not a first token
    assert s["latency"]["p50_ms"] >= 40 and s["tokens_per_s"] > 0 and s["requests_per_s"] > 0
    assert s["drafters"] == {"fake": s["requests"]["ok"]}
    assert set(report.per_task) == {"code", "math"}
    expected = PromptMix(PROMPTS, config.mix, config.seed)  # request i's task is fixed by (seed, i)
    for task in ("code", "math"):
        assert report.per_task[task]["requests"]["started"] == \
            sum(expected.pick(i).task == task for i in range(s["requests"]["started"]))
    assert sum(b["tokens"] for b in report.timeline) == s["tokens"]
    assert sum(b["requests_ok"] for b in report.timeline) == s["requests"]["ok"]
    assert len(report.timeline) == math.ceil(report.elapsed_s - 1e-9)
    assert len(report.replica_samples) >= 2 and report.replica_summary["Verifier"]["max"] == 2
    assert report.replica_summary["Verifier"]["changes"][0]["to"] == 2
    for name in ("report.md", "report.json", "loadtest.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["summary"]["requests"]["ok"] == s["requests"]["ok"]
    assert len(saved["requests"]) == s["requests"]["started"]
    assert saved["timeline"] and saved["replica_samples"] and "ITL" in saved["definitions"]
    md = (tmp_path / "report.md").read_text()
    for section in ("## Summary", "## Per task", "## Errors", "## Replicas", "## Configuration", "tokens/s"):
        assert section in md


def test_max_requests_bounds_the_run(scripted):
    address, servicer = scripted(chunks=2, gap_s=0.005)
    config = LoadTestConfig(target=address, concurrency=4, duration_s=60, max_requests=7)
    t = time.perf_counter()
    report = run_loadtest(config, PROMPTS, progress=False)
    assert time.perf_counter() - t < 10  # ended by max_requests, long before the duration
    assert report.summary["requests"]["started"] == report.summary["requests"]["ok"] == 7 == servicer.requests
    assert sorted(r["index"] for r in report.requests) == list(range(7))


def test_requests_running_at_the_end_are_drained_then_cancelled(scripted):
    address, _ = scripted(hang=True)
    config = LoadTestConfig(target=address, concurrency=3, duration_s=0.5, drain_s=0.5, request_timeout_s=30)
    t = time.perf_counter()
    report = run_loadtest(config, PROMPTS, progress=False)
    assert time.perf_counter() - t < 5
    assert report.summary["requests"] == {"started": 3, "ok": 0, "errors": 0, "cancelled": 3}
    assert not report.drained and "cancelled" in report.markdown()


def test_request_timeout_is_a_deadline_error(scripted):
    address, _ = scripted(hang=True)
    config = LoadTestConfig(target=address, concurrency=2, duration_s=0.6, request_timeout_s=0.3, error_pause_s=0)
    report = run_loadtest(config, PROMPTS, progress=False)
    assert report.summary["requests"]["ok"] == 0
    assert set(report.errors) == {"DEADLINE_EXCEEDED"} and report.errors["DEADLINE_EXCEEDED"] >= 2


def test_server_errors_are_counted_by_code_and_the_api_key_is_sent(scripted):
    address, _ = scripted(chunks=1, gap_s=0.001, api_key="k1")
    prompts = [PromptItem("ok", "fine"), PromptItem("full", "FULL please")]
    report = run_loadtest(LoadTestConfig(target=address, concurrency=2, duration_s=60, max_requests=40,
                                         api_key="k1", error_pause_s=0), prompts, progress=False)
    assert report.summary["requests"]["ok"] == report.per_task["ok"]["requests"]["started"] > 0
    assert report.errors == {"RESOURCE_EXHAUSTED": report.per_task["full"]["requests"]["started"]}
    assert report.error_examples["RESOURCE_EXHAUSTED"] == ["server full"]
    wrong = run_loadtest(LoadTestConfig(target=address, concurrency=1, duration_s=60, max_requests=3,
                                        api_key="nope"), prompts, progress=False)
    assert wrong.errors == {"UNAUTHENTICATED": 3}


def test_unreachable_target_counts_unavailable_in_bounded_time():
    config = LoadTestConfig(target=f"127.0.0.1:{free_port()}", concurrency=3, duration_s=1.0, request_timeout_s=5)
    t = time.perf_counter()
    report = run_loadtest(config, PROMPTS, progress=False)
    assert time.perf_counter() - t < 8
    assert report.summary["requests"]["ok"] == 0 and report.summary["requests"]["started"] >= 3
    assert set(report.errors) == {"UNAVAILABLE"}
    assert report.errors["UNAVAILABLE"] == report.summary["requests"]["errors"] == report.summary["requests"]["started"]
    assert report.summary["ttft"]["p50_ms"] is None and "n/a" in report.markdown()


# --------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------

@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt, "task": p.task}) + "\n" for p in PROMPTS))
    return path


@pytest.mark.parametrize("bad, words", [
    (["--concurrency", "0"], "--concurrency"), (["--concurrency", "300"], "--concurrency"),
    (["--duration", "0"], "--duration"), (["--duration", "7200"], "--duration"),
    (["--max-requests", "0"], "--max-requests"), (["--target", "http://127.0.0.1:9000"], "--target"),
    (["--target", "a:1,b:2"], "--target"), (["--mix", "code=-1"], "--mix"), (["--mix", "poetry"], "poetry"),
    (["--timeout", "0"], "--timeout"),
])
def test_cli_rejects_bad_values_with_exit_2(capsys, prompts_file, tmp_path, bad, words):
    assert main(["loadtest", "--prompts", str(prompts_file), "--out", str(tmp_path / "out"),
                 "--ray-address", "none", *bad]) == 2
    err = capsys.readouterr().err
    assert "error" in err and words in err
    assert not (tmp_path / "out").exists()


def test_cli_needs_exactly_one_prompt_source(capsys, prompts_file, tmp_path):
    assert main(["loadtest", "--ray-address", "none"]) == 2
    assert main(["loadtest", "--prompts", str(prompts_file), "--zoo", str(tmp_path), "--ray-address", "none"]) == 2
    assert main(["loadtest", "--zoo", str(tmp_path / "nothing"), "--ray-address", "none"]) == 2
    assert "exactly one" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse: not a number
        main(["loadtest", "--prompts", str(prompts_file), "--concurrency", "many"])
    assert info.value.code == 2


def test_cli_runs_and_writes_the_report(capsys, scripted, prompts_file, tmp_path):
    address, _ = scripted(chunks=3, gap_s=0.005)
    out = tmp_path / "results"
    assert main(["loadtest", "--target", address, "--concurrency", "2", "--duration", "0.8", "--mix", "code,math",
                 "--prompts", str(prompts_file), "--out", str(out), "--ray-address", "none", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "# specroute load test" in captured.out and "replica counts off" in captured.out
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "loadtest.png"}
    assert set(json.loads((out / "report.json").read_text())["per_task"]) == {"code", "math"}
    # nothing answers: the run still ends, and the exit code says no request succeeded
    assert main(["loadtest", "--target", f"127.0.0.1:{free_port()}", "--concurrency", "1", "--duration", "0.3",
                 "--prompts", str(prompts_file), "--out", str(tmp_path / "down"), "--ray-address", "none",
                 "--no-progress"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Against the real system (Ray Serve, gRPC proxy, router, drafters, verifier) on the tiny zoo
# --------------------------------------------------------------------------------------------

DRAFTERS = ("generic-llama", "ngram")


@pytest.fixture(scope="module")
def system(built_zoo):
    from tests.specroute.systems import start_tiny_system
    system = start_tiny_system(built_zoo, DRAFTERS)
    yield system
    system.stop()


@pytest.fixture(scope="module")
def zoo_prompts(built_zoo):
    """The zoo's test prompts that fit the tiny target's context (a few do not: INVALID_ARGUMENT)."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(built_zoo / "target")
    return [p for p in load_zoo_prompts(built_zoo) if len(tokenizer(p.prompt).input_ids) <= 128]


@pytest.mark.integration
def test_loadtest_against_the_system(system, zoo_prompts, tmp_path):
    prompts = zoo_prompts
    tasks = sorted({p.task for p in prompts})
    config = LoadTestConfig(target=system.grpc_address, concurrency=3, duration_s=6, max_new_tokens=16,
                            warmup_requests=3, mix=",".join(tasks[:2]), request_timeout_s=60)
    t = time.perf_counter()
    report = run_loadtest(config, prompts, replica_counts=system.replica_counts, out_dir=tmp_path, progress=False)
    assert time.perf_counter() - t < 6 + config.drain_s + 15  # warmup, load, drain, closing
    s = report.summary
    failed = [r for r in report.requests if r["status"] != "ok"]
    assert s["requests"]["ok"] >= 3 and not failed and report.errors == {}, (report.error_examples, failed)
    assert s["tokens_per_s"] > 0 and s["requests_per_s"] > 0 and s["tokens"] > 0
    for metric in ("ttft", "itl", "latency"):
        assert s[metric]["n"] > 0 and 0 < s[metric]["p50_ms"] <= s[metric]["p99_ms"]
    assert s["tau_mean"] >= 1.0 and set(s["drafters"]) <= set(DRAFTERS) | {"plain"}
    assert set(report.per_task) == set(tasks[:2])
    assert len(report.replica_samples) >= 6  # about one a second over 6 s
    assert {"Router", "Verifier", "Drafter-generic-llama", "Drafter-ngram"} <= set(report.replica_summary)
    assert all(row["min"] >= 1 for row in report.replica_summary.values())
    assert (tmp_path / "loadtest.png").stat().st_size > 1000
    assert (tmp_path / "report.md").stat().st_size > 0 and (tmp_path / "report.json").stat().st_size > 0


@pytest.mark.integration
def test_loadtest_max_requests_against_the_system(system, zoo_prompts):
    config = LoadTestConfig(target=system.grpc_address, concurrency=3, duration_s=120, max_requests=5,
                            max_new_tokens=8)
    t = time.perf_counter()
    report = run_loadtest(config, zoo_prompts, progress=False)
    assert time.perf_counter() - t < 30
    assert report.summary["requests"]["started"] == report.summary["requests"]["ok"] == 5


@pytest.mark.integration
def test_cli_loadtest_counts_replicas_through_ray(system, zoo_prompts, tmp_path, capsys):
    # Ray is already initialised in this process (LocalSystem), so --ray-address auto uses that connection.
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt, "task": p.task}) + "\n" for p in zoo_prompts))
    out = tmp_path / "out"
    assert main(["loadtest", "--target", system.grpc_address, "--concurrency", "2", "--duration", "2",
                 "--max-new-tokens", "8", "--prompts", str(path), "--out", str(out), "--ray-address", "auto",
                 "--no-progress"]) == 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"]["requests"]["ok"] > 0 and saved["errors"] == {}
    assert "ray.serve.status()" in saved["replica_note"] and len(saved["replica_samples"]) >= 2
    assert set(saved["replica_summary"]) == set(system.replica_counts())
    assert "## Replicas" in capsys.readouterr().out
