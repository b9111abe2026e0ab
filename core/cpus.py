"""Pinning compute threads to CPUs (Linux's `sched_setaffinity`), for hosts where a replica's
compute shares a few cores with Ray's own processes.

A single stream alternates drafting and verifying, so its two compute threads (a drafter
replica's drafting thread, the verifier's forward thread) never run at once and can share a core,
as the in-process engine's one thread does. On a 2-core host where they float, the idle Ray and
Serve system's wake-ups can preempt them several times a round. Giving them a core of their own
(`deployment.cpus`) and starting Ray's processes on the others (`ray_cpus`) keeps those wake-ups
off the compute: vLLM's CPU backend binds its OpenMP threads to cores for the same reason
(`VLLM_CPU_OMP_THREADS_BIND`). What pinning gains on a small host is measured in
`bench/results/earlier/README.md`. Under many streams the compute threads do run at once, and one
shared core would serialise them: that calls for cores enough for each, or no pinning.

- `check(cpus)`: at a replica's start, ValueError if the CPUs cannot be used on this host.
- `pin(cpus)`: moves the calling thread, and the threads it starts later, onto the CPUs (a
  thread pool's initializer, or a thread's first line). Other threads of the process stay put.
- `starting_on(cpus)`: processes started inside it (Ray's daemons, and the workers they start)
  inherit the CPUs; the calling thread's own affinity is restored after.

This module knows nothing of models, gRPC or Ray.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator


def supported() -> bool:
    return hasattr(os, "sched_setaffinity")


def pin(cpus: Iterable[int] | None) -> None:
    """The calling thread runs on `cpus` from now on (None: leaves it as it is). Linux applies
    affinity per thread, so only this thread moves (and threads it starts later inherit it)."""
    if cpus is not None:
        os.sched_setaffinity(0, set(cpus))


def check(cpus: Iterable[int] | None, field: str = "cpus") -> None:
    """ValueError, naming the setting (`field`) and the CPUs, where a thread cannot be pinned to them on this host (no such
    CPU, outside the container's cpuset, or not Linux). Probes on a short-lived thread, so no
    thread of the caller moves."""
    if cpus is None:
        return
    cpus = sorted(set(cpus))
    if not supported():
        raise ValueError(f"{field} {cpus}: pinning threads to CPUs needs Linux (os.sched_setaffinity)")
    failure: list[OSError] = []

    def probe() -> None:
        try:
            pin(cpus)
        except OSError as err:
            failure.append(err)

    thread = threading.Thread(target=probe, name="cpus-check")
    thread.start()
    thread.join()
    if failure:
        raise ValueError(f"{field} {cpus}: not usable on this host ({os.cpu_count()} CPUs; "
                         f"{failure[0].strerror or failure[0]})")


@contextlib.contextmanager
def starting_on(cpus: Iterable[int] | None, field: str = "cpus") -> Iterator[None]:
    """Within it, the calling thread (and so every process it starts) runs on `cpus`; its own
    affinity is restored on leaving. None: does nothing."""
    if cpus is None:
        yield
        return
    check(cpus, field)
    before = os.sched_getaffinity(0)
    pin(cpus)
    try:
        yield
    finally:
        pin(before)
