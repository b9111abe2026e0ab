"""`specroute loadtest`: a bounded, closed-loop load test of one specroute gRPC endpoint.

    from specroute.loadtest import LoadTestConfig, load_prompt_source, run_loadtest

    config = LoadTestConfig(target="127.0.0.1:9000", concurrency=8, duration_s=60, mix="code=3,math=1")
    report = run_loadtest(config, load_prompt_source(zoo="zoo/demo"), out_dir="loadtest-results")
    print(report.markdown())

How it loads the target
-----------------------
Closed loop: `concurrency` workers each send one streaming `Generate` request (through
`specroute.client.AsyncClient`), wait for it to end, and send the next, until `duration_s` has
passed or `max_requests` requests have been started, whichever comes first. Request `i` (counted
across all workers) always gets the same prompt for the same seed, mix and prompt source (a
weighted draw of the task, then a uniform draw within it), whatever the scheduling. Prompts are
sent without a task, so the server's router classifies and routes them as it would any client's,
unless `drafter` names one drafter for every request. With `temperature > 0`, request `i` carries sampling seed `seed + i`.

Bounds, so that it never hangs: no request starts after the deadline or beyond `max_requests`;
each request has a deadline of `request_timeout_s` (the SDK's, covering any retries) and a
client-side guard a few seconds later. Requests still in flight at the deadline may **finish
within `drain_s`** (default 10 s); whatever is still running then is **cancelled** (the stream is
cancelled on the server too) and recorded as `cancelled` (neither ok nor an error). The run ends
after at most `warmup + duration_s + drain_s` plus a few seconds of closing.

Errors are counted by gRPC status code (`specroute.errors`); `CLIENT_ERROR` is anything else
raised in the client. The SDK's own UNAVAILABLE retries are off by default (`retries=0`), so every
failure is seen; after a failed request a worker pauses `error_pause_s` (0.1 s) so an unreachable
target is not hammered in a tight loop.

Address policy: it sends only to the one `host:port` it is given (default loopback); it never
discovers servers, resolves service configs or fans out.

What it measures (times from `time.perf_counter()` in this process)
-------------------------------------------------------------------
- TTFT: from just before the request is sent to the arrival of the first chunk that carries
  tokens (a chunk with metadata only does not count). Retries, when enabled, are inside it.
- ITL (inter-token latency): chunks can carry several tokens (a verification round commits
  several). For consecutive token-bearing chunks of a request, arriving at t[j-1] and t[j] with
  n[j] tokens in the later one, each of those n[j] tokens gets the sample (t[j] - t[j-1]) / n[j].
  So there is one sample per token after the first chunk; the first chunk's tokens are covered by
  TTFT and give no ITL sample.
- End-to-end latency: send to the end of the stream (successful requests).
- tau: the server's final metadata (tokens emitted per verification round), per successful
  request; the report gives its mean over requests, and the pooled tokens / rounds in JSON.
- Throughput: tokens received (by every measured request, cancelled ones included) over the
  measured window, which runs from the start of the load (after warmup) to the end of the last
  request, drain included. Requests/s counts successful requests. Per 1 s bucket: tokens by the
  arrival time of their chunk, requests by their end time, each over the bucket's width (the last
  bucket may be shorter). Per task: the same over the whole window, by the prompt's own task label.
- Percentiles: linear interpolation between the closest ranks (numpy's default).
- Replica counts: `replica_counts()` (returns `{deployment: replicas}`) is called about once a
  second from a separate thread (so a slow call never stalls the load), from the start of the
  load to its end; the CLI counts every replica of each deployment in `ray.serve.status()`,
  whatever its state (starting, running, stopping), like `LocalSystem.replica_counts`.

Warmup requests (`warmup_requests`, default 0) are sent before the window opens and are left out
of every figure but their own line in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "LoadTestConfig",
    "PromptItem",
    "PromptMix",
    "LoadReport",
    "RequestRecord",
    "run_loadtest",
    "run_loadtest_async",
    "load_prompt_source",
    "load_zoo_prompts",
    "load_prompts_file",
    "parse_mix",
    "check_target",
    "percentile",
    "inter_token_latencies",
    "bucketize",
    "bucket_widths",
    "serve_replica_counts",
    "ray_replica_counter",
    "plot_report",
]

DEFAULT_TARGET = "127.0.0.1:9000"
BUCKET_S = 1.0  # width of the throughput buckets
REPLICA_SAMPLE_S = 1.0  # how often replica counts are sampled
GUARD_S = 5.0  # client-side guard beyond each request's own deadline
WORKERS_PER_CHANNEL = 32  # workers sharing one gRPC channel (one TCP connection) ...
MAX_CHANNELS = 8  # ... up to this many channels
UNLABELLED = "unlabelled"  # the task of a prompt that has none

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_HOST = re.compile(r"^[A-Za-z0-9._-]+$")


def check_target(address: str) -> str:
    """`address` if it is one plain `host:port` (or `[ipv6]:port`); ValueError otherwise.

    Schemes (`dns:///`, `ipv4:`, `unix:`, `xds:`, `http://`) and address lists are refused: the
    load test sends to exactly one address and never resolves a list or a service config.
    """
    address = address.strip()
    if not address:
        raise ValueError("the target address is empty")
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        ok_host = bool(sep) and bool(re.fullmatch(r"[0-9A-Fa-f:.]+", host)) and ":" in host
    else:
        host, sep, port = address.rpartition(":")
        ok_host = bool(sep) and bool(_HOST.match(host))
    if not ok_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"the target must be one HOST:PORT (e.g. {DEFAULT_TARGET}), without a scheme or "
                         f"a list; got {address!r}")
    return address


def parse_mix(text: str) -> dict[str, float]:
    """'code,math' -> {code: 1, math: 1}; 'code=3,math=1' -> {code: 3, math: 1}. ValueError if malformed."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"--mix {text!r}: empty entry (expected TASK[=WEIGHT],...)")
        name, sep, weight_text = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--mix {text!r}: entry {part!r} has no task name")
        if name in mix:
            raise ValueError(f"--mix {text!r}: task {name!r} is given twice")
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(f"--mix {text!r}: weight {weight_text.strip()!r} of {name!r} "
                                 "is not a number") from None
        else:
            weight = 1.0
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"--mix {text!r}: the weight of {name!r} must be a finite number > 0")
        mix[name] = weight
    return mix


