"""free_port: ports for servers bound later by other processes."""

import socket

from router.redis_server import RESERVED_BELOW, _ephemeral_start, free_port


def test_free_ports_avoid_rays_worker_ports_and_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(RESERVED_BELOW <= p < _ephemeral_start() for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when handed out


def test_a_supervised_server_that_dies_is_restarted_with_its_data(caplog):
    """Killed from outside (a crash), the embedded server comes back on the same port with what
    it held (append-only file), and the outage and recovery are logged; `stop` is left stopped."""
    import logging
    import os
    import signal
    import time

    import redis

    from router.redis_server import EmbeddedRedis
    from tests.polling import wait_for
    caplog.set_level(logging.WARNING, logger="specroute.redis")
    with EmbeddedRedis(supervise=True, check_every_s=0.1) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=1)
        client.set("specroute:test", "kept")
        time.sleep(1.2)  # the append-only file is fsynced every second
        old_pid = server.pid
        os.kill(old_pid, signal.SIGKILL)

        def back() -> bool:
            try:
                return server.restarts == 1 and client.get("specroute:test") == b"kept"
            except redis.exceptions.RedisError:
                return False
        assert wait_for(back, 15)
        assert server.pid != old_pid
        assert any("died" in r.message for r in caplog.records) and any("is back" in r.message for r in caplog.records)
        server.stop()
        time.sleep(0.5)
        assert not server.running and server.restarts == 1
        client.close()
