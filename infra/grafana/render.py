"""Render the main panels of infra/grafana/specroute.json with matplotlib, from scrapes of Ray's metrics endpoint.

For a machine without Grafana (none installs from the package registries here) or Prometheus: it
scrapes Ray's Prometheus endpoint every N seconds for M seconds while load runs (or reads scrapes
saved earlier) and evaluates what the dashboard's PromQL does, between consecutive scrapes: tau
(generated tokens / rounds) by task and drafter, per-position acceptance (accepted-per-position /
rounds), latency quantiles interpolated in the histogram buckets as Prometheus's
`histogram_quantile` does, and the verifier's batching, queue wait and KV pool.

    python infra/grafana/render.py --url http://127.0.0.1:8080/metrics --every 5 --for 120 \
        --save-scrapes scrapes.txt --out docs/dashboard.png
    python infra/grafana/render.py --scrapes scrapes.txt --out docs/dashboard.png

A scrapes file is the endpoint's text repeated, each scrape after a line `# SCRAPE <unix time>`;
a file with one plain scrape renders too (everything counted from zero). A panel whose series are
missing says "no data". It knows the exposed metric names (docs/observability.md) and nothing about
specroute's code; it does not start, load or query the system.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SCRAPE_MARK = re.compile(r"^# SCRAPE (\d+(?:\.\d+)?)\s*$", re.M)
QUANTILES = (0.5, 0.95, 0.99)
Labels = frozenset  # of (name, value) pairs


@dataclass(frozen=True)
class Scrape:
    """One scrape: its time and every sample, keyed by (sample name, labels)."""

    time: float
    samples: dict[tuple[str, Labels], float]


def parse_scrapes(text: str) -> list[Scrape]:
    """The scrapes in `text` (the `# SCRAPE <time>` format, or one plain scrape at time 0)."""
    marks = list(SCRAPE_MARK.finditer(text))
    chunks = ([(float(m.group(1)), text[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)])
               for i, m in enumerate(marks)] if marks else [(0.0, text)])
    out = []
    for t, chunk in chunks:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(chunk):
            for s in family.samples:
                samples[(s.name, Labels(s.labels.items()))] = s.value
        out.append(Scrape(t, samples))
    return out


def scrape_url(url: str, every_s: float, for_s: float, save: Path | None) -> str:
    """Scrape `url` every `every_s` seconds for `for_s` seconds; the scrapes as text (saved to `save`)."""
    parts = []
    end = time.time() + for_s
    while True:
        started = time.time()
        with urllib.request.urlopen(url, timeout=10) as response:
            parts.append(f"# SCRAPE {started:.3f}\n" + response.read().decode())
        print(f"scraped {url} ({len(parts)})", file=sys.stderr)
        if started + every_s > end:
            break
        time.sleep(max(0.0, every_s - (time.time() - started)))
    text = "\n".join(parts)
    if save:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(text)
    return text


class Series:
    """The dashboard's arithmetic over a list of scrapes (a zero scrape first when there is one scrape)."""

    def __init__(self, scrapes: list[Scrape]):
        if len(scrapes) == 1:  # counters from zero: "rates" become totals, ratios cumulative
            scrapes = [Scrape(scrapes[0].time - 1.0, {}), scrapes[0]]
        self.scrapes = scrapes
        self.t0 = scrapes[0].time

    def times(self) -> list[float]:
        """Seconds since the first scrape, one per interval (its end)."""
        return [s.time - self.t0 for s in self.scrapes[1:]]

    def _sum(self, scrape: Scrape, name: str, by: tuple[str, ...], where: dict[str, str]) -> dict[tuple, float]:
        out: dict[tuple, float] = defaultdict(float)
        for (n, labels), v in scrape.samples.items():
            if n != name:
                continue
            d = dict(labels)
            if all(re.fullmatch(p, d.get(k, "")) for k, p in where.items()):
                out[tuple(d.get(k, "") for k in by)] += v
        return out

    def gauge(self, name: str, by: tuple[str, ...] = (), where: dict[str, str] | None = None) -> dict[tuple, list]:
        """sum by (by) (name), at the end of each interval."""
        per = [self._sum(s, name, by, where or {}) for s in self.scrapes[1:]]
        keys = sorted(set().union(*per))
        return {k: [p.get(k, math.nan) for p in per] for k in keys}

    def increase(self, name: str, by: tuple[str, ...] = (), where: dict[str, str] | None = None) -> dict[tuple, list]:
        """sum by (by) (increase(name)) per interval; NaN where a series is absent or was reset."""
        per = [self._sum(s, name, by, where or {}) for s in self.scrapes]
        keys = sorted(set().union(*per[1:]))
        out = {}
        for k in keys:
            vals = []
            for a, b in zip(per, per[1:]):
                d = b.get(k, math.nan) - a.get(k, 0.0)
                vals.append(d if d >= 0 else math.nan)
            out[k] = vals
        return out

    def ratio(self, num: dict[tuple, list], den: dict[tuple, list]) -> dict[tuple, list]:
        return {k: [n / d if d and d > 0 else math.nan for n, d in zip(v, den[k])] for k, v in num.items() if k in den}

    def quantile(self, q: float, histogram: str, by: tuple[str, ...] = ()) -> dict[tuple, list]:
        """histogram_quantile(q, sum by (by, le) (increase(histogram_bucket))) per interval."""
        buckets = self.increase(histogram + "_bucket", by + ("le",))
        groups: dict[tuple, dict[float, list]] = defaultdict(dict)
        for key, vals in buckets.items():
            groups[key[:-1]][float(key[-1])] = vals
        return {g: [_bucket_quantile(q, [(le, v[i]) for le, v in sorted(b.items())]) for i in range(len(self.times()))]
                for g, b in groups.items()}


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile on cumulative (upper bound, count) pairs, +Inf last."""
    buckets = [(le, c) for le, c in buckets if not math.isnan(c)]
    if len(buckets) < 2 or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == math.inf:
                return lower  # the highest finite bound, as Prometheus answers
            if lower == 0.0 and le <= 0:
                return le
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = le, count
    return math.nan


def _plot(ax, title: str, t: list[float], lines: dict[str, list], unit: str = "") -> None:
    ax.set_title(title, fontsize=9)
    drawn = {name: v for name, v in lines.items() if any(not math.isnan(x) for x in v)}
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey", fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    for name, v in drawn.items():
        ax.plot(t, v, marker="o", markersize=3, linewidth=1, label=name)
    ax.set_xlabel("seconds", fontsize=7)
    if unit:
        ax.set_ylabel(unit, fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")


def _name(key: tuple, prefix: str = "") -> str:
    return prefix + " / ".join(k if k else '""' for k in key) if key else prefix.strip() or "all"


def render(scrapes: list[Scrape], out: Path) -> None:
    """Draw the main panels into `out` (PNG)."""
    s = Series(scrapes)
    t = s.times()
    fig, axes = plt.subplots(4, 2, figsize=(13, 14))
    (a_tau, a_pos), (a_ttft, a_itl), (a_e2e, a_batch), (a_wait, a_kv) = axes

    td = ("task", "drafter")
    rounds = s.increase("ray_specroute_rounds_total", td)
    tau = s.ratio(s.increase("ray_specroute_generated_tokens_total", td), rounds)
    _plot(a_tau, "tau: tokens per verification round, by task / drafter", t,
          {_name(k): v for k, v in tau.items()}, "tokens / round")

    all_rounds = s.increase("ray_specroute_rounds_total")
    per_pos = s.increase("ray_specroute_accepted_tokens_per_position_total", ("position",))
    acc = {p: [n / d if d and d > 0 else math.nan for n, d in zip(v, all_rounds.get((), []))]
           for p, v in per_pos.items()}
    _plot(a_pos, "per-position acceptance rate (share of rounds reaching position p)", t,
          {f"position {p[0]}": v for p, v in sorted(acc.items(), key=lambda kv: int(kv[0][0] or 0))}, "rate")

    for ax, metric, title in ((a_ttft, "ray_specroute_ttft_seconds", "time to first token"),
                              (a_itl, "ray_specroute_inter_token_latency_seconds", "inter-token latency"),
                              (a_e2e, "ray_specroute_e2e_latency_seconds", "end-to-end latency")):
        _plot(ax, f"{title} p50 / p95 / p99", t,
              {f"p{int(q * 100)}": s.quantile(q, metric).get((), [math.nan] * len(t)) for q in QUANTILES}, "s")

    lines = {}
    for metric, label in (("ray_specroute_verifier_trees_per_forward", "trees / forward"),
                          ("ray_specroute_verifier_batch_tokens", "tree tokens / forward")):
        mean = s.ratio(s.increase(metric + "_sum"), s.increase(metric + "_count"))
        lines[f"{label} (mean)"] = mean.get((), [math.nan] * len(t))
    _plot(a_batch, "verifier batch: trees and tree tokens per target forward", t, lines)

    _plot(a_wait, "verifier queue wait p50 / p95 / p99", t,
          {f"p{int(q * 100)}": s.quantile(q, "ray_specroute_verifier_queue_wait_seconds").get((), [math.nan] * len(t))
           for q in QUANTILES}, "s")

    kv = {"KV slots used": s.gauge("ray_specroute_verifier_kv_slots_used").get((), [math.nan] * len(t)),
          "KV slots free": s.gauge("ray_specroute_verifier_kv_slots_free").get((), [math.nan] * len(t)),
          "sessions open": s.gauge("ray_specroute_verifier_sessions_open").get((), [math.nan] * len(t))}
    _plot(a_kv, "verifier KV pool and sessions", t, kv)

    span = scrapes[-1].time - scrapes[0].time
    fig.suptitle(f"specroute: {len(scrapes)} scrape(s) of Ray's metrics endpoint over {span:.0f} s "
                 "(infra/grafana/specroute.json's main panels)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="Ray's metrics endpoint, e.g. http://127.0.0.1:8080/metrics")
    source.add_argument("--scrapes", type=Path, help="a saved scrapes file (or one plain scrape)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between scrapes (--url)")
    parser.add_argument("--for", dest="duration", type=float, default=60.0, help="seconds to scrape for (--url)")
    parser.add_argument("--save-scrapes", type=Path, help="also write the scrapes here (--url)")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args(argv)
    text = (scrape_url(args.url, args.every, args.duration, args.save_scrapes) if args.url
            else args.scrapes.read_text())
    render(parse_scrapes(text), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