class LoadTestConfig(BaseModel):
    """A load test's settings, validated on construction (pydantic). See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(DEFAULT_TARGET, description="The one gRPC address (HOST:PORT) every request goes to.")
    concurrency: int = Field(4, ge=1, le=256, description="Closed-loop workers (requests in flight).")
    duration_s: float = Field(30.0, gt=0, le=3600, description="How long new requests are started.")
    max_requests: int = Field(10_000, ge=1, le=1_000_000, description="Hard bound on requests started.")
    max_new_tokens: int = Field(64, ge=1, le=65_536)
    temperature: float = Field(0.0, ge=0, le=100, description="0 is greedy.")
    warmup_requests: int = Field(0, ge=0, le=1000, description="Sent first, left out of the figures.")
    mix: dict[str, float] | None = Field(None, description="Task weights; None: every task equally.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    api_key: SecretStr | None = None
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="Each request's deadline.")
    drain_s: float = Field(10.0, ge=0, le=600, description="Grace for in-flight requests after the deadline.")
    retries: int = Field(0, ge=0, le=10, description="SDK retries of UNAVAILABLE before the first token.")
    error_pause_s: float = Field(0.1, ge=0, le=10, description="A worker's pause after a failed request.")
    drafter: str | None = Field(None, min_length=1, description="Send every request to this drafter (default: "
                                                                "the router's choice).")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_target(value)

    @field_validator("mix", mode="before")
    @classmethod
    def _mix(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            return parse_mix(value)
        if isinstance(value, Mapping):
            for name, weight in value.items():
                if not str(name).strip():
                    raise ValueError("a task name in the mix is empty")
                if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
                    raise ValueError(f"the weight of {name!r} must be a finite number > 0")
        return value

    def public_dict(self) -> dict:
        """The settings as JSON-able values, the API key masked."""
        data = self.model_dump(mode="json")
        data["api_key"] = "set" if self.api_key is not None else None
        return data


# --------------------------------------------------------------------------------------------
# Prompts and the mix
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptItem:
    task: str
    prompt: str


def load_zoo_prompts(zoo: Path | str) -> list[PromptItem]:
    """A built zoo's held-out test prompts (its manifest's corpus test split), with their tasks."""
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import load_manifest
    zoo = Path(zoo)
    manifest = load_manifest(zoo)  # FileNotFoundError with a hint when it is not a built zoo
    try:
        test_file = zoo / manifest["corpus"]["files"]["test"]
    except (KeyError, TypeError):
        raise ValueError(f"{zoo}'s manifest names no corpus test split") from None
    if not test_file.is_file():
        raise ValueError(f"{zoo}'s test split {test_file} is missing")
    items = [PromptItem(ex.task, ex.prompt) for ex in load_split(test_file) if ex.prompt.strip()]
    if not items:
        raise ValueError(f"{zoo}'s test split {test_file} holds no prompts")
    return items


def load_prompts_file(path: Path | str) -> list[PromptItem]:
    """Prompts from JSONL: one object per non-empty line, {"prompt": TEXT, "task": NAME}; "task" is
    optional (default "unlabelled"). ValueError naming the line when one is malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg}); "
                             "expected {\"prompt\": ..., \"task\": ...}") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}:{number}: expected an object with a string \"prompt\"")
        task = record.get("task", UNLABELLED)
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"{path}:{number}: \"task\" must be a non-empty string")
        if record["prompt"].strip():
            items.append(PromptItem(task.strip(), record["prompt"]))
    if not items:
        raise ValueError(f"prompts file {path} holds no prompts")
    return items


def load_prompt_source(zoo: Path | str | None = None, prompts_file: Path | str | None = None) -> list[PromptItem]:
    """Exactly one of a zoo's test split and a JSONL prompts file."""
    if (zoo is None) == (prompts_file is None):
        raise ValueError("give exactly one of a zoo (--zoo DIR) and a prompts file (--prompts FILE)")
    return load_zoo_prompts(zoo) if zoo is not None else load_prompts_file(prompts_file)


