"""The kernel's per-thread accounting read back for a process: CPU time grows with work, and a
thread that ends between readings never makes a difference negative."""

import os
import threading

from bench.schedstat import CpuTimes, read


def _busy() -> None:
    sum(i * i for i in range(2_000_000))


def test_cpu_time_of_this_process_grows_with_work_on_any_thread():
    before = read(os.getpid())
    done, release = threading.Event(), threading.Event()

    def work() -> None:
        _busy()
        done.set()
        release.wait(10)  # alive while it is read: an ended thread drops out of the readings
    worker = threading.Thread(target=work)
    worker.start()
    done.wait(10)
    spent = read(os.getpid()).since(before)
    release.set()
    worker.join()
    assert isinstance(spent, CpuTimes) and spent.cpu_s > 0.01 and spent.wait_s >= 0


def test_a_thread_that_ends_between_readings_counts_nothing_rather_than_less_than_nothing():
    worker = threading.Thread(target=_busy)
    worker.start()
    worker.join(0.05)
    before = read(os.getpid())  # the worker is still busy here, most likely
    worker.join()
    spent = read(os.getpid()).since(before)
    assert spent.cpu_s >= 0 and spent.wait_s >= 0


def test_a_process_that_does_not_exist_reads_as_none():
    assert read(2 ** 22 + 7) is None
