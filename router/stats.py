"""Routing statistics and the query log in Redis, shared by every router replica.

Every finished request is a `RequestRecord` (task, drafter, sampling mode, tau, tokens, times).
`RoutingStats` adds it to per-(task, mode, drafter) counters and to a short list of recent rewards (what the policy
reads, so it follows a drafter that changes), and appends the query to a capped Redis Stream (the
query log that task detection can re-run on).

Redis may go away. Then nothing here raises: records wait in a bounded in-memory queue and are
written when Redis answers again, reads return the last values read, and one warning is logged
per outage. Calls use short socket timeouts, so a dead server costs milliseconds, and after a
failure the server is not tried again for `retry_s`. Whether Redis answered at its last use and how
many records wait in memory go to a `StatsRecorder` where they change (a failure, a recovery, a
record queued); it is a no-op unless the replica passes its metrics, `router.metrics`.

Keys (prefix `specroute` by default): `{p}:arms:{task}:{mode}` (set of drafters seen),
`{p}:arm:{task}:{mode}:{drafter}` (hash of counters), `{p}:recent:{task}:{mode}:{drafter}` (list of
rewards, newest first), `{p}:log`
(stream). This module knows nothing about classifiers or how a drafter is chosen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import redis

log = logging.getLogger("specroute.router")

MAX_LOGGED_PROMPT_CHARS = 4096


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, as the router saw it."""

    task: str
    drafter: str
    tau: float
    tokens: int
    rounds: int
    decode_s: float  # time spent drafting and verifying, prefill excluded
    prompt: str = ""
    confidence: float = 1.0
    source: str = "classifier"
    mode: str = "greedy"  # the routes it was taken from: greedy or sampled

    @property
    def reward(self) -> float:
        """Decoding tokens/s: what the policy maximises (tau and drafter cost in one figure)."""
        return self.tokens / self.decode_s if self.decode_s > 0 else 0.0


class StatsRecorder:
    """Where the statistics report Redis's state; this base records nothing (tests, in-process use)."""

    def redis_state(self, up: bool, buffered: int) -> None:
        """Redis answered at its last use (`up`), and `buffered` records wait in memory."""