def _as_items(prompts: Iterable[PromptItem | Mapping | str]) -> list[PromptItem]:
    items = []
    for p in prompts:
        if isinstance(p, PromptItem):
            items.append(p)
        elif isinstance(p, str):
            items.append(PromptItem(UNLABELLED, p))
        elif isinstance(p, Mapping) and isinstance(p.get("prompt"), str):
            items.append(PromptItem(str(p.get("task") or UNLABELLED), p["prompt"]))
        else:
            raise ValueError(f"not a prompt: {p!r}")
    return items


class PromptMix:
    """Picks request `i`'s prompt: a task by weight, then a prompt of it, both from `(seed, i)` alone."""

    def __init__(self, prompts: Iterable[PromptItem | Mapping | str], mix: Mapping[str, float] | None = None,
                 seed: int = 0):
        by_task: dict[str, list[PromptItem]] = {}
        for item in _as_items(prompts):
            by_task.setdefault(item.task, []).append(item)
        if not by_task:
            raise ValueError("no prompts to send")
        if mix:
            unknown = sorted(set(mix) - set(by_task))
            if unknown:
                raise ValueError(f"--mix names tasks the prompts do not have: {', '.join(unknown)}; "
                                 f"available: {', '.join(sorted(by_task))}")
            weights = {task: float(w) for task, w in mix.items()}
        else:
            weights = {task: 1.0 for task in sorted(by_task)}
        total = sum(weights.values())
        self.seed = seed
        self.tasks = list(weights)
        self.shares = {task: w / total for task, w in weights.items()}
        self.available = {task: len(by_task[task]) for task in self.tasks}
        self._by_task = {task: by_task[task] for task in self.tasks}
        self._cumulative = []
        running = 0.0
        for task in self.tasks:
            running += self.shares[task]
            self._cumulative.append(running)

    def pick(self, index: int) -> PromptItem:
        rng = random.Random(f"specroute-loadtest:{self.seed}:{index}")
        u = rng.random()
        for task, edge in zip(self.tasks, self._cumulative):
            if u < edge:
                break
        else:  # u beyond the last edge by rounding
            task = self.tasks[-1]
        return rng.choice(self._by_task[task])


