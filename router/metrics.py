"""The router ingress's metrics: Ray Serve metrics a Prometheus scrape of the Ray cluster exposes.

`RouterMetrics` is the router's rows of the metrics table in the README ("Observability"). It records what the
frontend (`router.frontend.RequestRecorder`), the router (`router.router.RoutingRecorder`) and the
routing statistics (`router.stats.StatsRecorder`) report, so those modules need no Ray: in-process
and in tests they get the no-op recorders. Names are as passed to `ray.serve.metrics`; Ray adds the
`deployment`, `replica` and `application` tags (and, on its Prometheus endpoint, a prefix).

- specroute_requests (Counter; task, drafter, route_source, code): finished requests, one per
  request whatever its end: "OK", a `core.errors.Code` name, "CANCELLED" when the client went away.
- specroute_ttft_seconds, specroute_e2e_latency_seconds, specroute_inter_token_latency_seconds
  (Histograms; task, drafter): from the request's arrival at the ingress to its first token, to
  its last chunk, and (e2e - ttft) / (tokens - 1); e2e and inter-token only for requests that
  finished OK, inter-token only with two tokens or more.
- specroute_generated_tokens, specroute_rounds, specroute_drafted_tokens, specroute_accepted_tokens
  (Counters; task, drafter), specroute_accepted_tokens_per_position (Counter; task, drafter,
  position): summed over every chunk streamed, from its `core.reports.RoundReport`.
- specroute_router_classifier_latency_seconds (Histogram), specroute_router_decisions (Counter;
  source): each classification's time and each routing decision's source.
- specroute_router_redis_up, specroute_router_buffered_records (Gauges): set when the routing
  statistics' Redis state or backlog changes.

Create it inside the replica (the ingress's constructor), never at import: Ray's metrics need the
replica's process. This module knows nothing about requests' content, transports or routing.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from core.reports import RoundReport
from router.frontend import OK, RequestRecorder
from router.router import RoutingRecorder
from router.stats import StatsRecorder
from verifier_service.metrics import LATENCY_BOUNDARIES_S  # one set of latency buckets for every deployment

PER_REQUEST = ("task", "drafter")


class RouterMetrics(RequestRecorder, RoutingRecorder, StatsRecorder):
    def __init__(self):
        self.requests = Counter("specroute_requests", "Finished Generate/completions requests, by their code.",
                                tag_keys=(*PER_REQUEST, "route_source", "code"))
        self.ttft = Histogram("specroute_ttft_seconds", "Request start at the ingress to its first token streamed.",
                              LATENCY_BOUNDARIES_S, tag_keys=PER_REQUEST)
        self.inter_token = Histogram("specroute_inter_token_latency_seconds",
                                     "Per request: (e2e - ttft) / (tokens - 1), requests with 2 tokens or more.",
                                     LATENCY_BOUNDARIES_S, tag_keys=PER_REQUEST)
        self.e2e = Histogram("specroute_e2e_latency_seconds", "Request start at the ingress to its last chunk.",
                             LATENCY_BOUNDARIES_S, tag_keys=PER_REQUEST)
        self.generated = Counter("specroute_generated_tokens", "Tokens returned to clients.", tag_keys=PER_REQUEST)
        self.rounds = Counter("specroute_rounds", "Verification rounds.", tag_keys=PER_REQUEST)
        self.drafted = Counter("specroute_drafted_tokens", "Draft tokens sent to verification.", tag_keys=PER_REQUEST)
        self.accepted = Counter("specroute_accepted_tokens", "Draft tokens the target accepted.", tag_keys=PER_REQUEST)
        self.accepted_at = Counter("specroute_accepted_tokens_per_position",
                                   "Rounds whose accepted path reached the draft position.",
                                   tag_keys=(*PER_REQUEST, "position"))
        self.classifier = Histogram("specroute_router_classifier_latency_seconds",
                                    "One classification of a prompt (featurise + predict).", LATENCY_BOUNDARIES_S)
        self.decisions = Counter("specroute_router_decisions", "Routing decisions, by their source.",
                                 tag_keys=("source",))
        self.redis_up = Gauge("specroute_router_redis_up", "1 when the routing statistics' Redis answered at its "
                              "last use, else 0.")
        self.buffered = Gauge("specroute_router_buffered_records",
                              "Records held in memory while Redis is unreachable.")

    # --- router.frontend ------------------------------------------------------------------------
    def first_token(self, task: str, drafter: str, seconds: float) -> None:
        self.ttft.observe(seconds, {"task": task, "drafter": drafter})

    def chunk(self, task: str, drafter: str, tokens: int, rounds: RoundReport | None) -> None:
        tags = {"task": task, "drafter": drafter}
        if tokens > 0:
            self.generated.inc(tokens, tags)
        if rounds is None:
            return
        for counter, value in ((self.rounds, rounds.rounds), (self.drafted, rounds.num_drafted),
                               (self.accepted, rounds.num_accepted)):
            if value > 0:  # a Ray counter refuses increments <= 0
                counter.inc(value, tags)
        for i, count in enumerate(rounds.accepted_per_position):
            if count > 0:
                self.accepted_at.inc(count, {**tags, "position": str(i + 1)})

    def finished(self, code: str, task: str, drafter: str, source: str, tokens: int, ttft_s: float | None,
                 e2e_s: float) -> None:
        self.requests.inc(1, {"task": task, "drafter": drafter, "route_source": source, "code": code})
        if code != OK:
            return
        tags = {"task": task, "drafter": drafter}
        self.e2e.observe(e2e_s, tags)
        if ttft_s is not None and tokens >= 2:
            self.inter_token.observe(max(0.0, e2e_s - ttft_s) / (tokens - 1), tags)

    # --- router.router --------------------------------------------------------------------------
    def classified(self, seconds: float) -> None:
        self.classifier.observe(seconds)

    def decided(self, source: str) -> None:
        self.decisions.inc(1, {"source": source})

    # --- router.stats ---------------------------------------------------------------------------
    def redis_state(self, up: bool, buffered: int) -> None:
        self.redis_up.set(1 if up else 0)
        self.buffered.set(buffered)
