"""A drafter as a Ray Serve deployment: one deployment per configured drafter.

Each replica loads its drafter (any registered kind: a model of any family and size, or ngram)
and the target's tokenizer, finds verifier replicas through the verifier directory, and serves
`generate(request)`: a streaming method the router calls once per request through a Serve handle.

With `log_acceptance`, the replica's drafter sends every drafted node's features and verdict to the
query log's Redis (`drafter_service.acceptance_log.RedisAcceptanceSink`), the data learned stopping
trains on, collected from real traffic.

The pieces of a request:
- `_Worker` runs the service's stream on a worker thread (one per ongoing request, pinned to the
  deployment's `cpus` if set) and hands its chunks to the event loop. For a request that does
  not stream it merges every round into one chunk there, so that no round wakes the event loop.
  A bug (any exception that is not a `ServiceError` chunk) ends the stream with INTERNAL.
- `coalesced` relays the chunks, merging (`ChunkOut.then`) the rounds that finish within
  `stream_interval_ms` of each other into one chunk.
If the router goes away (the client cancelled), the loop stops after the current round and both
sessions are closed.

Logs and metrics: the replica writes its logs as `core.logs.LogSettings` says (component
"drafter-<name>", its Serve replica id), and the worker thread enters the request's
`core.logs.request_scope`, so every line the request causes here (the service's, the verifier
client's failover warnings) carries its id. The replica records its metrics
(`drafter_service.metrics`): active requests, each round's draft and verify time, failovers.

A replica receives its own settings (`DrafterSpec`, the verifier client's `VerifierClientConfig`),
never the whole system's config. Resources are per deployment (`num_gpus` per drafter: its own
GPU on a cluster; 0 on CPU), set by the app builder. This module only hosts; the work is
`drafter_service.service`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from core import cpus as cpu_affinity
from core.errors import Code, ServiceError
from core.logs import LogSettings, configure_logging, request_scope
from drafter_service.acceptance_log import AcceptanceRecorder, RedisAcceptanceSink
from drafter_service.base import drafter_config_model
from drafter_service.contracts import ChunkOut, GenerationRequest
from drafter_service.metrics import DrafterMetrics
from drafter_service.service import DrafterService
from verifier_service.client import ReplicaInfo, VerifierClientConfig, VerifierPool


class DrafterSpec(BaseModel):
    """One drafter: its name, kind and the kind's settings, and how its rounds are streamed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str = Field(description="A registered drafter kind: model, ngram, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="The kind's settings (validated by its Config).")
    stream_interval_ms: float = Field(
        50.0, ge=0, description="Rounds finishing within this interval are streamed as one chunk (0: one chunk per "
                                "round). Each chunk costs Ray and the proxy CPU that the next round could use: "
                                "bench/results/earlier/README.md compares 20 ms with 50.")

    log_acceptance: bool = Field(False, description="Log every drafted node's features and verdict to the query "
                                                    "log's Redis (stream `{prefix}:acceptance`; drafters with a model).")

    @model_validator(mode="after")
    def _kind_and_options(self) -> DrafterSpec:
        drafter_config_model(self.kind).model_validate(self.options)
        return self


class _Worker:
    """Runs one request's stream on a worker thread and posts its chunks to the event loop's
    queue, then None. A request that does not stream gets its rounds merged here. The thread's
    log lines carry the request's id; each round is recorded in `metrics` (if any)."""

    def __init__(self, service: DrafterService, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
                 metrics: DrafterMetrics | None = None):
        self.service, self.request, self.loop, self.metrics = service, request, loop, metrics
        self.queue: asyncio.Queue[ChunkOut | None] = asyncio.Queue()
        self.cancelled = threading.Event()

    def _post(self, chunk: ChunkOut | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)

    def run(self) -> None:
        with request_scope(self.request.request_id):
            self._run()

    def _run(self) -> None:
        held: ChunkOut | None = None  # a request that does not stream: its rounds so far
        try:
            for chunk in self.service.stream(self.request, self.cancelled):
                self._record(chunk)
                if self.request.stream or chunk.error is not None:
                    if held is not None:  # the merged rounds go out before an error
                        self._post(held)
                        held = None
                    self._post(chunk)
                    continue
                held = chunk if held is None else held.then(chunk)
                if held.last:
                    self._post(held)
                    held = None
        except Exception as err:  # a bug, not a bad request: report it, never hang the stream
            if held is not None:
                self._post(held)
            self._post(ChunkOut(error=ServiceError(
                Code.INTERNAL, f"drafter {self.service.name}: {type(err).__name__}: {err}")))
        finally:
            self._post(None)

    def _record(self, chunk: ChunkOut) -> None:
        if self.metrics is None:
            return
        if chunk.round is not None:
            self.metrics.rounds(chunk.round)
        if chunk.report is not None:
            self.metrics.finished(chunk.report)


