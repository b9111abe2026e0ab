"""Acceptance logs: for every drafted node, what the drafter knew when it drafted it and whether
the verifier accepted it. The decision models of `drafter_service.stopping` train on them.

A node's row holds its parent's features (the drafter's last hidden state after the parent, and
`q_features` of the distribution the node was drawn from: entropy and top-10 probabilities), its
draft position (depth), its score (cumulative draft log-probability), its own probability under
q, its rank among its siblings, and three verdict flags:
- `reached`: its parent was on the accepted path (or is the root), so the verifier judged it;
- `accepted`: it is on the accepted path;
- `group_accepted`: one of its siblings or itself is (what expanding its parent bought).

`AcceptanceRecorder` collects rows from any number of sessions (thread-safe) and hands them to a
sink when a verdict labels them: `AcceptanceLog` in memory (saved to one `.safetensors` file with
its metadata) or a Redis stream (`RedisAcceptanceSink`, the services' query log).

This module knows nothing about trees' shapes, models or how the verifier decides: sessions give
it rows and verdicts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

FLAGS = ("reached", "accepted", "group_accepted")
COLUMNS = ("q", "depth", "score", "prob", "rank", "greedy", *FLAGS)


@dataclass
class NodeRow:
    """One drafted node before its verdict. `tree_index`/`parent_index`: positions in its tree."""

    tree_index: int
    parent_index: int
    hidden: torch.Tensor | None  # [H] the parent's last hidden state (None when the drafter gives none)
    q: torch.Tensor  # [11] q_features of the parent's distribution
    depth: int
    score: float
    prob: float
    rank: int


class AcceptanceSink(Protocol):
    def add(self, rows: dict[str, torch.Tensor]) -> None:
        """Labelled rows: `COLUMNS` (and "hidden" when known), one entry per node."""


@dataclass
class AcceptanceLog:
    """Labelled rows in memory; `save`/`load` one `.safetensors` file (metadata in its header)."""

    meta: dict = field(default_factory=dict)
    parts: list[dict[str, torch.Tensor]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self.parts.append(rows)

    def columns(self) -> dict[str, torch.Tensor]:
        with self._lock:
            parts = list(self.parts)
        if not parts:
            return {}
        keys = set.intersection(*(set(p) for p in parts))
        return {k: torch.cat([p[k] for p in parts]) for k in sorted(keys)}

    def __len__(self) -> int:
        return sum(len(p["depth"]) for p in self.parts)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = {k: v.contiguous() for k, v in self.columns().items()}
        save_file(columns, path, metadata={"meta": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> "AcceptanceLog":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        return cls(meta=meta, parts=[load_file(str(path))])


class RedisAcceptanceSink:
    """Appends labelled rows to a capped Redis stream (`{prefix}:acceptance`), one entry per verdict,
    without the hidden states (the stream is for reading patterns across requests; the file logs
    keep the states). Never raises: a Redis failure is logged once per outage and the rows dropped."""

    def __init__(self, url: str, prefix: str = "specroute", cap: int = 100_000, drafter: str = ""):
        import redis
        self.client = redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        self.key, self.cap, self.drafter = f"{prefix}:acceptance", cap, drafter
        self._down = False

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        entry = {"drafter": self.drafter, "time": f"{time.time():.3f}",
                 **{k: json.dumps([round(float(x), 5) for x in rows[k].reshape(len(rows["depth"]), -1)
                                   .flatten().tolist()]) for k in COLUMNS}}
        try:
            self.client.xadd(self.key, entry, maxlen=self.cap, approximate=True)
            self._down = False
        except Exception as err:  # Redis is optional for drafting: never fail a round on it
            if not self._down:
                log.warning("acceptance log: Redis unavailable (%s); rows are dropped until it answers", err)
            self._down = True


def read_redis_log(url: str, prefix: str = "specroute", count: int | None = None) -> list[dict]:
    """The stream's entries, oldest first, decoded: {"drafter", "time", column: list}."""
    import redis
    client = redis.Redis.from_url(url, decode_responses=True)
    entries = client.xrange(f"{prefix}:acceptance", count=count)
    return [{k: (json.loads(v) if k in COLUMNS else v) for k, v in fields.items()} for _, fields in entries]


class AcceptanceRecorder:
    """Where sessions hand their drafted nodes (`pending`) and their verdicts (`label`)."""

    def __init__(self, sink: AcceptanceSink):
        self.sink = sink

    def label(self, rows: list[NodeRow], accepted_nodes: tuple[int, ...], greedy: bool) -> None:
        """Labels one tree's rows with its verdict and passes them on."""
        if not rows:
            return
        on_path = {0, *accepted_nodes}
        accepted_parents = {r.parent_index for r in rows if r.tree_index in on_path}
        columns: dict[str, torch.Tensor] = {
            "q": torch.stack([r.q for r in rows]).float(),
            "depth": torch.tensor([r.depth for r in rows], dtype=torch.int32),
            "score": torch.tensor([r.score for r in rows], dtype=torch.float32),
            "prob": torch.tensor([r.prob for r in rows], dtype=torch.float32),
            "rank": torch.tensor([r.rank for r in rows], dtype=torch.int32),
            "greedy": torch.full((len(rows),), int(greedy), dtype=torch.uint8),
            "reached": torch.tensor([r.parent_index in on_path for r in rows], dtype=torch.uint8),
            "accepted": torch.tensor([r.tree_index in on_path for r in rows], dtype=torch.uint8),
            "group_accepted": torch.tensor([r.parent_index in accepted_parents for r in rows], dtype=torch.uint8),
        }
        if all(r.hidden is not None for r in rows):
            columns["hidden"] = torch.stack([r.hidden for r in rows]).float()
        self.sink.add(columns)
