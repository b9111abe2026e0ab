"""Where a process's time went, from the kernel's own accounting: running, or runnable and waiting
for a CPU.

Linux keeps, per thread, `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU, nanoseconds
runnable but waiting on a run queue, and timeslices (Documentation/scheduler/sched-stats.rst).
Summed over a process's threads, before and after a piece of work, they say whether the work was
slow because it computed more or because its threads waited for a core, which is what a round
trip between processes on a small machine pays at every wake-up.

Readings are per thread: a thread that ends between two readings drops out (the kernel keeps no
per-process total of waiting), so long-lived threads are what these readings measure. `replica_pids` finds
the processes of a Serve application's replicas on this machine by their titles. This module
knows nothing about what the processes do; on a system without schedstat (not Linux, or a
kernel without it) every reading is None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuTimes:
    """Seconds on a CPU and seconds runnable but waiting for one, summed over a process's threads."""

    cpu_s: float
    wait_s: float

    def __add__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.cpu_s + other.cpu_s, self.wait_s + other.wait_s)


@dataclass(frozen=True)
class Reading:
    """A process's threads' counters at one moment: {thread id: (ns on a CPU, ns waiting)}."""

    threads: dict[int, tuple[int, int]]

    def since(self, before: "Reading") -> CpuTimes:
        """What the process's threads spent between `before` and this reading. A thread that
        started in between counts whole; one that ended in between is missing from both sides'
        difference (the kernel keeps no total for ended threads), so nothing comes out negative."""
        cpu = wait = 0
        for tid, (c, w) in self.threads.items():
            c0, w0 = before.threads.get(tid, (0, 0))
            if c < c0 or w < w0:  # the id was reused by a new thread
                c0 = w0 = 0
            cpu, wait = cpu + c - c0, wait + w - w0
        return CpuTimes(cpu / 1e9, wait / 1e9)


def read(pid: int) -> Reading | None:
    """The process's threads' counters now; None where schedstat cannot be read."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        return None
    threads = {}
    for tid in tids:
        try:
            fields = (tasks / tid / "schedstat").read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        threads[int(tid)] = (int(fields[0]), int(fields[1]))
    return Reading(threads)


def replica_pids(app_name: str) -> dict[str, int]:
    """{deployment name: pid} for the Serve replicas of an application running on this machine.
    Ray titles a replica's process `ray::ServeReplica:<app>:<deployment>`, with `.<method>`
    appended while a call runs. Of several processes with one deployment's title, the newest
    wins: a Ray instance stopped just before may still have processes on their way out."""
    prefix = f"ray::ServeReplica:{app_name}:"
    found: dict[str, tuple[int, int]] = {}  # deployment: (start time, pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        proc = Path("/proc") / entry
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not title.startswith(prefix):
                continue
            started = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        except (OSError, ValueError, IndexError):  # a process that ended meanwhile
            continue
        deployment = title[len(prefix):].split()[0].split(".")[0]
        found[deployment] = max(found.get(deployment, (-1, 0)), (started, int(entry)))
    return {deployment: pid for deployment, (_, pid) in found.items()}


def thread_cpus(pid: int) -> dict[str, int]:
    """How many of the process's threads may run on each set of CPUs, e.g. {"0": 40, "1": 2}
    (the kernel's `Cpus_allowed_list`); {} where the process cannot be read."""
    counts: dict[str, int] = {}
    tasks = Path(f"/proc/{pid}/task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        return counts
    for tid in tids:
        try:
            status = (tasks / tid / "status").read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus = line.split(":", 1)[1].strip()
                counts[cpus] = counts.get(cpus, 0) + 1
    return counts