# --------------------------------------------------------------------------------------------
# Pure measurement helpers
# --------------------------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    data = sorted(values)
    if not data:
        return None
    rank = q / 100 * (len(data) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def inter_token_latencies(chunk_times: Sequence[float], chunk_tokens: Sequence[int]) -> list[float]:
    """Per-token inter-token latencies of one request, in the unit of `chunk_times`.

    For consecutive token-bearing chunks (arrival times t[j-1], t[j]; n[j] tokens in the later one)
    each of the n[j] tokens gets (t[j] - t[j-1]) / n[j]. Chunks without tokens are skipped; the first
    token-bearing chunk gives no sample (its tokens are covered by the time to first token).
    """
    if len(chunk_times) != len(chunk_tokens):
        raise ValueError("chunk_times and chunk_tokens differ in length")
    chunks = [(t, n) for t, n in zip(chunk_times, chunk_tokens) if n > 0]
    samples: list[float] = []
    for (previous, _), (now, n) in zip(chunks, chunks[1:]):
        samples.extend([(now - previous) / n] * n)
    return samples


def bucket_widths(elapsed_s: float, bucket_s: float = BUCKET_S) -> list[float]:
    """Widths of the buckets [0, b), [b, 2b), ... covering [0, elapsed_s]; the last may be shorter."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be > 0")
    count = max(1, math.ceil(elapsed_s / bucket_s - 1e-9))
    return [max(0.0, min(bucket_s, elapsed_s - i * bucket_s)) for i in range(count)]


def bucketize(times: Sequence[float], amounts: Sequence[float] | None, elapsed_s: float,
              bucket_s: float = BUCKET_S) -> list[float]:
    """Sums of `amounts` (default 1 each) by the bucket of their time; times before 0 are left out,
    times at or beyond `elapsed_s` go to the last bucket."""
    sums = [0.0] * len(bucket_widths(elapsed_s, bucket_s))
    for i, t in enumerate(times):
        if t < 0:
            continue
        sums[min(int(t // bucket_s), len(sums) - 1)] += 1.0 if amounts is None else amounts[i]
    return sums


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def _latency_stats(samples_s: Sequence[float]) -> dict:
    """{n, p50_ms, p99_ms, mean_ms, max_ms} of samples in seconds."""
    ordered = sorted(samples_s)  # once: percentile's own sort of sorted data is a linear pass
    return {"n": len(ordered), "p50_ms": _ms(percentile(ordered, 50)), "p99_ms": _ms(percentile(ordered, 99)),
            "mean_ms": _ms(sum(samples_s) / len(samples_s)) if samples_s else None,
            "max_ms": _ms(ordered[-1]) if ordered else None}


# --------------------------------------------------------------------------------------------
# One request
# --------------------------------------------------------------------------------------------

@dataclass
class RequestRecord:
    """What one request did; times in seconds from the start of the measured window."""

    index: int
    task: str
    warmup: bool = False
    start_s: float = 0.0
    end_s: float | None = None
    status: str = "in_flight"  # ok, error, cancelled
    error_code: str | None = None
    error_detail: str | None = None
    ttft_s: float | None = None
    tokens: int = 0
    finish_reason: str | None = None
    drafter: str = ""
    routed_task: str = ""
    tau: float | None = None
    rounds: int = 0
    chunk_times: list[float] = field(default_factory=list, repr=False)
    chunk_tokens: list[int] = field(default_factory=list, repr=False)

    @property
    def latency_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.start_s

    def itl_s(self) -> list[float]:
        return inter_token_latencies(self.chunk_times, self.chunk_tokens)

    def public_dict(self) -> dict:
        # Not asdict(): it would deep-copy every chunk list only for them to be dropped.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("chunk_times", "chunk_tokens")}
        data["chunks"] = len(self.chunk_times)
        data["latency_s"] = self.latency_s
        return data


async def _send(client, config: LoadTestConfig, item: PromptItem, record: RequestRecord, t0: float) -> None:
    """Send one streaming request and fill `record`; never raises but CancelledError."""
    from specroute.client import Metadata
    from specroute.errors import SpecrouteError

    metadata = Metadata()
    sent = time.perf_counter()
    record.start_s = sent - t0
    seed = config.seed + record.index if config.temperature > 0 else None
    try:
        async with asyncio.timeout(config.request_timeout_s + GUARD_S):
            stream = client.stream(item.prompt, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                   seed=seed, drafter=config.drafter, timeout=config.request_timeout_s)
            async with contextlib.aclosing(stream):  # closing it cancels the call on the server
                async for chunk in stream:
                    now = time.perf_counter()
                    if chunk.token_ids:
                        if record.ttft_s is None:
                            record.ttft_s = now - sent
                        record.chunk_times.append(now - t0)
                        record.chunk_tokens.append(len(chunk.token_ids))
                        record.tokens += len(chunk.token_ids)
                    if chunk.metadata is not None:
                        metadata = metadata.merged(chunk.metadata)
                    if chunk.finish_reason:
                        record.finish_reason = chunk.finish_reason
        record.status = "ok"
        if metadata.rounds > 0:
            record.tau, record.rounds = metadata.tau, metadata.rounds
    except SpecrouteError as err:
        code = err.code.name if hasattr(err.code, "name") else str(err.code)
        record.status, record.error_code, record.error_detail = "error", code, err.details[:300]
    except TimeoutError:
        record.status, record.error_code = "error", "DEADLINE_EXCEEDED"
        record.error_detail = f"client-side guard: no end after {config.request_timeout_s + GUARD_S:.0f} s"
    except asyncio.CancelledError:
        record.status = "cancelled"
        raise
    except Exception as err:  # anything else the client raised: counted, never fatal to the run
        record.status, record.error_code = "error", "CLIENT_ERROR"
        record.error_detail = f"{type(err).__name__}: {err}"[:300]
    finally:
        record.end_s = time.perf_counter() - t0
        record.drafter, record.routed_task = metadata.drafter, metadata.task


# --------------------------------------------------------------------------------------------
# Replica sampling
# --------------------------------------------------------------------------------------------

class _ReplicaSampler:
    """Calls `replica_counts()` about every `interval_s` in a daemon thread until stopped (then once more)."""

    def __init__(self, replica_counts: Callable[[], Mapping[str, int]], t0: float,
                 interval_s: float = REPLICA_SAMPLE_S):
        self._fn = replica_counts
        self._t0 = t0
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: list[dict] = []
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="loadtest-replicas", daemon=True)

    def start(self) -> _ReplicaSampler:
        self._thread.start()
        return self

    def _sample(self) -> None:
        start = time.perf_counter()
        try:
            counts = {str(k): int(v) for k, v in dict(self._fn()).items()}
            self.samples.append({"t_s": round(start - self._t0, 3), "counts": counts})
        except Exception as err:
            self.failures += 1
            self.last_error = f"{type(err).__name__}: {err}"[:300]

    def _run(self) -> None:
        while True:
            start = time.perf_counter()
            self._sample()
            if self._stop.is_set():
                return
            if self._stop.wait(max(0.0, self._interval_s - (time.perf_counter() - start))):
                self._sample()  # the state at the end of the run
                return

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.last_error = f"replica_counts() did not return within {timeout_s:.0f} s of the end"


def serve_replica_counts(app_name: str | None = None) -> dict[str, int]:
    """{deployment: replicas in any state} from `ray.serve.status()` (the caller is connected to Ray).

    With several applications (and no `app_name`) the keys are `app/deployment`."""
    from ray import serve
    apps = serve.status().applications
    if app_name is not None:
        apps = {app_name: apps[app_name]} if app_name in apps else {}
    several = len(apps) > 1
    return {(f"{app}/{name}" if several else name): sum(d.replica_states.values())
            for app, status in apps.items() for name, d in status.deployments.items()}


def _probe(address: str, timeout_s: float = 3.0) -> str | None:
    """Why nothing answers at a HOST:PORT (or ray://HOST:PORT) address, or None when something does
    or the address names no port (`auto`: Ray finds the local cluster itself)."""
    import socket
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"nothing answers at {host}:{port}: {err.strerror or type(err).__name__}"


def ray_replica_counter(address: str | None) -> tuple[Callable[[], dict[str, int]] | None, str, Callable[[], None]]:
    """Connect to Ray for replica counts: (counter or None, a note for the report, disconnect).

    `address` is what `ray.init(address=...)` takes (`auto`, `HOST:PORT`, `ray://HOST:10001`);
    None or "none" turns replica counts off. An address with a port is probed first (3 s), since
    `ray.init` retries an address nobody answers at for minutes. When Ray or Serve cannot be reached
    the counter is None and the note says why; the load test goes on without replica counts."""
    def nothing() -> None:
        return None

    if address is None or address.strip().lower() in ("", "none"):
        return None, "replica counts off (--ray-address none)", nothing
    address = address.strip()
    refused = _probe(address)
    if refused:  # ray.init would retry an address nobody answers at for minutes
        return None, f"could not reach Ray at {address!r} ({refused}); no replica counts", nothing
    import ray
    connected_here = False
    try:
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            connected_here = True
        counts = serve_replica_counts()
    except Exception as err:
        if connected_here:
            with contextlib.suppress(Exception):
                ray.shutdown()
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return None, (f"could not reach Ray at {address!r} ({type(err).__name__}: {detail}); "
                      "no replica counts"), nothing

    def disconnect() -> None:
        if connected_here:  # disconnects this driver; the cluster keeps running
            with contextlib.suppress(Exception):
                ray.shutdown()

    if not counts:
        return serve_replica_counts, f"Ray at {address!r}: Serve runs no application yet", disconnect
    return serve_replica_counts, f"ray.serve.status() via Ray at {address!r}", disconnect


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def run_loadtest(config: LoadTestConfig, prompts: Iterable[PromptItem | Mapping | str],
                 replica_counts: Callable[[], Mapping[str, int]] | None = None, out_dir: Path | str | None = None,
                 progress: bool = True, *, replica_note: str | None = None) -> LoadReport:
    """Run the load test (blocking; its own event loop) and return the report; with `out_dir`,
    also write report.md, report.json and loadtest.png there. See the module docstring.

    ValueError before anything is sent when the prompts or the mix are unusable."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_loadtest() cannot run inside an event loop; await run_loadtest_async() instead")
    report = asyncio.run(run_loadtest_async(config, prompts, replica_counts, progress=progress,
                                            replica_note=replica_note))
    if out_dir is not None:
        report.write(out_dir)
    return report


async def run_loadtest_async(config: LoadTestConfig, prompts: Iterable[PromptItem | Mapping | str],
                             replica_counts: Callable[[], Mapping[str, int]] | None = None, *, progress: bool = True,
                             replica_note: str | None = None) -> LoadReport:
    """`run_loadtest` as a coroutine (writes no files: `report.write(out_dir)`)."""
    from specroute.client import AsyncClient

    mix = PromptMix(prompts, config.mix, config.seed)
    started_at = datetime.now(timezone.utc)
    channels = min(MAX_CHANNELS, math.ceil(config.concurrency / WORKERS_PER_CHANNEL))
    options = [("grpc.use_local_subchannel_pool", 1),  # each channel its own connection
               ("grpc.service_config_disable_resolution", 1),  # the address given, nothing discovered
               ("grpc.lb_policy_name", "pick_first")]
    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    clients = [AsyncClient(config.target, api_key=api_key, timeout=config.request_timeout_s,
                           max_retries=config.retries, channel_options=options) for _ in range(channels)]
    warmup: list[RequestRecord] = []
    records: list[RequestRecord] = []
    sampler = None
    bar = None
    ticker = None
    try:
        # Warmup: its own records, before the window opens (so its times are negative).
        if config.warmup_requests:
            w0 = time.perf_counter()
            gate = asyncio.Semaphore(config.concurrency)

            async def warm(i: int) -> None:
                async with gate:
                    item = mix.pick(-1 - i)
                    record = RequestRecord(-1 - i, item.task, warmup=True)
                    warmup.append(record)
                    await _send(clients[i % channels], config, item, record, w0)

            await asyncio.gather(*(warm(i) for i in range(config.warmup_requests)))
            warmup_s = time.perf_counter() - w0
        else:
            warmup_s = 0.0

        t0 = time.perf_counter()
        deadline = t0 + config.duration_s
        if replica_counts is not None:
            sampler = _ReplicaSampler(replica_counts, t0).start()
        next_index = 0

        async def worker(w: int) -> None:
            nonlocal next_index
            client = clients[w % channels]
            while time.perf_counter() < deadline and next_index < config.max_requests:
                index, next_index = next_index, next_index + 1
                item = mix.pick(index)
                record = RequestRecord(index, item.task)
                records.append(record)
                await _send(client, config, item, record, t0)
                if record.status == "error" and config.error_pause_s:
                    await asyncio.sleep(min(config.error_pause_s, max(0.0, deadline - time.perf_counter())))

        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=round(config.duration_s, 1), unit="s", desc="loadtest", leave=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}")
        ticker = asyncio.create_task(_tick(bar, records, t0, config.duration_s)) if bar is not None else None
        workers = [asyncio.create_task(worker(w)) for w in range(config.concurrency)]
        _, pending = await asyncio.wait(workers, timeout=config.duration_s)
        drained = True
        if pending:
            if bar is not None:
                bar.set_description("loadtest (draining)")
            _, pending = await asyncio.wait(pending, timeout=config.drain_s)
            if pending:
                drained = False
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        t_end = time.perf_counter()
        for task in workers:  # surface a bug in the worker loop itself
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            _tick_once(bar, records, t0, config.duration_s)
        if sampler is not None:
            await asyncio.to_thread(sampler.stop)
        if bar is not None:
            bar.close()
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)

    for record in records:
        if record.status == "in_flight":  # a worker cancelled between the send and the first await
            record.status = "cancelled"
    return _build_report(config, mix, records, warmup, warmup_s, t_end - t0, started_at, drained, sampler,
                         replica_note)


