"""What one request of a load test did: its times, tokens, status and the server's metadata.

The sender fills a `RequestRecord`; the statistics read it.
This module knows nothing about sending or aggregating.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from specroute.loadtest.statistics import inter_token_latencies


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
