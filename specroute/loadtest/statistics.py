"""The load test's figures from its request records: percentiles, inter-token latencies, 1 s buckets,
per-task aggregates and the replica-count summary.

Percentiles are numpy's (`numpy.percentile`, linear interpolation between the closest ranks).
This module knows nothing about sending requests or formatting reports.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from specroute.loadtest.records import RequestRecord

BUCKET_S = 1.0  # width of the throughput buckets


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0 <= q <= 100) by linear interpolation between closest ranks
    (`numpy.percentile`'s default); None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    data = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(data, q)) if data.size else None


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


def latency_stats(samples_s: Sequence[float]) -> dict:
    """{n, p50_ms, p99_ms, mean_ms, max_ms} of samples in seconds."""
    if not len(samples_s):
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    data = np.asarray(samples_s, dtype=np.float64)
    p50, p99 = np.percentile(data, [50, 99])
    return {"n": len(data), "p50_ms": _ms(float(p50)), "p99_ms": _ms(float(p99)),
            "mean_ms": _ms(sum(samples_s) / len(samples_s)), "max_ms": _ms(float(data.max()))}


def aggregate(records: Sequence[RequestRecord], elapsed_s: float) -> dict:
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
        "ttft": latency_stats([r.ttft_s for r in records if r.ttft_s is not None]),
        "itl": latency_stats([s for r in records for s in r.itl_s()]),
        "latency": latency_stats([r.latency_s for r in ok if r.latency_s is not None]),
        "tau_mean": (sum(taus) / len(taus)) if taus else None,
        "tau_pooled": (tau_tokens / rounds) if rounds else None,
        "mean_in_flight": sum(r.latency_s or 0.0 for r in records) / window,
        "drafters": dict(sorted(drafters.items())),
    }


def timeline(records: Sequence[RequestRecord], elapsed_s: float) -> list[dict]:
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


def replica_summary(samples: Sequence[dict]) -> dict:
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