def _tick_once(bar, records: list[RequestRecord], t0: float, duration_s: float) -> None:
    elapsed = time.perf_counter() - t0
    tokens = sum(r.tokens for r in records)
    ok = sum(r.status == "ok" for r in records)
    errors = sum(r.status == "error" for r in records)
    bar.n = round(min(elapsed, duration_s), 1)
    bar.set_postfix_str(f"{ok} ok, {errors} errors, {tokens / max(elapsed, 1e-9):.0f} tokens/s", refresh=True)


async def _tick(bar, records: list[RequestRecord], t0: float, duration_s: float) -> None:
    while True:
        _tick_once(bar, records, t0, duration_s)
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------------------------
# Aggregation and the report
# --------------------------------------------------------------------------------------------

def _aggregate(records: Sequence[RequestRecord], elapsed_s: float) -> dict:
    window = max(elapsed_s, 1e-9)
    ok = [r for r in records if r.status == "ok"]
    tokens = sum(r.tokens for r in records)
    taus = [r.tau for r in ok if r.tau is not None]
    rounds = sum(r.rounds for r in ok if r.tau is not None)
    tau_tokens = sum(r.tau * r.rounds for r in ok if r.tau is not None)
    drafters: dict[str, int] = {}
    for r in records:
        if r.drafter:
            drafters[r.drafter] = drafters.get(r.drafter, 0) + 1
    return {
        "requests": {"started": len(records), "ok": len(ok), "errors": sum(r.status == "error" for r in records),
                     "cancelled": sum(r.status == "cancelled" for r in records)},
        "tokens": tokens,
        "tokens_per_s": tokens / window,
        "requests_per_s": len(ok) / window,
        "tokens_per_request": (sum(r.tokens for r in ok) / len(ok)) if ok else None,
        "ttft": _latency_stats([r.ttft_s for r in records if r.ttft_s is not None]),
        "itl": _latency_stats([s for r in records for s in r.itl_s()]),
        "latency": _latency_stats([r.latency_s for r in ok if r.latency_s is not None]),
        "tau_mean": (sum(taus) / len(taus)) if taus else None,
        "tau_pooled": (tau_tokens / rounds) if rounds else None,
        "mean_in_flight": sum(r.latency_s or 0.0 for r in records) / window,
        "drafters": dict(sorted(drafters.items())),
    }


