"""Waiting in tests for what another thread or process does, within a bound."""

from __future__ import annotations

import time


def wait_for(predicate, timeout_s: float = 5.0, every_s: float = 0.02):
    """Polls `predicate` until it is true or `timeout_s` has passed; returns its last value."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()
