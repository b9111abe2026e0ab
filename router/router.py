"""The router: prompt -> (task, drafter), and what each finished request teaches it.

`Router.route` decides, in this order, from the routes of the request's sampling mode (greedy or
sampled: the routing table measured each, `router.assign`):
1. an explicit drafter in the request is used as is (it must be one the table knows);
2. an explicit task in the request skips the classifier (it must be a detected task);
3. otherwise the classifier predicts the task; below `confidence_threshold` the prompt goes to
   the mode's default (the generic drafter, or `plain` where it is slower than none);
4. for a known task, the policy (`router.policy`) picks among the task's eligible drafters, from
   their measured priors and the recent rewards in Redis. Without Redis (none configured, or
   unreachable) it uses the last statistics it read, or the routing table alone.
   A request with a seed is the exception: sampled text depends on the drafter, so a seeded
   request always gets its task's drafter in the routing table, never an explored one and never
   one that live statistics favour today. Its route is a function of the request and the
   deployed table, and the same seed gives the same output.

`Router.record` sends a finished request's figures to Redis (`router.stats`); it never raises.
Bad requests raise `ValueError` with a message that names the problem. Each classification's time
and each decision's source go to a `RoutingRecorder` (a no-op unless the replica passes its
metrics, `router.metrics`). This module knows nothing about gRPC, Ray or models.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from router.assign import GREEDY, RoutingTable, mode_of
from router.detect import TaskArtifact
from router.policy import PolicyConfig, choose
from router.stats import RequestRecord, RoutingStats

SOURCES = ("drafter-override", "task-override", "classifier", "low-confidence")


class RoutingRecorder:
    """Where the router reports what it does; this base records nothing (tests, in-process use)."""

    def classified(self, seconds: float) -> None:
        """One classification (featurise + predict) took `seconds`."""

    def decided(self, source: str) -> None:
        """A routing decision was made, by `source` (one of SOURCES)."""


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
    mode: str = GREEDY  # the routes it was taken from: GREEDY or SAMPLED


class Router:
    def __init__(self, tasks: TaskArtifact, table: RoutingTable, stats: RoutingStats | None = None,
                 config: RouterConfig = RouterConfig(), recorder: RoutingRecorder | None = None):
        if table.tasks_version != tasks.version:
            raise ValueError(f"routing table was made for tasks {table.tasks_version}, not {tasks.version}: "
                             "re-run `specroute tasks assign`")
        self.tasks, self.table, self.stats, self.config = tasks, table, stats, config
        self.recorder = recorder or RoutingRecorder()
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    def route(self, prompt: str, task: str | None = None, drafter: str | None = None,
              greedy: bool = True, seeded: bool = False) -> RouteDecision:
        """`greedy`: whether the request decodes greedily (else it samples); `seeded`: whether it
        names a seed. Every decision (a Classify call's too) is reported to the recorder."""
        decision = self._route(prompt, task, drafter, greedy, seeded)
        self.recorder.decided(decision.source)
        return decision

    def _route(self, prompt: str, task: str | None, drafter: str | None, greedy: bool, seeded: bool) -> RouteDecision:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        mode = mode_of(greedy)
        routes = self.table.routes(mode)
        if drafter:
            if drafter not in self.table.drafters:
                raise ValueError(f"unknown drafter {drafter!r}; known: {sorted(self.table.drafters)}")
            return RouteDecision(task, drafter, 1.0, "drafter-override", mode=mode)
        if task:
            if task not in routes.table:
                raise ValueError(f"unknown task {task!r}; known: {sorted(routes.table)}")
            return self._for_task(task, 1.0, "task-override", mode, seeded)
        started = time.perf_counter()
        prediction = self.tasks.classifier.predict(prompt)
        self.recorder.classified(time.perf_counter() - started)
        if prediction.confidence < self.config.confidence_threshold or prediction.task not in routes.table:
            return RouteDecision(prediction.task, routes.default, prediction.confidence, "low-confidence", mode=mode)
        return self._for_task(prediction.task, prediction.confidence, "classifier", mode, seeded)

    def _for_task(self, task: str, confidence: float, source: str, mode: str, seeded: bool) -> RouteDecision:
        routes = self.table.routes(mode)
        eligible = routes.eligible[task][: self.config.eligible_per_task]
        if not self.config.adaptive or len(eligible) == 1 or seeded:
            return RouteDecision(task, routes.table[task], confidence, source, mode=mode)
        arms = self.stats.arms(task, mode) if self.stats is not None else {}
        with self._rng_lock:
            pick = choose({d: routes.prior(task, d) for d in eligible}, arms, self._rng, self.config.policy)
        return RouteDecision(task, pick.drafter, confidence, source, pick.explored, mode)

    def record(self, decision: RouteDecision, prompt: str, tokens: int, rounds: int, decode_s: float) -> bool:
        """Adds a finished request to the shared statistics; False if they did not reach Redis (yet)."""
        if self.stats is None or decision.task is None:
            return False
        tau = tokens / rounds if rounds else 0.0
        return self.stats.record(RequestRecord(decision.task, decision.drafter, tau, tokens, rounds, decode_s, prompt,
                                               decision.confidence, decision.source, decision.mode))
