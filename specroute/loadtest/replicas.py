"""Replica counts during a load test: a sampling thread, and the counter that asks Ray Serve.

`ray_replica_counter` connects to a Ray cluster (probing an address with a port first, since
`ray.init` retries an unreachable one for minutes) and returns `serve_replica_counts`, which counts
every replica of each deployment in `ray.serve.status()`, whatever its state. `ReplicaSampler` calls
a counter about once a second from a daemon thread, so a slow call never stalls the load.
This module knows nothing about prompts, requests or reports.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Callable, Mapping

REPLICA_SAMPLE_S = 1.0  # how often replica counts are sampled


class ReplicaSampler:
    """Calls `replica_counts()` about every `interval_s` in a daemon thread until stopped (then once more)."""

    def __init__(self, replica_counts: Callable[[], Mapping[str, int]], t0: float,
                 interval_s: float = REPLICA_SAMPLE_S):
        self._fn = replica_counts
        self._t0 = t0
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: list[dict] = []
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="loadtest-replicas", daemon=True)

    def start(self) -> ReplicaSampler:
        self._thread.start()
        return self

    def _sample(self) -> None:
        start = time.perf_counter()
        try:
            counts = {str(k): int(v) for k, v in dict(self._fn()).items()}
            self.samples.append({"t_s": round(start - self._t0, 3), "counts": counts})
        except Exception as err:
            self.failures += 1
            self.last_error = f"{type(err).__name__}: {err}"[:300]

    def _run(self) -> None:
        while True:
            start = time.perf_counter()
            self._sample()
            if self._stop.is_set():
                return
            if self._stop.wait(max(0.0, self._interval_s - (time.perf_counter() - start))):
                self._sample()  # the state at the end of the run
                return

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.last_error = f"replica_counts() did not return within {timeout_s:.0f} s of the end"


def serve_replica_counts(app_name: str | None = None) -> dict[str, int]:
    """{deployment: replicas in any state} from `ray.serve.status()` (the caller is connected to Ray).

    With several applications (and no `app_name`) the keys are `app/deployment`."""
    from ray import serve
    apps = serve.status().applications
    if app_name is not None:
        apps = {app_name: apps[app_name]} if app_name in apps else {}
    several = len(apps) > 1
    return {(f"{app}/{name}" if several else name): sum(d.replica_states.values())
            for app, status in apps.items() for name, d in status.deployments.items()}


def _probe(address: str, timeout_s: float = 3.0) -> str | None:
    """Why nothing answers at a HOST:PORT (or ray://HOST:PORT) address, or None when something does
    or the address names no port (`auto`: Ray finds the local cluster itself)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"nothing answers at {host}:{port}: {err.strerror or type(err).__name__}"


def ray_replica_counter(address: str | None) -> tuple[Callable[[], dict[str, int]] | None, str, Callable[[], None]]:
    """Connect to Ray for replica counts: (counter or None, a note for the report, disconnect).

    `address` is what `ray.init(address=...)` takes (`auto`, `HOST:PORT`, `ray://HOST:10001`);
    None or "none" turns replica counts off. An address with a port is probed first (3 s), since
    `ray.init` retries an address nobody answers at for minutes. When Ray or Serve cannot be reached
    the counter is None and the note says why; the load test goes on without replica counts."""
    def nothing() -> None:
        return None

    if address is None or address.strip().lower() in ("", "none"):
        return None, "replica counts off (--ray-address none)", nothing
    address = address.strip()
    refused = _probe(address)
    if refused:  # ray.init would retry an address nobody answers at for minutes
        return None, f"could not reach Ray at {address!r} ({refused}); no replica counts", nothing
    import ray
    connected_here = False
    try:
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            connected_here = True
        counts = serve_replica_counts()
    except Exception as err:
        if connected_here:
            with contextlib.suppress(Exception):
                ray.shutdown()
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return None, (f"could not reach Ray at {address!r} ({type(err).__name__}: {detail}); "
                      "no replica counts"), nothing

    def disconnect() -> None:
        if connected_here:  # disconnects this driver; the cluster keeps running
            with contextlib.suppress(Exception):
                ray.shutdown()

    if not counts:
        return serve_replica_counts, f"Ray at {address!r}: Serve runs no application yet", disconnect
    return serve_replica_counts, f"ray.serve.status() via Ray at {address!r}", disconnect