def _timeline(records: Sequence[RequestRecord], elapsed_s: float) -> list[dict]:
    widths = bucket_widths(elapsed_s)
    times = [t for r in records for t in r.chunk_times]
    amounts = [n for r in records for n in r.chunk_tokens]
    tokens = bucketize(times, amounts, elapsed_s)
    done = bucketize([r.end_s for r in records if r.status == "ok" and r.end_s is not None], None, elapsed_s)
    errors = bucketize([r.end_s for r in records if r.status == "error" and r.end_s is not None], None, elapsed_s)
    return [{"t_s": round(i * BUCKET_S, 3), "width_s": round(w, 4), "tokens": int(tokens[i]),
             "tokens_per_s": tokens[i] / w if w > 0 else 0.0, "requests_ok": int(done[i]),
             "requests_per_s": done[i] / w if w > 0 else 0.0, "errors": int(errors[i])}
            for i, w in enumerate(widths)]


def _replica_summary(samples: Sequence[dict]) -> dict:
    deployments = sorted({name for s in samples for name in s["counts"]})
    summary = {}
    for name in deployments:
        series = [(s["t_s"], s["counts"][name]) for s in samples if name in s["counts"]]
        changes, previous = [], None
        for t, count in series:
            if previous is not None and count != previous:
                changes.append({"t_s": t, "from": previous, "to": count})
            previous = count
        counts = [c for _, c in series]
        summary[name] = {"samples": len(series), "first": counts[0], "last": counts[-1], "min": min(counts),
                         "max": max(counts), "changes": changes}
    return summary


