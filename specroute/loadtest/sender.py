"""Sending and timing: closed-loop workers that stream requests to one address until the deadline.

`run_loadtest` (blocking) and `run_loadtest_async` send warmup requests, then `concurrency` workers
each send one streaming request after another through `specroute.client.AsyncClient`, timing
every chunk with `time.perf_counter()`, until `duration_s` or `max_requests`; requests still
running at the deadline get `drain_s`, then are cancelled. See the package docstring for the bounds.
This module knows nothing about how the figures are computed or formatted (`statistics`, `report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping

from tqdm.auto import tqdm

from specroute.client import AsyncClient, Metadata
from specroute.errors import SpecrouteError
from specroute.loadtest.config import LoadTestConfig
from specroute.loadtest.records import RequestRecord
from specroute.loadtest.replicas import ReplicaSampler
from specroute.loadtest.report import LoadReport, build_report
from specroute.loadtest.workload import PromptItem, PromptMix

GUARD_S = 5.0  # client-side guard beyond each request's own deadline
WORKERS_PER_CHANNEL = 32  # workers sharing one gRPC channel (one TCP connection) ...
MAX_CHANNELS = 8  # ... up to this many channels


async def _send(client, config: LoadTestConfig, item: PromptItem, record: RequestRecord, t0: float) -> None:
    """Send one streaming request and fill `record`; never raises but CancelledError."""
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
            sampler = ReplicaSampler(replica_counts, t0).start()
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
    return build_report(config, mix, records, warmup, warmup_s, t_end - t0, started_at, drained, sampler,
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
