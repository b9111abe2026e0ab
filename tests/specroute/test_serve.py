"""`LocalSystem` leaves nothing behind: not after `stop()`, and not after a start that fails.

Real Ray, real Serve and the real embedded Redis on the tiny zoo, with one drafter (the routing
default) deployed.
"""

import glob
import os
import tempfile

import pytest

from tests.specroute.systems import start_tiny_system

pytestmark = pytest.mark.integration


def _redis_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "specroute-redis-*")))


def _ray_up() -> bool:
    import ray
    return ray.is_initialized()


def test_stop_removes_redis_its_directory_and_ray(built_zoo):
    before = _redis_dirs()
    system = start_tiny_system(built_zoo, ("generic-llama",))
    try:
        made = _redis_dirs() - before
        assert len(made) == 1 and system.redis.running
        process = system.redis._process
    finally:
        system.stop()
    assert process.poll() is not None, "redis-server still runs after stop()"
    assert not made & _redis_dirs(), "Redis's working directory is left behind after stop()"
    assert not _ray_up()


def test_a_start_that_fails_stops_what_it_started(built_zoo):
    before = _redis_dirs()
    with pytest.raises(TimeoutError, match="not running"):
        start_tiny_system(built_zoo, ("generic-llama",), ready_timeout_s=0.0)
    assert _redis_dirs() == before, "a failed start left Redis's working directory behind"
    assert not _ray_up(), "a failed start left its local Ray running"
