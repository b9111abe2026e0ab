"""A drafter replica's Ray Serve metrics: its requests, its rounds' draft and verify times, failovers.

`DrafterMetrics` records with `ray.serve.metrics` (so Ray adds the `deployment`, `replica` and
`application` tags), every metric tagged `drafter` (the drafter's name), exported on Ray's
Prometheus endpoint:
- `specroute_drafter_requests_active` (Gauge): requests this replica is drafting for;
- `specroute_drafter_draft_seconds` (Histogram): drafting time per round (a round report's
  `draft_time_s / rounds`);
- `specroute_drafter_verify_seconds` (Histogram): the verify round trip per round as the drafter
  sees it (`verify_time_s / rounds`);
- `specroute_drafter_failovers` (Counter): verifier sessions resumed on another replica (a
  finished generation's `GenerationReport.failovers`).

Create it inside the replica (its constructor), never at import: Ray metrics need a running Ray
worker. This module knows nothing about drafting, gRPC or routing; it only records numbers.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from core.reports import GenerationReport, RoundReport
from verifier_service.metrics import LATENCY_BOUNDARIES_S  # one set of latency buckets for every deployment



class DrafterMetrics:
    """The drafter's metrics, tagged with its name (thread-safe: Ray's recorders are)."""

    def __init__(self, drafter: str):
        self._active = Gauge("specroute_drafter_requests_active", description="Requests this replica is drafting for.",
                             tag_keys=("drafter",))
        self._draft = Histogram("specroute_drafter_draft_seconds", description="Drafting time per round.",
                                boundaries=LATENCY_BOUNDARIES_S, tag_keys=("drafter",))
        self._verify = Histogram("specroute_drafter_verify_seconds",
                                 description="Verify round trip per round, as the drafter sees it.",
                                 boundaries=LATENCY_BOUNDARIES_S, tag_keys=("drafter",))
        self._failovers = Counter("specroute_drafter_failovers",
                                  description="Verifier sessions resumed on another replica.", tag_keys=("drafter",))
        for metric in (self._active, self._draft, self._verify, self._failovers):
            # a dict each: Serve adds its own tags (deployment, replica) to the one it is given
            metric.set_default_tags({"drafter": drafter})

    def requests_active(self, requests: int) -> None:
        self._active.set(requests)

    def rounds(self, report: RoundReport) -> None:
        """One chunk's rounds: their mean draft and verify time per round."""
        if report.rounds > 0:
            self._draft.observe(report.draft_time_s / report.rounds)
            self._verify.observe(report.verify_time_s / report.rounds)

    def finished(self, report: GenerationReport) -> None:
        """A generation's end: its failovers."""
        if report.failovers > 0:
            self._failovers.inc(report.failovers)
