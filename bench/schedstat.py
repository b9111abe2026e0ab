"""Where a process's time went, from the kernel's own accounting: running, or runnable and waiting
for a CPU.

Linux keeps, per thread, `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU, nanoseconds
runnable but waiting on a run queue, and timeslices (Documentation/scheduler/sched-stats.rst).
Summed over a process's threads, before and after a piece of work, they say whether the work was
slow because it computed more or because its threads waited for a core, which is what a round
trip between processes on a small machine pays at every wake-up.

Threads that end between two readings drop out of the sums (the kernel keeps no per-process
total of waiting), so long-lived threads are what these readings measure. `replica_pids` finds
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

    def __sub__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(self.cpu_s - other.cpu_s, self.wait_s - other.wait_s)


def process_times(pid: int) -> CpuTimes | None:
    """The process's threads' totals now; None where schedstat cannot be read."""
    tasks = Path(f"/proc/{pid}/task")
    cpu = wait = 0
    try:
        threads = os.listdir(tasks)
    except OSError:
        return None
    for tid in threads:
        try:
            fields = (tasks / tid / "schedstat").read_text().split()
        except OSError:  # a thread that ended meanwhile
            continue
        cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
    return CpuTimes(cpu / 1e9, wait / 1e9)


def replica_pids(app_name: str) -> dict[str, int]:
    """{deployment name: pid} for the Serve replicas of an application running on this machine
    (the first replica found of each deployment). Ray titles a replica's process
    `ray::ServeReplica:<app>:<deployment>`, with `.<method>` appended while a call runs."""
    prefix = f"ray::ServeReplica:{app_name}:"
    pids: dict[str, int] = {}
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit():
            continue
        try:
            title = (Path("/proc") / entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:  # a process that ended meanwhile
            continue
        if title.startswith(prefix):
            deployment = title[len(prefix):].split()[0].split(".")[0]
            pids.setdefault(deployment, int(entry))
    return pids