def _build_report(config: LoadTestConfig, mix: PromptMix, records: list[RequestRecord], warmup: list[RequestRecord],
                  warmup_s: float, elapsed_s: float, started_at: datetime, drained: bool,
                  sampler: _ReplicaSampler | None, replica_note: str | None) -> LoadReport:
    records = sorted(records, key=lambda r: r.index)
    errors: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for r in records:
        if r.status == "error":
            code = r.error_code or "UNKNOWN"
            errors[code] = errors.get(code, 0) + 1
            detail = r.error_detail or ""
            if detail not in examples.setdefault(code, []) and len(examples[code]) < 3:
                examples[code].append(detail)
    per_task = {task: _aggregate([r for r in records if r.task == task], elapsed_s) for task in mix.tasks}
    samples = list(sampler.samples) if sampler is not None else []
    if sampler is None:
        note = replica_note or "no replica_counts given"
    else:
        note = replica_note or "replica_counts()"
        if sampler.failures:
            note += f"; {sampler.failures} of {sampler.failures + len(samples)} samples failed " \
                    f"(last: {sampler.last_error})"
        elif sampler.last_error:
            note += f"; {sampler.last_error}"
    warm = _aggregate(warmup, warmup_s)
    return LoadReport(
        config=config.public_dict(),
        started_at=started_at.isoformat(timespec="seconds"),
        elapsed_s=elapsed_s,
        drained=drained,
        mix={task: {"share": mix.shares[task], "prompts": mix.available[task]} for task in mix.tasks},
        summary=_aggregate(records, elapsed_s),
        per_task=per_task,
        errors=dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        error_examples=examples,
        timeline=_timeline(records, elapsed_s),
        replica_samples=samples,
        replica_summary=_replica_summary(samples),
        replica_note=note,
        warmup={"requests": len(warmup), "ok": warm["requests"]["ok"], "errors": warm["requests"]["errors"],
                "elapsed_s": warmup_s, "ttft": warm["ttft"]},
        requests=[r.public_dict() for r in records],
    )


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


@dataclass
class LoadReport:
    """The outcome of a load test. `markdown()`, `to_dict()` and `write(out_dir)`; see the module
    docstring for what each figure means."""

    config: dict
    started_at: str
    elapsed_s: float
    drained: bool  # False: some requests were still running after the drain and were cancelled
    mix: dict
    summary: dict
    per_task: dict
    errors: dict  # {status code: count}
    error_examples: dict  # {status code: up to 3 distinct details}
    timeline: list  # one dict per 1 s bucket
    replica_samples: list  # [{"t_s": ..., "counts": {deployment: replicas}}]
    replica_summary: dict  # {deployment: {samples, first, last, min, max, changes}}
    replica_note: str
    warmup: dict
    requests: list  # one dict per measured request

    def to_dict(self) -> dict:
        return {"definitions": DEFINITIONS, **asdict(self)}

    def markdown(self) -> str:
        c, s = self.config, self.summary
        req = s["requests"]
        lines = [
            "# specroute load test", "",
            f"Target `{c['target']}`, {c['concurrency']} closed-loop workers for {c['duration_s']:g} s "
            f"(measured window {self.elapsed_s:.1f} s, drain included), started {self.started_at}."
            + ("" if self.drained else " Some requests were still running after the drain and were cancelled."),
            "",
            "## Summary", "",
            "| metric | value |", "|---|---|",
            f"| requests | {req['started']} started: {req['ok']} ok, {req['errors']} errors, "
            f"{req['cancelled']} cancelled at the end |",
            f"| throughput | {_fmt(s['tokens_per_s'])} tokens/s, {_fmt(s['requests_per_s'], 2)} requests/s |",
            f"| time to first token | p50 {_fmt(s['ttft']['p50_ms'], 1, ' ms')}, "
            f"p99 {_fmt(s['ttft']['p99_ms'], 1, ' ms')} "
            f"({s['ttft']['n']} requests) |",
            f"| inter-token latency | p50 {_fmt(s['itl']['p50_ms'], 2, ' ms')}, "
            f"p99 {_fmt(s['itl']['p99_ms'], 2, ' ms')} "
            f"({s['itl']['n']} tokens) |",
            f"| end-to-end latency | p50 {_fmt(s['latency']['p50_ms'], 0, ' ms')}, "
            f"p99 {_fmt(s['latency']['p99_ms'], 0, ' ms')} |",
            f"| tau (mean per request) | {_fmt(s['tau_mean'], 2)} |",
            f"| tokens | {s['tokens']:,} ({_fmt(s['tokens_per_request'], 1)} per ok request) |",
            f"| mean requests in flight | {_fmt(s['mean_in_flight'], 2)} |",
        ]
        if self.warmup["requests"]:
            lines.append(f"| warmup (excluded) | {self.warmup['requests']} requests, {self.warmup['ok']} ok, "
                         f"{self.warmup['errors']} errors, {self.warmup['elapsed_s']:.1f} s |")
        lines += ["", "## Per task", "",
                  "Task: the prompt's own label. tokens/s: its tokens over the whole window.", "",
                  "| task | share | requests | ok | errors | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 "
                  "| tau | drafters |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for task, row in self.per_task.items():
            drafters = ", ".join(f"{d} ({n})" for d, n in row["drafters"].items()) or "-"
            lines.append(
                f"| {task} | {self.mix[task]['share']:.0%} | {row['requests']['started']} | {row['requests']['ok']} "
                f"| {row['requests']['errors']} | {_fmt(row['tokens_per_s'])} "
                f"| {_fmt(row['ttft']['p50_ms'], 1, ' ms')} "
                f"| {_fmt(row['ttft']['p99_ms'], 1, ' ms')} | {_fmt(row['itl']['p50_ms'], 2, ' ms')} "
                f"| {_fmt(row['itl']['p99_ms'], 2, ' ms')} | {_fmt(row['tau_mean'], 2)} | {drafters} |")
        lines += ["", "## Errors", ""]
        if self.errors:
            lines += ["| code | count | example |", "|---|---:|---|"]
            for code, count in self.errors.items():
                example = (self.error_examples.get(code) or [""])[0].replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {code} | {count} | {example[:120]} |")
        else:
            lines.append("None.")
        lines += ["", "## Replicas", "", f"Source: {self.replica_note or 'n/a'}.", ""]
        if self.replica_summary:
            lines += ["| deployment | samples | first | min | max | last | changes (t: from -> to) |",
                      "|---|---:|---:|---:|---:|---:|---|"]
            for name, row in self.replica_summary.items():
                changes = ", ".join(f"{ch['t_s']:.0f} s: {ch['from']} -> {ch['to']}" for ch in row["changes"][:6])
                if len(row["changes"]) > 6:
                    changes += f", ... ({len(row['changes'])} in all)"
                lines.append(f"| {name} | {row['samples']} | {row['first']} | {row['min']} | {row['max']} "
                             f"| {row['last']} | {changes or 'none'} |")
        else:
            lines.append("No replica counts were recorded.")
        mix = ", ".join(f"{task} {m['share']:.0%} ({m['prompts']} prompts)" for task, m in self.mix.items())
        lines += ["", "## Configuration", "", "| setting | value |", "|---|---|"]
        for key, value in c.items():
            lines.append(f"| {key} | {'-' if value is None else value} |")
        lines += [f"| mix (resolved) | {mix} |", "", "## Definitions", ""]
        lines += [f"- **{name}**: {text}" for name, text in DEFINITIONS.items()]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write report.md, report.json and loadtest.png into `out_dir` (created); returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "report.md", "json": out / "report.json", "png": out / "loadtest.png"}
        paths["markdown"].write_text(self.markdown(), encoding="utf-8")
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        plot_report(self, paths["png"])
        return paths


