"""A bounded soak: mixed greedy and sampled traffic at the session limit, with cancellations, a
verifier replica killed and the embedded Redis killed (and restarted by its supervisor) during it.

Loopback only; it stops by itself after SPECROUTE_SOAK_S seconds of load (90 by default, about 3
minutes in all with the system's start). Nothing may be lost: every request completes (greedy:
with the target's own output) or gets a retryable status; afterwards no session is left open,
every replica is back, and the routing statistics in Redis resume.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from specroute import errors
from specroute.client import Client
from tests.polling import wait_for
from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration

SOAK_S = float(os.environ.get("SPECROUTE_SOAK_S", "90"))
CLIENTS = 8  # more than the verifiers' sessions (2 replicas x 3): the limit is reached
MAX_NEW = 16
RETRYABLE = (errors.UnavailableError, errors.ResourceExhaustedError)


@pytest.fixture(scope="module")
def system(built_zoo):
    system = start_tiny_system(built_zoo, ("generic-llama", "ngram"),
                               verifier={"deployment": {"num_replicas": 2, "num_cpus": 0.25}, "max_sessions": 3,
                                         "failover_timeout_s": 30})
    yield system
    system.stop()


def _sessions(system) -> int:
    from ray import serve
    directory = serve.get_deployment_handle("VerifierDirectory", system.config.app_name)
    return sum(r["active_sessions"] for r in directory.replicas.remote().result(timeout_s=10))


def _logged(system) -> int:
    import redis
    client = redis.Redis.from_url(system.config.redis.url, socket_timeout=2)
    try:
        return client.xlen(f"{system.config.redis.prefix}:log")
    finally:
        client.close()


@pytest.mark.timeout(1200)  # the system's start and stop, the references, the load and its recovery
def test_soak_loses_nothing(system, built_zoo):
    import ray

    from specroute.engine import Engine
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import load_manifest
    tests = load_split(built_zoo / load_manifest(built_zoo)["corpus"]["files"]["test"])
    prompts = list({ex.task: ex.prompt for ex in tests}.values())
    engine = Engine.load(built_zoo / "target", device="cpu")
    reference = {p: engine.generate(p, MAX_NEW).token_ids for p in prompts}

    outcomes = {"greedy": 0, "sampled": 0, "cancelled": 0, "retryable": 0}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SOAK_S

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        with Client(system.grpc_address, timeout=120) as client:
            while time.monotonic() < deadline:
                prompt = rng.choice(prompts)
                kind = rng.choice(["greedy", "greedy", "sampled", "cancelled"])
                try:
                    if kind == "cancelled":
                        stream = client.stream(prompt, max_new_tokens=MAX_NEW * 4)
                        next(stream)
                        stream.close()  # cancel mid-stream
                    elif kind == "sampled":
                        done = client.generate(prompt, max_new_tokens=MAX_NEW, temperature=1.0, seed=rng.randrange(99))
                        assert done.metadata.num_generated > 0
                    else:
                        done = client.generate(prompt, max_new_tokens=MAX_NEW)
                        if done.token_ids != reference[prompt]:
                            with lock:
                                failures.append(f"greedy output differs for {prompt!r}")
                    with lock:
                        outcomes[kind] += 1
                except RETRYABLE:
                    with lock:
                        outcomes["retryable"] += 1
                    time.sleep(0.1)  # the hint's back-off
                except StopIteration:
                    with lock:
                        outcomes[kind] += 1
                except Exception as err:  # anything else is a lost request
                    with lock:
                        failures.append(f"{kind}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(SOAK_S / 3)
    victim = next(e for e in ray.util.list_named_actors(all_namespaces=True)
                  if e["name"].startswith("SERVE_REPLICA::") and "#Verifier#" in e["name"])
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=False)
    time.sleep(SOAK_S / 3)
    redis_pid = system.redis.pid
    os.kill(redis_pid, signal.SIGKILL)  # a crash: the supervisor restarts it with its data
    for t in threads:
        t.join(timeout=SOAK_S + 180)
    assert not any(t.is_alive() for t in threads), "a client hung"

    assert not failures, failures[:10]
    assert outcomes["greedy"] > 0 and outcomes["sampled"] > 0 and outcomes["cancelled"] > 0, outcomes
    assert wait_for(lambda: _sessions(system) == 0, 30), "a session leaked"
    assert wait_for(lambda: system.redis.restarts >= 1 and system.redis.pid != redis_pid, 10)
    counts = system.replica_counts()
    assert counts["Verifier"] == 2 and counts["Drafter-generic-llama"] == 1, counts
    before = _logged(system)
    with Client(system.grpc_address, timeout=120) as client:
        for prompt in prompts[:3]:
            assert client.generate(prompt, max_new_tokens=MAX_NEW).token_ids == reference[prompt]
    assert wait_for(lambda: _logged(system) >= before + 3, 20), "routing statistics did not resume"
    print(f"soak {SOAK_S:g} s: {outcomes}")