async def coalesced(queue: asyncio.Queue, interval_s: float, merge: bool = True) -> AsyncIterator[ChunkOut]:
    """The chunks of `queue` (ended by None), those that arrive within `interval_s` of the first
    of a batch merged into one (not the first chunk of the stream: it goes out at once). Every
    chunk costs the router and the proxy CPU that the next round could use. An error chunk is
    never merged; the chunk before it goes out first."""
    loop = asyncio.get_running_loop()
    first, pending = True, None
    while True:
        chunk, pending = (pending, None) if pending is not None else (await queue.get(), None)
        if chunk is None:
            return
        deadline = loop.time() + (0 if first else interval_s)
        first = False
        while merge and not chunk.last:
            try:
                later = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            if later is None:
                yield chunk
                return
            if later.error is not None:
                pending = later
                break
            chunk = chunk.then(later)
        yield chunk


@serve.deployment(name="Drafter")
class DrafterDeployment:
    def __init__(self, spec: DrafterSpec, target_dir: str, verifier_client: VerifierClientConfig, directory,
                 max_ongoing_requests: int = 16, torch_threads: int | None = None, cpus: list[int] | None = None,
                 logs: LogSettings = LogSettings(), redis: tuple[str, str] | None = None):
        configure_logging(logs, component=f"drafter-{spec.name}",
                          replica=serve.get_replica_context().replica_id.unique_id)
        # Unset, torch follows Ray's OMP_NUM_THREADS (1 for a fractional num_cpus): with more threads
        # in both the drafter's and the verifier's process, idle OpenMP threads spin against each
        # other on a small machine (bench/results/earlier/README.md).
        if torch_threads:
            torch.set_num_threads(torch_threads)
        cpu_affinity.check(cpus, f"drafter {spec.name}: deployment.cpus")  # fails the deployment, not each request
        self.stream_interval_s = spec.stream_interval_ms / 1e3
        self.directory = directory

        def discover() -> list[ReplicaInfo]:
            return [ReplicaInfo(r["address"], r["active_sessions"], r["replica"])
                    for r in directory.replicas.remote().result(timeout_s=5)]
        self.pool = VerifierPool.from_config(discover, verifier_client, eager=False)
        self.service = DrafterService.load(spec.name, spec.kind, spec.options, target_dir, self.pool)
        if spec.log_acceptance and redis is not None:  # redis: (url, key prefix) of the query log
            sink = RedisAcceptanceSink(redis[0], redis[1], drafter=spec.name)
            if not self.service.drafter.record_to(AcceptanceRecorder(sink)):
                raise ValueError(f"drafter {spec.name}: log_acceptance needs a drafter with a model, not {spec.kind}")
        # Each request drafts on one of these threads (pinned to `cpus` if set); the event loop only relays.
        self.executor = ThreadPoolExecutor(max_ongoing_requests, thread_name_prefix=f"drafter-{spec.name}",
                                           initializer=cpu_affinity.pin, initargs=(cpus,))
        self.metrics = DrafterMetrics(spec.name)
        self.active = 0  # requests being served (changed on the event loop only)

    async def generate(self, request: GenerationRequest):
        worker = _Worker(self.service, request, asyncio.get_running_loop(), self.metrics)
        self.active += 1
        self.metrics.requests_active(self.active)
        asyncio.get_running_loop().run_in_executor(self.executor, worker.run)
        try:
            # A request that does not stream had its rounds merged by the worker.
            async for chunk in coalesced(worker.queue, self.stream_interval_s, merge=request.stream):
                yield chunk
        finally:
            worker.cancelled.set()
            self.active -= 1
            self.metrics.requests_active(self.active)

    def verifier_replicas(self) -> list[str]:
        return [r.address for r in self.pool.replicas]

    def __del__(self):
        self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
