"""The kernel's per-thread accounting read back for a process: CPU time grows with work."""

import os
import threading

from bench.schedstat import CpuTimes, process_times


def test_cpu_time_of_this_process_grows_with_work_on_any_thread():
    before = process_times(os.getpid())
    assert isinstance(before, CpuTimes)
    done, release = threading.Event(), threading.Event()

    def work() -> None:
        sum(i * i for i in range(2_000_000))
        done.set()
        release.wait(10)  # alive while it is read: an ended thread drops out of the sums
    worker = threading.Thread(target=work)
    worker.start()
    done.wait(10)
    spent = process_times(os.getpid()) - before
    release.set()
    worker.join()
    assert spent.cpu_s > 0.01 and spent.wait_s >= 0


def test_a_process_that_does_not_exist_reads_as_none():
    assert process_times(2 ** 22 + 7) is None
