"""The verifier's autoscaling policy: replicas from the sessions and queued work replicas report."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from verifier_service.autoscale import desired_replicas, scale_on_sessions


@pytest.mark.parametrize("sessions, queued, per_replica, current, want", [
    (0, 0, 4, 2, 0),     # idle: Serve's min_replicas decides
    (1, 0, 4, 1, 1),
    (8, 0, 4, 1, 2),     # 4 sessions a replica
    (9, 0, 4, 1, 3),
    (4, 9, 4, 1, 2),     # work queues faster than one replica clears it
    (4, 3, 4, 1, 1),
])
def test_desired_replicas(sessions, queued, per_replica, current, want):
    assert desired_replicas(sessions, queued, per_replica, current) == want


def test_policy_reads_serve_custom_metrics():
    ctx = SimpleNamespace(aggregated_metrics={"sessions": {"r1": 5.0, "r2": 6.0}, "queued": {"r1": 1.0}},
                          config=SimpleNamespace(target_ongoing_requests=4), current_num_replicas=2)
    assert scale_on_sessions(ctx) == (3, {"sessions": 11.0, "queued": 1.0})
    ctx.aggregated_metrics = None  # no report yet
    assert scale_on_sessions(ctx)[0] == 0
