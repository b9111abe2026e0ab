"""How many verifier replicas the load needs: a Ray Serve custom autoscaling policy.

Drafters reach verifier replicas over direct gRPC (a Serve handle would add a hop to every
round), so Serve's own signal, the requests in flight through its handles, is always zero for
the verifier. Each replica reports its own load instead, through Serve's custom
autoscaling metrics (`VerifierDeployment.record_autoscaling_stats`):
- `sessions`: open generation streams;
- `queued`: trees and prefill chunks waiting for the next batched forward.

`scale_on_sessions` asks for enough replicas that each holds about `target_ongoing_requests`
sessions (the autoscaling config's own field, read here as sessions per replica), plus one more
when work queues up faster than one forward a round can clear (`queued` above the sessions a
replica is meant to hold). Serve applies `min_replicas`/`max_replicas`, the up- and downscale
delays and the scaling factors around it (`ray.serve.autoscaling_policy`), so this function only
states the need.

Enable it with `autoscaling_config.policy.policy_function:
verifier_service.autoscale:scale_on_sessions`; `specroute.app` does so for the verifier whenever
its deployment has an autoscaling config without a policy. This module knows nothing about
models or gRPC: it reads numbers.
"""

from __future__ import annotations

import math
from typing import Any

POLICY = "verifier_service.autoscale:scale_on_sessions"


def desired_replicas(sessions: float, queued: float, per_replica: float, current: int) -> int:
    """Replicas for `sessions` open streams at `per_replica` each; one more if work queues up."""
    need = math.ceil(sessions / per_replica) if sessions > 0 else 0
    if current > 0 and queued / current > per_replica:
        need = max(need, current + 1)
    return max(need, 1 if sessions > 0 else 0)


def scale_on_sessions(ctx) -> tuple[int, dict[str, Any]]:
    """Serve policy: (desired replicas, policy state) from the replicas' reported sessions."""
    metrics = ctx.aggregated_metrics or {}
    sessions = sum(metrics.get("sessions", {}).values())
    queued = sum(metrics.get("queued", {}).values())
    per_replica = getattr(ctx.config, "target_ongoing_requests", None) or 2.0
    want = desired_replicas(sessions, queued, per_replica, ctx.current_num_replicas)
    return want, {"sessions": sessions, "queued": queued}
