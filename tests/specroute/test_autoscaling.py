"""Autoscaling on a real local Ray cluster: up under load, down after, within limits that fit 2 cores.

The verifier's traffic bypasses Serve handles, so it scales on the sessions its replicas report
(`verifier_service.autoscale`); the drafter scales on Serve's own ongoing-requests signal. Load is
a bounded number of SDK streams on loopback for a bounded time.
"""

from __future__ import annotations

import threading
import time

import pytest

from specroute.client import Client
from specroute.config import DeploymentOptions
from tests.polling import wait_for
from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration

FAST = {"min_replicas": 1, "max_replicas": 2, "metrics_interval_s": 0.5, "look_back_period_s": 2.0,
        "upscale_delay_s": 1.0, "downscale_delay_s": 4.0}
STREAMS = 6
LOAD_LIMIT_S = 90  # the load stops by itself after this, scaled or not


@pytest.fixture(scope="module")
def system(built_zoo):
    autoscaling = {**FAST, "target_ongoing_requests": 2}
    system = start_tiny_system(  # generic-llama: the router's fallback, at one replica
        built_zoo, ("generic-llama", "ngram"),
        drafter_updates={"ngram": {"deployment": DeploymentOptions(num_cpus=0.25, autoscaling=autoscaling)}},
        verifier={"deployment": {"num_cpus": 0.25, "autoscaling": autoscaling}})
    yield system
    system.stop()


def running(deployment: str, app: str) -> int:
    from ray import serve
    status = serve.status().applications[app].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def test_scales_up_under_load_and_down_after(system):
    app = system.config.app_name
    deployments = ("Verifier", "Drafter-ngram")
    assert all(running(d, app) == 1 for d in deployments)
    stop = threading.Event()
    served, errors = [], []

    def load() -> None:
        with Client(system.grpc_address, timeout=60) as client:
            deadline = time.monotonic() + LOAD_LIMIT_S
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    served.append(client.generate("def parse(text):", max_new_tokens=48, drafter="ngram").text)
                except Exception as err:  # counted, and the test fails on any
                    errors.append(err)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(STREAMS)]
    for w in workers:
        w.start()
    try:
        scaled_up = wait_for(lambda: all(running(d, app) == 2 for d in deployments), LOAD_LIMIT_S - 10, every_s=0.5)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=70)
    assert not errors, errors[:3]
    assert served
    assert scaled_up, {d: running(d, app) for d in deployments}
    assert wait_for(lambda: all(running(d, app) == 1 for d in deployments), 60, every_s=0.5), \
        {d: running(d, app) for d in deployments}
