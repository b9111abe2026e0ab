"""A zoo build's overall progress: which stage of how many, a bar, and an estimate of the time left.

The estimate is the preset's expected seconds of the stages still to run (`Preset.stage_seconds`,
what each stage took on a 2-core CPU), scaled by this build's pace so far: the seconds its
finished stages took over the seconds expected of them. A stage the build skips (done already)
costs nothing. A preset without expected seconds gets the stage count and the time spent, no
estimate. Training stages show their own bars with their own time left (tqdm); this line is the
whole build's.

This module knows nothing about what a stage does.
"""

from __future__ import annotations

import time
from typing import Callable

BAR_WIDTH = 20


class BuildProgress:
    """The build's planned stages in order, and how far it is."""

    def __init__(self, plan: list[str], expected: dict[str, float] | None,
                 clock: Callable[[], float] = time.perf_counter):
        self.plan = list(plan)
        self.expected = expected
        self.clock = clock
        self.started = clock()
        self.finished: dict[str, float | None] = {}  # stage -> seconds it took (None: skipped)

    def drop(self, stage: str) -> None:
        """A planned stage the build will not run after all."""
        if stage in self.plan:
            self.plan.remove(stage)

    def position(self, stage: str) -> str:
        """'stage i of n: ' ('' for a stage outside the plan)."""
        return f"stage {self.plan.index(stage) + 1} of {len(self.plan)}: " if stage in self.plan else ""

    def done(self, stage: str, seconds: float | None) -> None:
        """Records a stage as finished after `seconds`, or skipped (None)."""
        self.finished[stage] = seconds

    def pace(self) -> float:
        """Seconds taken over seconds expected, over the stages that ran; 1 before any has."""
        ran = [(s, t) for s, t in self.finished.items() if t is not None and self._expected(s) > 0]
        expected = sum(self._expected(s) for s, _ in ran)
        return sum(t for _, t in ran) / expected if expected else 1.0

    def left_s(self) -> float | None:
        """Estimated seconds until the build ends, or None without the preset's expected seconds."""
        if not self.expected:
            return None
        return self.pace() * sum(self._expected(s) for s in self.plan if s not in self.finished)

    def fraction(self) -> float:
        """The share of the build's expected work done (of its stages, without expected seconds)."""
        if not self.plan:
            return 1.0
        if not self.expected:
            return sum(s in self.finished for s in self.plan) / len(self.plan)
        total = sum(self._expected(s) for s in self.plan)
        done = sum(self._expected(s) for s in self.plan if s in self.finished)
        return done / total if total else 0.0

    def status(self) -> str:
        """'|#####...............| 0.1 min in, about 3.9 min left'."""
        filled = round(self.fraction() * BAR_WIDTH)
        line = f"|{'#' * filled}{'.' * (BAR_WIDTH - filled)}| {(self.clock() - self.started) / 60:.1f} min in"
        left = self.left_s()
        return line + (f", about {left / 60:.1f} min left" if left is not None else "")

    def _expected(self, stage: str) -> float:
        return (self.expected or {}).get(stage, 0.0)
