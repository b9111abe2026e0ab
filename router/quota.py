"""Per-key limits: a request rate and a number of concurrent streams for each API key.

One client must not take all of the system: each key (the anonymous key "" when no API keys are
configured) has a token bucket of `rate` requests per second with room for `burst`, and at most
`max_streams` generations open at once. With `shared_streams` (the sessions all keys share), the
share is also fair and work-conserving: a key may use any spare room, but once every shared
stream is open, a key holding its fair share (shared / keys with open generations) or more is
refused, while a key below its share is still admitted: a newcomer is never starved by a busy
key that re-asks faster. The shared count can so be passed by less than one share per key; the
verifier's admission wait (`verifier_service.server`) absorbs that. A request
over a limit gets a `core.errors.ServiceError` RESOURCE_EXHAUSTED with how long to wait
(`retry_after_s`, also named in the message).

The limits hold per router replica (each replica counts its own traffic); with N replicas a
key's system-wide limits are N times these. Pure: no clock of its own (the caller may pass one),
no I/O. This module knows nothing about requests beyond their key.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from core.errors import Code, ServiceError


class QuotaConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: float | None = Field(None, gt=0, description="Requests per second per key (None: no rate limit).")
    burst: int = Field(10, ge=1, description="Requests a key may send at once before its rate applies.")
    max_streams: int | None = Field(None, ge=1, description="Generations a key may have open at once (None: no cap).")
    shared_streams: int | None = Field(None, ge=1, description="The generations all keys share (the verifier sessions "
                                       "this router feeds). When they are all open, a key at or above its fair share "
                                       "(shared / keys with open generations) is refused, so one key cannot starve "
                                       "another; below that, any key may use spare room. None: no fair share.")


def _exceeded(message: str, retry_after_s: float) -> ServiceError:
    return ServiceError(Code.RESOURCE_EXHAUSTED, f"{message}; retry after {retry_after_s:.2g} s", retry_after_s)


@dataclass
class _Bucket:
    tokens: float
    last: float
    streams: int = 0


class KeyQuota:
    def __init__(self, config: QuotaConfig = QuotaConfig(), clock: Callable[[], float] = time.monotonic):
        self.config, self.clock = config, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.config.burst), now)
        elif self.config.rate is not None:
            bucket.tokens = min(self.config.burst, bucket.tokens + (now - bucket.last) * self.config.rate)
            bucket.last = now
        return bucket

    def acquire(self, key: str) -> None:
        """Counts one request of `key` and opens one of its streams; RESOURCE_EXHAUSTED if over a limit.
        Every acquire that returns is paired with one `release`."""
        c = self.config
        with self._lock:
            now = self.clock()
            bucket = self._bucket(key, now)
            if c.max_streams is not None and bucket.streams >= c.max_streams:
                raise _exceeded(f"this API key has {bucket.streams} generations open, its limit", 0.1)
            if c.shared_streams is not None:
                open_now = sum(b.streams for b in self._buckets.values())
                active = sum(1 for k, b in self._buckets.items() if b.streams or k == key)
                if open_now >= c.shared_streams and bucket.streams >= c.shared_streams / active:
                    raise _exceeded(f"every shared stream is open and this API key holds {bucket.streams}, "
                                        f"its fair share or more", 0.1)
            if c.rate is not None:
                if bucket.tokens < 1:
                    raise _exceeded(f"this API key is over its rate of {c.rate:g} requests/s",
                                        (1 - bucket.tokens) / c.rate)
                bucket.tokens -= 1
            bucket.streams += 1

    def release(self, key: str) -> None:
        """Closes one of `key`'s streams."""
        with self._lock:
            bucket = self._buckets[key]
            bucket.streams -= 1
            if bucket.streams == 0 and self.config.rate is None:
                del self._buckets[key]  # nothing to remember about an idle key

    def open_streams(self, key: str) -> int:
        with self._lock:
            bucket = self._buckets.get(key)
            return bucket.streams if bucket else 0