@dataclass
class ArmStats:
    """Counters of one (task, drafter) and its recent rewards, newest first."""

    requests: int = 0
    tokens: int = 0
    rounds: int = 0
    decode_s: float = 0.0
    recent: list[float] = field(default_factory=list)

    @property
    def tau(self) -> float:
        return self.tokens / self.rounds if self.rounds else 0.0

    @property
    def recent_mean(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None


class RoutingStats:
    def __init__(self, url: str, prefix: str = "specroute", recent: int = 32, log_cap: int = 10_000,
                 retry_s: float = 1.0, pending_cap: int = 10_000, timeout_s: float = 0.2,
                 recorder: StatsRecorder | None = None):
        self.url, self.prefix, self.recent, self.log_cap, self.retry_s = url, prefix, recent, log_cap, retry_s
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                            decode_responses=True)
        self._pending: deque[RequestRecord] = deque(maxlen=pending_cap)
        self._last_arms: dict[str, dict[str, ArmStats]] = {}
        self._down_since: float | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()
        self.recorder = recorder or StatsRecorder()
        self._reported: tuple[bool, int] | None = None
        self._report()

    # --- availability -------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _report(self) -> None:
        """Tells the recorder Redis's state and the backlog, when either changed since last told."""
        state = (self.available, len(self._pending))
        if state != self._reported:
            self._reported = state
            self.recorder.redis_state(*state)

    def _usable(self) -> bool:
        return self._down_since is None or time.monotonic() >= self._next_try

    def _failed(self, err: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("Redis at %s unreachable (%s): routing goes on with the last known statistics; "
                        "records are kept in memory until it returns", self.url, err)
        self._next_try = time.monotonic() + self.retry_s
        self._report()

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("Redis at %s is back after %.1f s; %d buffered records written", self.url,
                        time.monotonic() - self._down_since, len(self._pending))
            self._down_since = None
        self._report()

    # --- writes -------------------------------------------------------------------------------

    def record(self, rec: RequestRecord) -> bool:
        """Adds a finished request; True if it (and any backlog) reached Redis. Never raises."""
        with self._lock:
            self._pending.append(rec)
            if not self._usable():
                self._report()  # one more record waits
                return False
            batch = list(self._pending)
            try:
                pipe = self._client.pipeline(transaction=False)
                for r in batch:
                    self._write(pipe, r)
                pipe.execute()
            except redis.exceptions.RedisError as err:
                self._failed(err)
                return False
            for _ in batch:
                self._pending.popleft()
            self._recovered()
            return True

    def _write(self, pipe, r: RequestRecord) -> None:
        p = self.prefix
        pipe.sadd(f"{p}:arms:{r.task}:{r.mode}", r.drafter)
        arm = f"{p}:arm:{r.task}:{r.mode}:{r.drafter}"
        pipe.hincrby(arm, "requests", 1)
        pipe.hincrby(arm, "tokens", r.tokens)
        pipe.hincrby(arm, "rounds", r.rounds)
        pipe.hincrbyfloat(arm, "decode_s", r.decode_s)
        recent = f"{p}:recent:{r.task}:{r.mode}:{r.drafter}"
        pipe.lpush(recent, r.reward)
        pipe.ltrim(recent, 0, self.recent - 1)
        entry = asdict(r)
        entry["prompt"] = r.prompt[:MAX_LOGGED_PROMPT_CHARS]
        entry["time"] = time.time()
        pipe.xadd(f"{p}:log", {k: str(v) for k, v in entry.items()}, maxlen=self.log_cap, approximate=True)

    # --- reads --------------------------------------------------------------------------------

    def arms(self, task: str, mode: str = "greedy") -> dict[str, ArmStats]:
        """{drafter: stats} for a task in a sampling mode; the last values read if Redis does not
        answer. Never raises."""
        arm = f"{task}:{mode}"
        with self._lock:
            if not self._usable():
                return self._last_arms.get(arm, {})
            try:
                drafters = sorted(self._client.smembers(f"{self.prefix}:arms:{arm}"))
                pipe = self._client.pipeline(transaction=False)
                for d in drafters:
                    pipe.hgetall(f"{self.prefix}:arm:{arm}:{d}")
                    pipe.lrange(f"{self.prefix}:recent:{arm}:{d}", 0, -1)
                replies = pipe.execute()
            except redis.exceptions.RedisError as err:
                self._failed(err)
                return self._last_arms.get(arm, {})
            self._recovered()
            result = {}
            for i, d in enumerate(drafters):
                h, recent = replies[2 * i], replies[2 * i + 1]
                result[d] = ArmStats(int(h.get("requests", 0)), int(h.get("tokens", 0)), int(h.get("rounds", 0)),
                                     float(h.get("decode_s", 0.0)), [float(x) for x in recent])
            self._last_arms[arm] = result
            return result

    def query_log(self, count: int | None = None) -> list[dict]:
        """The logged queries, oldest first (at most `count`, the newest ones)."""
        key = f"{self.prefix}:log"
        if count is None:
            entries = self._client.xrange(key)
        else:
            entries = list(reversed(self._client.xrevrange(key, count=count)))
        return [fields for _, fields in entries]

    def close(self) -> None:
        self._client.close()


def logged_prompts(url: str, prefix: str = "specroute", count: int | None = None) -> list[str]:
    """The prompts of the query log at `url` (for `specroute tasks detect --from-redis`)."""
    stats = RoutingStats(url, prefix, timeout_s=5.0)
    try:
        return [entry["prompt"] for entry in stats.query_log(count) if entry.get("prompt", "").strip()]
    except redis.exceptions.RedisError as err:
        raise RuntimeError(f"cannot read the query log from Redis at {url}: {err}") from err
    finally:
        stats.close()
