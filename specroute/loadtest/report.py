"""The load test's report: its figures as a markdown table, JSON and a PNG of throughput and replicas.

`build_report` turns the request records into a `LoadReport` (through `statistics`);
`LoadReport.write` writes report.md, report.json and loadtest.png.
This module knows nothing about sending requests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from specroute.loadtest.config import LoadTestConfig
from specroute.loadtest.records import RequestRecord
from specroute.loadtest.statistics import aggregate, replica_summary, timeline
from specroute.loadtest.workload import PromptMix

if TYPE_CHECKING:
    from specroute.loadtest.replicas import ReplicaSampler


def build_report(config: LoadTestConfig, mix: PromptMix, records: list[RequestRecord], warmup: list[RequestRecord],
                  warmup_s: float, elapsed_s: float, started_at: datetime, drained: bool,
                  sampler: ReplicaSampler | None, replica_note: str | None) -> LoadReport:
    records = sorted(records, key=lambda r: r.index)
    errors: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for r in records:
        if r.status == "error":
            code = r.error_code or "UNKNOWN"
            errors[code] = errors.get(code, 0) + 1
            detail = r.error_detail or ""
            if detail not in examples.setdefault(code, []) and len(examples[code]) < 3:
                examples[code].append(detail)
    per_task = {task: aggregate([r for r in records if r.task == task], elapsed_s) for task in mix.tasks}
    samples = list(sampler.samples) if sampler is not None else []
    if sampler is None:
        note = replica_note or "no replica_counts given"
    else:
        note = replica_note or "replica_counts()"
        if sampler.failures:
            note += f"; {sampler.failures} of {sampler.failures + len(samples)} samples failed " \
                    f"(last: {sampler.last_error})"
        elif sampler.last_error:
            note += f"; {sampler.last_error}"
    warm = aggregate(warmup, warmup_s)
    return LoadReport(
        config=config.public_dict(),
        started_at=started_at.isoformat(timespec="seconds"),
        elapsed_s=elapsed_s,
        drained=drained,
        mix={task: {"share": mix.shares[task], "prompts": mix.available[task]} for task in mix.tasks},
        summary=aggregate(records, elapsed_s),
        per_task=per_task,
        errors=dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        error_examples=examples,
        timeline=timeline(records, elapsed_s),
        replica_samples=samples,
        replica_summary=replica_summary(samples),
        replica_note=note,
        warmup={"requests": len(warmup), "ok": warm["requests"]["ok"], "errors": warm["requests"]["errors"],
                "elapsed_s": warmup_s, "ttft": warm["ttft"]},
        requests=[r.public_dict() for r in records],
    )


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


@dataclass
class LoadReport:
    """The outcome of a load test. `markdown()`, `to_dict()` and `write(out_dir)`; see the module
    docstring for what each figure means."""

    config: dict
    started_at: str
    elapsed_s: float
    drained: bool  # False: some requests were still running after the drain and were cancelled
    mix: dict
    summary: dict
    per_task: dict
    errors: dict  # {status code: count}
    error_examples: dict  # {status code: up to 3 distinct details}
    timeline: list  # one dict per 1 s bucket
    replica_samples: list  # [{"t_s": ..., "counts": {deployment: replicas}}]
    replica_summary: dict  # {deployment: {samples, first, last, min, max, changes}}
    replica_note: str
    warmup: dict
    requests: list  # one dict per measured request

    def to_dict(self) -> dict:
        return {"definitions": DEFINITIONS, **asdict(self)}

    def markdown(self) -> str:
        c, s = self.config, self.summary
        req = s["requests"]
        lines = [
            "# specroute load test", "",
            f"Target `{c['target']}`, {c['concurrency']} closed-loop workers for {c['duration_s']:g} s "
            f"(measured window {self.elapsed_s:.1f} s, drain included), started {self.started_at}."
            + ("" if self.drained else " Some requests were still running after the drain and were cancelled."),
            "",
            "## Summary", "",
            "| metric | value |", "|---|---|",
            f"| requests | {req['started']} started: {req['ok']} ok, {req['errors']} errors, "
            f"{req['cancelled']} cancelled at the end |",
            f"| throughput | {_fmt(s['tokens_per_s'])} tokens/s, {_fmt(s['requests_per_s'], 2)} requests/s |",
            f"| time to first token | p50 {_fmt(s['ttft']['p50_ms'], 1, ' ms')}, "
            f"p99 {_fmt(s['ttft']['p99_ms'], 1, ' ms')} "
            f"({s['ttft']['n']} requests) |",
            f"| inter-token latency | p50 {_fmt(s['itl']['p50_ms'], 2, ' ms')}, "
            f"p99 {_fmt(s['itl']['p99_ms'], 2, ' ms')} "
            f"({s['itl']['n']} tokens) |",
            f"| end-to-end latency | p50 {_fmt(s['latency']['p50_ms'], 0, ' ms')}, "
            f"p99 {_fmt(s['latency']['p99_ms'], 0, ' ms')} |",
            f"| tau (mean per request) | {_fmt(s['tau_mean'], 2)} |",
            f"| tokens | {s['tokens']:,} ({_fmt(s['tokens_per_request'], 1)} per ok request) |",
            f"| mean requests in flight | {_fmt(s['mean_in_flight'], 2)} |",
        ]
        if self.warmup["requests"]:
            lines.append(f"| warmup (excluded) | {self.warmup['requests']} requests, {self.warmup['ok']} ok, "
                         f"{self.warmup['errors']} errors, {self.warmup['elapsed_s']:.1f} s |")
        lines += ["", "## Per task", "",
                  "Task: the prompt's own label. tokens/s: its tokens over the whole window.", "",
                  "| task | share | requests | ok | errors | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 "
                  "| tau | drafters |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for task, row in self.per_task.items():
            drafters = ", ".join(f"{d} ({n})" for d, n in row["drafters"].items()) or "-"
            lines.append(
                f"| {task} | {self.mix[task]['share']:.0%} | {row['requests']['started']} | {row['requests']['ok']} "
                f"| {row['requests']['errors']} | {_fmt(row['tokens_per_s'])} "
                f"| {_fmt(row['ttft']['p50_ms'], 1, ' ms')} "
                f"| {_fmt(row['ttft']['p99_ms'], 1, ' ms')} | {_fmt(row['itl']['p50_ms'], 2, ' ms')} "
                f"| {_fmt(row['itl']['p99_ms'], 2, ' ms')} | {_fmt(row['tau_mean'], 2)} | {drafters} |")
        lines += ["", "## Errors", ""]
        if self.errors:
            lines += ["| code | count | example |", "|---|---:|---|"]
            for code, count in self.errors.items():
                example = (self.error_examples.get(code) or [""])[0].replace("|", "\\|").replace("\n", " ")
                lines.append(f"| {code} | {count} | {example[:120]} |")
        else:
            lines.append("None.")
        lines += ["", "## Replicas", "", f"Source: {self.replica_note or 'n/a'}.", ""]
        if self.replica_summary:
            lines += ["| deployment | samples | first | min | max | last | changes (t: from -> to) |",
                      "|---|---:|---:|---:|---:|---:|---|"]
            for name, row in self.replica_summary.items():
                changes = ", ".join(f"{ch['t_s']:.0f} s: {ch['from']} -> {ch['to']}" for ch in row["changes"][:6])
                if len(row["changes"]) > 6:
                    changes += f", ... ({len(row['changes'])} in all)"
                lines.append(f"| {name} | {row['samples']} | {row['first']} | {row['min']} | {row['max']} "
                             f"| {row['last']} | {changes or 'none'} |")
        else:
            lines.append("No replica counts were recorded.")
        mix = ", ".join(f"{task} {m['share']:.0%} ({m['prompts']} prompts)" for task, m in self.mix.items())
        lines += ["", "## Configuration", "", "| setting | value |", "|---|---|"]
        for key, value in c.items():
            lines.append(f"| {key} | {'-' if value is None else value} |")
        lines += [f"| mix (resolved) | {mix} |", "", "## Definitions", ""]
        lines += [f"- **{name}**: {text}" for name, text in DEFINITIONS.items()]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write report.md, report.json and loadtest.png into `out_dir` (created); returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "report.md", "json": out / "report.json", "png": out / "loadtest.png"}
        paths["markdown"].write_text(self.markdown(), encoding="utf-8")
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        plot_report(self, paths["png"])
        return paths


DEFINITIONS = {
    "TTFT": "time to first token: from just before the request is sent to the first chunk carrying tokens.",
    "ITL": "inter-token latency: for consecutive token-bearing chunks of a request, the gap between them "
           "divided by the tokens of the later chunk, one sample per such token (the first chunk gives none).",
    "end-to-end latency": "from the send to the end of the stream, successful requests.",
    "tau": "tokens emitted per verification round, from the server's final metadata; mean over successful requests.",
    "throughput": "tokens received (cancelled requests included) and successful requests, over the measured "
                  "window: from the start of the load (after warmup) to the end of the last request.",
    "timeline": "1 s buckets from the start of the window; tokens by chunk arrival, requests by their end.",
    "replicas": "replicas of each deployment in any state, sampled about once a second.",
    "percentiles": "linear interpolation between the closest ranks.",
}


def plot_report(report: LoadReport, path: Path | str) -> None:
    """Tokens/s and requests/s per bucket (top) and replica counts per deployment (bottom) against time."""
    fig = Figure(figsize=(9, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    times = [b["t_s"] + b["width_s"] / 2 for b in report.timeline]
    top.plot(times, [b["tokens_per_s"] for b in report.timeline], marker="o", ms=3, color="tab:blue",
             label="tokens/s")
    top.set_ylabel("tokens/s", color="tab:blue")
    top.set_ylim(0, 1.15 * max([b["tokens_per_s"] for b in report.timeline] + [1.0]))
    rps = top.twinx()
    rps.plot(times, [b["requests_per_s"] for b in report.timeline], color="tab:orange", ls="--", label="requests/s")
    rps.set_ylabel("requests/s (ok)", color="tab:orange")
    rps.set_ylim(0, 1.15 * max([b["requests_per_s"] for b in report.timeline] + [1.0]))
    error_t = [t for t, b in zip(times, report.timeline) if b["errors"]]
    if error_t:
        top.scatter(error_t, [0] * len(error_t), marker="x", color="tab:red", label="errors", zorder=3)
    handles = top.get_legend_handles_labels()
    more = rps.get_legend_handles_labels()
    top.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    c = report.config
    top.set_title(f"{c['target']}: {c['concurrency']} workers, {report.summary['tokens_per_s']:.0f} tokens/s overall")
    if report.replica_samples:
        names = sorted(report.replica_summary)
        for i, name in enumerate(names):  # wider lines first, so equal counts stay visible
            series = [(s["t_s"], s["counts"][name]) for s in report.replica_samples if name in s["counts"]]
            bottom.step([t for t, _ in series], [n for _, n in series], where="post", marker=".", label=name,
                        lw=1.2 + 1.2 * (len(names) - 1 - i), alpha=0.8)
        bottom.legend(loc="upper left", fontsize=7, ncol=2)
        top_count = max(n for s in report.replica_samples for n in s["counts"].values()) if any(
            s["counts"] for s in report.replica_samples) else 1
        bottom.set_ylim(0, top_count + 1)
        bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        bottom.text(0.5, 0.5, f"no replica counts: {report.replica_note}"[:110], ha="center", va="center",
                    transform=bottom.transAxes, fontsize=8, wrap=True)
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("time since the start of the load (s)")
    bottom.set_xlim(0, max(report.elapsed_s, 1e-3))
    fig.savefig(path, dpi=110)
