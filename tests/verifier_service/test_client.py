"""The verifier pool's discovery: refreshed on use, never polled while idle, bounded per period."""

from __future__ import annotations

import time

from tests.polling import wait_for
from verifier_service.client import ReplicaInfo, VerifierPool


class Directory:
    """A discover() callable over a list the test changes; counts its calls."""

    def __init__(self, *addresses: str):
        self.addresses, self.calls = list(addresses), 0

    def __call__(self) -> list[ReplicaInfo]:
        self.calls += 1
        return [ReplicaInfo(a) for a in self.addresses]


def test_an_idle_pool_does_not_poll():
    directory = Directory("127.0.0.1:1")
    pool = VerifierPool(directory, refresh_s=0.05)
    try:
        time.sleep(0.5)
        assert directory.calls == 1, "only the first discovery, however long the pool sits idle"
    finally:
        pool.close()


def test_a_pool_in_use_follows_replicas_added_and_removed():
    directory = Directory("127.0.0.1:1")
    pool = VerifierPool(directory, refresh_s=0.05, eager=False)
    try:
        assert wait_for(lambda: pool.pick() == "127.0.0.1:1"), "the first discovery runs in the background"
        directory.addresses = ["127.0.0.1:2"]
        time.sleep(0.1)
        assert wait_for(lambda: pool.pick() == "127.0.0.1:2"), "a pick on a stale list asks for a fresh one"
        directory.addresses = []
        assert wait_for(lambda: pool.pick() is None)
    finally:
        pool.close()


def test_picks_refresh_at_most_once_a_period():
    directory = Directory("127.0.0.1:1", "127.0.0.1:2")
    pool = VerifierPool(directory, refresh_s=2.0)
    try:
        start = time.monotonic()
        while time.monotonic() - start < 0.3:
            assert pool.pick() is not None
        assert directory.calls == 1, "the list is fresh for refresh_s"
        time.sleep(2.1)
        for _ in range(50):
            pool.pick()
        assert wait_for(lambda: directory.calls == 2)
        time.sleep(0.2)
        assert directory.calls == 2, "one refresh for many picks"
    finally:
        pool.close()
