"""Where the verifier replicas are: a small registry that replicas report to and drafters read.

Each verifier replica calls `heartbeat(address, replica, active_sessions)` every second or so;
an entry not refreshed for `ttl_s` is dropped, and a replica that shuts down gracefully calls
`remove`. Drafter replicas read `replicas()` in the background (`verifier_service.client`) and
open each session on the least loaded one. So drafters follow replicas being added and removed
without going through Ray Serve for per-round traffic: the directory is consulted once a second,
trees go straight to a replica over gRPC.

In the Ray Serve app it is a deployment of one replica; if that replica restarts, verifiers
re-register within a heartbeat and drafters keep their last list meanwhile. This module knows
nothing about gRPC or sessions.
"""

from __future__ import annotations

import time


class VerifierDirectory:
    def __init__(self, ttl_s: float = 5.0):
        self.ttl_s = ttl_s
        self._entries: dict[str, dict] = {}

    def heartbeat(self, address: str, replica: str, active_sessions: int, max_sessions: int,
                  stats: dict | None = None) -> None:
        """stats: the replica's counters (forwards, trees verified, ...), passed through for observers."""
        self._entries[address] = {"address": address, "replica": replica, "active_sessions": active_sessions,
                                  "max_sessions": max_sessions, "stats": stats or {}, "seen": time.monotonic()}

    def remove(self, address: str) -> None:
        self._entries.pop(address, None)

    def replicas(self) -> list[dict]:
        """Live replicas: address, replica, active_sessions, max_sessions, stats."""
        now = time.monotonic()
        for address in [a for a, e in self._entries.items() if now - e["seen"] > self.ttl_s]:
            del self._entries[address]
        return [{k: v for k, v in e.items() if k != "seen"} for e in self._entries.values()]
