"""free_port: ports for servers bound later by other processes."""

import socket

from router.redis_server import RESERVED_BELOW, _ephemeral_start, free_port


def test_free_ports_avoid_rays_worker_ports_and_the_ephemeral_range():
    ports = {free_port() for _ in range(20)}
    assert all(RESERVED_BELOW <= p < _ephemeral_start() for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when handed out
