"""The router: prompt -> (task, drafter), and what each finished request teaches it.

`Router.route` decides, in this order:
1. an explicit drafter in the request is used as is (it must be one the table knows);
2. an explicit task in the request skips the classifier (it must be a detected task);
3. otherwise the classifier predicts the task; below `confidence_threshold` the prompt goes to
   the default (generic) drafter;
4. for a known task, the policy (`router.policy`) picks among the task's eligible drafters, from
   their measured priors and the recent rewards in Redis. Without Redis (none configured, or
   unreachable) it uses the last statistics it read, or the routing table alone.
   A request with a seed is the exception: sampled text depends on the drafter, so a seeded
   request always gets its task's drafter in the routing table, never an explored one and never
   one that live statistics favour today. Its route is a function of the request and the
   deployed table, and the same seed gives the same output.

`Router.record` sends a finished request's figures to Redis (`router.stats`); it never raises.
Bad requests raise `ValueError` with a message that names the problem. This module knows
nothing about gRPC, Ray or models.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from router.assign import RoutingTable
from router.detect import TaskArtifact
from router.policy import PolicyConfig, choose
from router.stats import RequestRecord, RoutingStats

SOURCES = ("drafter-override", "task-override", "classifier", "low-confidence")


class RouterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence_threshold: float = Field(0.5, ge=0, le=1, description="Below it, the default drafter serves.")
    eligible_per_task: int = Field(3, ge=1, description="Drafters the policy may choose from, per task (best measured first).")
    adaptive: bool = Field(True, description="Use Redis statistics and the policy; False follows the table only.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    seed: int = 0


@dataclass(frozen=True)
class RouteDecision:
    task: str | None
    drafter: str
    confidence: float
    source: str  # one of SOURCES
    explored: bool = False


class Router:
    def __init__(self, tasks: TaskArtifact, table: RoutingTable, stats: RoutingStats | None = None,
                 config: RouterConfig = RouterConfig()):
        if table.tasks_version != tasks.version:
            raise ValueError(f"routing table was made for tasks {table.tasks_version}, not {tasks.version}: "
                             "re-run `specroute tasks assign`")
        self.tasks, self.table, self.stats, self.config = tasks, table, stats, config
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    def route(self, prompt: str, task: str | None = None, drafter: str | None = None,
              seeded: bool = False) -> RouteDecision:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        if drafter:
            if drafter not in self.table.drafters:
                raise ValueError(f"unknown drafter {drafter!r}; known: {sorted(self.table.drafters)}")
            return RouteDecision(task, drafter, 1.0, "drafter-override")
        if task:
            if task not in self.table.table:
                raise ValueError(f"unknown task {task!r}; known: {sorted(self.table.table)}")
            return self._for_task(task, 1.0, "task-override", seeded)
        prediction = self.tasks.classifier.predict(prompt)
        if prediction.confidence < self.config.confidence_threshold or prediction.task not in self.table.table:
            return RouteDecision(prediction.task, self.table.default, prediction.confidence, "low-confidence")
        return self._for_task(prediction.task, prediction.confidence, "classifier", seeded)

    def _for_task(self, task: str, confidence: float, source: str, seeded: bool = False) -> RouteDecision:
        eligible = self.table.eligible[task][: self.config.eligible_per_task]
        if not self.config.adaptive or len(eligible) == 1 or seeded:
            return RouteDecision(task, self.table.table[task], confidence, source)
        arms = self.stats.arms(task) if self.stats is not None else {}
        with self._rng_lock:
            pick = choose({d: self.table.prior(task, d) for d in eligible}, arms, self._rng, self.config.policy)
        return RouteDecision(task, pick.drafter, confidence, source, pick.explored)

    def record(self, decision: RouteDecision, prompt: str, tokens: int, rounds: int, decode_s: float) -> bool:
        """Adds a finished request to the shared statistics; False if they did not reach Redis (yet)."""
        if self.stats is None or decision.task is None:
            return False
        tau = tokens / rounds if rounds else 0.0
        return self.stats.record(RequestRecord(decision.task, decision.drafter, tau, tokens, rounds, decode_s, prompt,
                                               decision.confidence, decision.source))