DEFINITIONS = {
    "TTFT": "time to first token: from just before the request is sent to the first chunk carrying tokens.",
    "ITL": "inter-token latency: for consecutive token-bearing chunks of a request, the gap between them "
           "divided by the tokens of the later chunk, one sample per such token (the first chunk gives none).",
    "end-to-end latency": "from the send to the end of the stream, successful requests.",
    "tau": "tokens emitted per verification round, from the server's final metadata; mean over successful requests.",
    "throughput": "tokens received (cancelled requests included) and successful requests, over the measured "
                  "window: from the start of the load (after warmup) to the end of the last request.",
    "timeline": "1 s buckets from the start of the window; tokens by chunk arrival, requests by their end.",
    "replicas": "replicas of each deployment in any state, sampled about once a second.",
    "percentiles": "linear interpolation between the closest ranks.",
}


def plot_report(report: LoadReport, path: Path | str) -> None:
    """Tokens/s and requests/s per bucket (top) and replica counts per deployment (bottom) against time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    times = [b["t_s"] + b["width_s"] / 2 for b in report.timeline]
    top.plot(times, [b["tokens_per_s"] for b in report.timeline], marker="o", ms=3, color="tab:blue",
             label="tokens/s")
    top.set_ylabel("tokens/s", color="tab:blue")
    top.set_ylim(0, 1.15 * max([b["tokens_per_s"] for b in report.timeline] + [1.0]))
    rps = top.twinx()
    rps.plot(times, [b["requests_per_s"] for b in report.timeline], color="tab:orange", ls="--", label="requests/s")
    rps.set_ylabel("requests/s (ok)", color="tab:orange")
    rps.set_ylim(0, 1.15 * max([b["requests_per_s"] for b in report.timeline] + [1.0]))
    error_t = [t for t, b in zip(times, report.timeline) if b["errors"]]
    if error_t:
        top.scatter(error_t, [0] * len(error_t), marker="x", color="tab:red", label="errors", zorder=3)
    handles = top.get_legend_handles_labels()
    more = rps.get_legend_handles_labels()
    top.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    c = report.config
    top.set_title(f"{c['target']}: {c['concurrency']} workers, {report.summary['tokens_per_s']:.0f} tokens/s overall")
    if report.replica_samples:
        names = sorted(report.replica_summary)
        for i, name in enumerate(names):  # wider lines first, so equal counts stay visible
            series = [(s["t_s"], s["counts"][name]) for s in report.replica_samples if name in s["counts"]]
            bottom.step([t for t, _ in series], [n for _, n in series], where="post", marker=".", label=name,
                        lw=1.2 + 1.2 * (len(names) - 1 - i), alpha=0.8)
        bottom.legend(loc="upper left", fontsize=7, ncol=2)
        top_count = max(n for s in report.replica_samples for n in s["counts"].values()) if any(
            s["counts"] for s in report.replica_samples) else 1
        bottom.set_ylim(0, top_count + 1)
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        bottom.text(0.5, 0.5, f"no replica counts: {report.replica_note}"[:110], ha="center", va="center",
                    transform=bottom.transAxes, fontsize=8, wrap=True)
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("time since the start of the load (s)")
    bottom.set_xlim(0, max(report.elapsed_s, 1e-3))
    fig.savefig(path, dpi=110)
