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
unless `drafter` names one drafter for every request. With `temperature > 0`, request `i` carries
sampling seed `seed + i`.

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
- Percentiles: `numpy.percentile` (linear interpolation between the closest ranks).
- Replica counts: `replica_counts()` (returns `{deployment: replicas}`) is called about once a
  second from a separate thread (so a slow call never stalls the load), from the start of the
  load to its end; the CLI counts every replica of each deployment in `ray.serve.status()`,
  whatever its state (starting, running, stopping), like `LocalSystem.replica_counts`.

Warmup requests (`warmup_requests`, default 0) are sent before the window opens and are left out
of every figure but their own line in the report.

The parts: `config` (the settings), `workload` (what to send), `sender` (sending and timing),
`records` (what one request did), `statistics` (the figures), `replicas` (replica counts) and
`report` (tables, JSON, PNG).
"""

import importlib

# Each public name and its module, imported on first use (PEP 562), so that `specroute --help` can read
# LoadTestConfig without loading the client, matplotlib or the zoo.
_MODULES = {
    "config": ["DEFAULT_TARGET", "LoadTestConfig", "check_target", "parse_mix"],
    "records": ["RequestRecord"],
    "replicas": ["ray_replica_counter", "serve_replica_counts"],
    "report": ["LoadReport", "plot_report"],
    "sender": ["run_loadtest", "run_loadtest_async"],
    "statistics": ["bucket_widths", "bucketize", "inter_token_latencies", "percentile"],
    "workload": ["PromptItem", "PromptMix", "load_prompt_source", "load_prompts_file", "load_zoo_prompts"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
