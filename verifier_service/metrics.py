"""The verifier replica's Ray Serve metrics: a `VerifierObserver` that records what the server does.

`VerifierMetrics` implements `verifier_service.server.VerifierObserver` with `ray.serve.metrics`
(so Ray adds the `deployment`, `replica` and `application` tags), exported on Ray's Prometheus
endpoint:
- `specroute_verifier_sessions_open` (Gauge): open sessions on this replica;
- `specroute_verifier_sessions_refused` (Counter, tag `reason`): sessions refused before they
  opened (`verifier_service.server.refusal_reason`: draining, session_limit, pool_full, invalid,
  idle);
- `specroute_verifier_trees_per_forward` (Histogram): trees verified in one target forward (1
  when unbatched);
- `specroute_verifier_batch_tokens` (Histogram): tree tokens in one target forward;
- `specroute_verifier_queue_wait_seconds` (Histogram): how long a tree waited before its forward
  started;
- `specroute_verifier_kv_slots_used` / `specroute_verifier_kv_slots_free` (Gauges): the batched KV
  pool's slots (0 and 0 unbatched).

Create it inside the replica (its constructor), never at import: Ray metrics need a running Ray
worker. This module knows nothing about gRPC, sessions or trees; it only records numbers.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

# Latency buckets (seconds) of every deployment's histograms, router and drafters included.
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
TREES_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64]
TOKENS_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class VerifierMetrics:
    """A `VerifierObserver` recording into Ray Serve metrics (thread-safe: Ray's recorders are)."""

    def __init__(self):
        self._sessions_open = Gauge("specroute_verifier_sessions_open", description="Open sessions on this replica.")
        self._refused = Counter("specroute_verifier_sessions_refused",
                                description="Sessions refused before they opened, by reason.", tag_keys=("reason",))
        self._trees = Histogram("specroute_verifier_trees_per_forward",
                                description="Trees verified in one target forward (1 when unbatched).",
                                boundaries=TREES_BOUNDARIES)
        self._tokens = Histogram("specroute_verifier_batch_tokens", description="Tree tokens in one target forward.",
                                 boundaries=TOKENS_BOUNDARIES)
        self._queue_wait = Histogram("specroute_verifier_queue_wait_seconds",
                                     description="Time a tree waited before its forward started.",
                                     boundaries=LATENCY_BOUNDARIES_S)
        self._slots_used = Gauge("specroute_verifier_kv_slots_used",
                                 description="KV-pool slots in use (batched mode; 0 unbatched).")
        self._slots_free = Gauge("specroute_verifier_kv_slots_free", description="KV-pool slots free.")

    def sessions_open(self, sessions: int) -> None:
        self._sessions_open.set(sessions)

    def session_refused(self, reason: str) -> None:
        self._refused.inc(1, tags={"reason": reason})

    def forward(self, trees: int, tokens: int) -> None:
        self._trees.observe(trees)
        self._tokens.observe(tokens)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def kv_slots(self, used: int, free: int) -> None:
        self._slots_used.set(used)
        self._slots_free.set(free)
