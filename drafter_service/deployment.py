"""A drafter as a Ray Serve deployment: one deployment per configured drafter.

Each replica loads its drafter (any registered kind: a model of any family and size, or ngram)
and the target's tokenizer, finds verifier replicas through the verifier directory, and serves
`generate(request)`: a streaming method the router calls once per request through a Serve handle.
It streams rounds as they finish (coalesced within `stream_interval_ms`), or, for a request that
does not stream, the whole generation as one chunk, merged on the worker thread so that no round
wakes the event loop.
The speculative loop runs on a worker thread (one per ongoing request) and its chunks are handed
to the event loop as they come. If the router goes away (the client cancelled), the loop stops
after the current round and both sessions are closed.

Resources are per deployment (`num_gpus` per drafter: its own GPU on a cluster; 0 on CPU), set by
the app builder from the config. This module only hosts; the work is `drafter_service.service`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from ray import serve

from drafter_service.contracts import ChunkOut, GenerationRequest, ServiceErrorInfo
from drafter_service.service import DrafterService
from core import cpus as cpu_affinity
from verifier_service.client import ReplicaInfo, VerifierPool
from core.tls import TlsFiles


@serve.deployment(name="Drafter")
class DrafterDeployment:
    def __init__(self, name: str, kind: str, options: dict, target_dir: str, directory, verifier: dict,
                 max_ongoing_requests: int = 16, torch_threads: int | None = None, stream_interval_ms: float = 50.0,
                 cpus: list[int] | None = None):
        # Unset, torch follows Ray's OMP_NUM_THREADS (1 for a fractional num_cpus). Measured on 2
        # cores (bench/results/earlier/README.md): 2 threads in both the drafter's and the verifier's
        # process halved single-stream speed, as idle OpenMP threads spin against each other.
        if torch_threads:
            torch.set_num_threads(torch_threads)
        cpu_affinity.check(cpus, f"drafter {name}: deployment.cpus")  # fails the deployment, not each request
        self.stream_interval_s = stream_interval_ms / 1e3
        self.directory = directory

        def discover() -> list[ReplicaInfo]:
            return [ReplicaInfo(r["address"], r["active_sessions"], r["replica"])
                    for r in directory.replicas.remote().result(timeout_s=5)]
        self.pool = VerifierPool(discover, refresh_s=verifier.get("heartbeat_s", 1.0),
                                 max_message_bytes=verifier.get("max_message_bytes", 1 << 20),
                                 failover_timeout_s=verifier.get("failover_timeout_s", 60.0), eager=False,
                                 tls=TlsFiles(**verifier["tls"]) if verifier.get("tls") else None)
        self.service = DrafterService.load(name, kind, options, target_dir, self.pool)
        # Each request drafts on one of these threads (pinned to `cpus` if set); the event loop only relays.
        self.executor = ThreadPoolExecutor(max_ongoing_requests, thread_name_prefix=f"drafter-{name}",
                                           initializer=cpu_affinity.pin, initargs=(cpus,))

    async def generate(self, request: GenerationRequest):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def post(chunk: ChunkOut | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)

        def work() -> None:
            held = None  # a request that does not stream: its rounds so far, merged here

            def flush() -> None:  # the merged rounds go out before an error
                nonlocal held
                if held is not None:
                    post(held)
                    held = None

            try:
                for chunk in self.service.stream(request, cancelled):
                    if not request.stream:  # one hand-over to the event loop, not one a round
                        if chunk.error is None:
                            held = chunk if held is None else held.then(chunk)
                            if not held.last:
                                continue
                            chunk, held = held, None
                        else:
                            flush()
                    post(chunk)
            except Exception as err:  # a bug, not a bad request: report it, never hang the stream
                flush()
                post(ChunkOut(error=ServiceErrorInfo(
                    "INTERNAL", f"drafter {self.service.name}: {type(err).__name__}: {err}")))
            finally:
                post(None)

        loop.run_in_executor(self.executor, work)
        try:
            first, ended = True, False
            while not ended and (chunk := await queue.get()) is not None:
                # Rounds that finish within stream_interval_s of each other travel as one chunk:
                # every chunk costs the router and the proxy CPU that the next round could use.
                # (A request that does not stream had its rounds merged by the worker.)
                deadline = loop.time() + (0 if first else self.stream_interval_s)
                while request.stream and not chunk.last and chunk.error is None:
                    try:
                        later = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        break
                    if later is None:
                        ended = True
                        break
                    if later.error is not None:
                        yield chunk
                        chunk = later
                        break
                    chunk = chunk.then(later)
                first = False
                yield chunk
        finally:
            cancelled.set()

    def verifier_replicas(self) -> list[str]:
        return [r.address for r in self.pool.replicas]

    def __del__(self):
        self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
