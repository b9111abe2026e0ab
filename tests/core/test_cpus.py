"""Pinning compute threads to CPUs: only the pinned thread moves, threads and processes it starts
inherit its CPUs, and CPUs the host does not have fail at once with the setting's name."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from core import cpus

pytestmark = pytest.mark.skipif(not cpus.supported(), reason="CPU affinity is Linux's")


def _in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_pin_moves_only_the_calling_thread_and_what_it_starts():
    mine = os.sched_getaffinity(0)
    one = min(mine)

    def pinned_then_child():
        cpus.pin([one])
        return os.sched_getaffinity(0), _in_thread(lambda: os.sched_getaffinity(0))

    assert _in_thread(pinned_then_child) == ({one}, {one})
    assert os.sched_getaffinity(0) == mine
    cpus.pin(None)  # nothing to do
    assert os.sched_getaffinity(0) == mine


def test_processes_started_on_cpus_inherit_them_and_the_caller_gets_its_own_back():
    mine = os.sched_getaffinity(0)
    one = min(mine)

    def child_cpus() -> set[int]:
        code = "import os; print(sorted(os.sched_getaffinity(0)))"
        return set(eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout))

    with cpus.starting_on([one]):
        assert os.sched_getaffinity(0) == {one}
        assert child_cpus() == {one}
    assert os.sched_getaffinity(0) == mine
    with cpus.starting_on(None):
        assert child_cpus() == mine


def test_cpus_the_host_lacks_fail_at_once_with_the_settings_name():
    missing = (os.cpu_count() or 1) + 64
    with pytest.raises(ValueError, match=rf"ray_cpus \[{missing}\]: not usable on this host"):
        with cpus.starting_on([missing], "ray_cpus"):
            pass
    with pytest.raises(ValueError, match=r"deployment.cpus"):
        cpus.check([missing], "deployment.cpus")
    cpus.check(None)
    cpus.check(sorted(os.sched_getaffinity(0)))
