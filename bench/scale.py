"""`python -m bench scale`: aggregate throughput under concurrent streams, batched against unbatched
verification, through the whole system.

The system is the one `specroute serve --zoo` starts (Ray Serve: the router, one deployment per
zoo drafter, the verifier; embedded Redis), on the bench zoo. The load is `specroute loadtest`'s
(closed loop: N streams, each sending the next request when its last one ends; prompts from every
task's held-out test split, routed by the classifier as any client's would be), at each temperature
given (default: greedy, T=0, and sampled, T=1; at T > 0 the load test seeds request i with
`seed + i`, the seed being the repeat's index). Two systems take turns, identical but for the
verifier's `batching` setting:
- unbatched: each session verified on its own, one target forward per tree (`_Unbatched`);
- batched: continuous batching, the trees of every waiting session in one forward
  (`verifier_service.batching`).
Each mode also runs with each verifier torch thread count given (`--verifier-threads`, default 1
and 2): small unbatched forwards gain nothing from a second thread and lose to contention, large
batched ones gain, so each mode is shown at its best thread count and every variant is reported.
Each repeat starts every variant's system once (reversing the order on odd repeats) and measures
every concurrency level at every temperature on it for `duration_s` (the temperatures back to back
within a level, their order alternating between repeats); a variant's figures are medians over
repeats, and the ratio at a level is the best batched variant's median tokens/s over the best
unbatched one's, at each temperature. Goal: >= 2x aggregate tokens/s at 8 streams (judged greedy).

Per temperature: tokens/s, latencies and tau. The outputs' repeat share (how much of a figure is
copying) is not measured here: the load test keeps no token ids; the single-stream benchmarks
(`bench services`, ...) report it.

Results: the greedy figures under the keys they always had (`per_concurrency`, `runs`, `goal`),
and every temperature's under `by_temperature["0"]`, `by_temperature["1"]`, ...

Everything shares this machine's cores: drafters, verifier, router and the load generator. On a
cluster each drafter has its own GPU, and only the verifier's work is shared.

`--drafter NAME` sends every request to one drafter. With the model-free ngram drafter, drafting
costs next to nothing, so the verifier's work dominates as it does on a cluster where drafters
have GPUs of their own; with every zoo drafter routed, the model drafters' forwards take this
machine's cores from the verifier, and batching helps less.

Writes `scale-routed.*` (or `scale-<drafter>.*`): `.md`, `.json` and `.png`, under the output
directory.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

from tqdm.auto import tqdm

from bench.common import (greedy_figures, load_zoo, provenance, provenance_lines, side_by_side, temperature_keys,
                          write_results)
from specroute.loadtest import LoadTestConfig, load_zoo_prompts, run_loadtest
from specroute.measure import TEMPERATURES, is_greedy

GOAL_STREAMS, GOAL = 8, 2.0
MODES = ("unbatched", "batched")


def run_scale_bench(zoo: Path, preset: str, concurrencies: tuple[int, ...], duration_s: float, max_new_tokens: int,
                    repeats: int, out: Path, drafter: str | None = None,
                    verifier_threads: tuple[int, ...] = (1,), temperatures: tuple[float, ...] = TEMPERATURES) -> dict:
    """drafter: every request to this drafter, and only it (and the routing table's default, which the
    router needs) deployed; None: every zoo drafter deployed, the router choosing per prompt.
    verifier_threads: each mode runs with each of these torch thread counts in the verifier; a
    mode's figure at a level is its best thread count's (so neither mode is judged at a setting
    that suits only the other). temperatures: every variant runs every level at each (0: greedy;
    above: sampled, seeded); the top-level figures are the greedy ones (the first temperature's
    where 0 is not among them)."""
    from router.assign import RoutingTable
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem
    from specroute.zoo.routing import ensure_routing

    keys = temperature_keys(temperatures)
    manifest, target = load_zoo(zoo, preset)
    # Every request goes to `drafter`; the routing defaults stay deployed, as the router needs them.
    keep = None if drafter is None else {drafter, *(r.default for r in RoutingTable.load(ensure_routing(zoo)).modes.values())}
    every = load_zoo_prompts(zoo)
    prompts = [p for p in every  # prompts the target's context holds with their new tokens
               if len(target.tokenizer.encode(p.prompt)) + max_new_tokens <= target.max_context]
    variants = [(mode, threads) for mode in MODES for threads in verifier_threads]
    temps = list(zip(temperatures, keys))
    runs = {k: {_name(v): {n: [] for n in concurrencies} for v in variants} for k in keys}  # per temperature key
    startup = {_name(v): [] for v in variants}
    with tqdm(total=repeats * len(variants) * len(concurrencies) * len(keys), desc="bench scale") as bar:
        for r in range(repeats):
            for mode, threads in (variants if r % 2 == 0 else variants[::-1]):
                name = _name((mode, threads))
                config = local_config_for_zoo(zoo, verifier={"batching": mode == "batched",
                                                             "max_sessions": max(16, max(concurrencies)),
                                                             "deployment": {"num_cpus": 0.5, "torch_threads": threads}},
                                              router={"max_new_tokens_limit": max(1024, max_new_tokens)})
                if keep is not None:
                    config = config.model_copy(update={"drafters": [d for d in config.drafters if d.name in keep]})
                system = LocalSystem.start(config)
                startup[name].append(system.startup_s)
                try:
                    for n in concurrencies:
                        for t, k in (temps if r % 2 == 0 else temps[::-1]):
                            bar.set_postfix_str(f"repeat {r + 1}, {name}, {n} streams, T={k}")
                            load = LoadTestConfig(target=system.grpc_address, concurrency=n, duration_s=duration_s,
                                                  max_new_tokens=max_new_tokens, warmup_requests=n, seed=r,
                                                  temperature=t, drafter=drafter)
                            before = _verifier_counters(config.app_name)
                            report = run_loadtest(load, prompts, progress=False).to_dict()
                            after = _verifier_counters(config.app_name)
                            figures = _figures(report)
                            if mode == "batched":  # trees per forward over the level (prefill chunks count as forwards)
                                forwards = after.get("forwards", 0) - before.get("forwards", 0)
                                trees = after.get("trees", 0) - before.get("trees", 0)
                                figures["trees_per_forward"] = trees / forwards if forwards > 0 else None
                            runs[k][name][n].append(figures)
                            bar.update()
                finally:
                    system.stop()

    by_temperature = {k: {"temperature": t, **_summary(runs[k], concurrencies)} for t, k in temps}
    main = greedy_figures(by_temperature)
    deployed = [d["name"] for d in manifest["drafters"]] if drafter is None else [drafter]
    result = {**provenance("scale", zoo), "zoo": str(zoo), "preset": manifest["preset"], "drafter": drafter,
              "drafters": deployed, "verifier_threads": list(verifier_threads), "duration_s": duration_s,
              "max_new_tokens": max_new_tokens, "repeats": repeats, "temperatures": list(temperatures),
              "prompts": len(prompts), "prompts_too_long": len(every) - len(prompts),
              "startup_s": {name: statistics.median(v) for name, v in startup.items()},
              **{key: main[key] for key in ("per_concurrency", "runs", "goal")}, "by_temperature": by_temperature}
    write_results(out, "scale-routed" if drafter is None else f"scale-{drafter}", result, _markdown(result), _plot)
    return result


def _summary(runs: dict[str, dict[int, list[dict]]], concurrencies: tuple[int, ...]) -> dict:
    """One temperature's figures from its runs ({variant: {level: [figures per repeat]}}):
    per_concurrency (every variant's medians, each mode's best, the ratio), runs and goal."""
    rows = {}
    for n in concurrencies:
        medians = {name: {k: statistics.median(x[k] for x in by_n[n] if x.get(k) is not None)
                          if any(x.get(k) is not None for x in by_n[n]) else None
                          for k in {key for x in by_n[n] for key in x}}
                   for name, by_n in runs.items()}
        row = {"variants": medians}
        for mode in MODES:
            best = max((name for name in medians if name.startswith(mode)), key=lambda v: medians[v]["tokens_per_s"])
            row[mode] = {**medians[best], "variant": best}
        row["ratio"] = row["batched"]["tokens_per_s"] / row["unbatched"]["tokens_per_s"]
        rows[str(n)] = row
    goal_ratio = rows[str(GOAL_STREAMS)]["ratio"] if str(GOAL_STREAMS) in rows else None
    return {"per_concurrency": rows,
            "runs": {name: {str(n): v for n, v in by_n.items()} for name, by_n in runs.items()},
            "goal": {"streams": GOAL_STREAMS, "ratio": GOAL, "measured": goal_ratio,
                     "met": goal_ratio is not None and goal_ratio >= GOAL}}


def _verifier_counters(app: str) -> dict:
    """The verifier replicas' counters, summed, as their heartbeats last reported them."""
    import time

    from ray import serve
    time.sleep(1.2)  # one heartbeat interval, so the counters are current
    replicas = serve.get_deployment_handle("VerifierDirectory", app).replicas.remote().result(timeout_s=10)
    totals: dict = {}
    for replica in replicas:
        for key, value in replica.get("stats", {}).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def _name(variant: tuple[str, int]) -> str:
    return f"{variant[0]}, {variant[1]} thread{'s' if variant[1] > 1 else ''}"


def _figures(report: dict) -> dict:
    """What the bench keeps of one load-test report."""
    s = report["summary"]
    return {"tokens_per_s": s["tokens_per_s"], "requests_per_s": s["requests_per_s"],
            "ttft_p50_ms": s["ttft"]["p50_ms"], "ttft_p99_ms": s["ttft"]["p99_ms"],
            "itl_p50_ms": s["itl"]["p50_ms"], "itl_p99_ms": s["itl"]["p99_ms"],
            "tau": s["tau_pooled"], "requests": s["requests"]["ok"], "errors": s["requests"]["errors"]}


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _label(temperature: float) -> str:
    return f"T={temperature:g} (greedy)" if is_greedy(temperature) else f"T={temperature:g} (sampled, seeded per request)"


def _by_temperature(r: dict) -> dict[str, dict]:
    """Every temperature's figures (a result from before temperatures: its greedy ones)."""
    return r.get("by_temperature") or {"0": {**r, "temperature": 0.0}}


def _markdown(r: dict) -> str:
    temps = _by_temperature(r)
    lines = [
        "# Scale: aggregate throughput under concurrent streams, batched vs unbatched verification",
        "", *provenance_lines(r),
        f"Zoo: `{r['zoo']}` (preset {r['preset']}); " + (
            f"every request to the {r['drafter']} drafter.  " if r["drafter"] else
            f"every drafter deployed ({', '.join(r['drafters'])}), the router choosing per prompt.  "),
        f"Load: `specroute loadtest` closed loop over every task's test prompts ({r['prompts']}; "
        f"{r['prompts_too_long']} left out as too long for the context), at "
        + " and ".join(_label(t["temperature"]) for t in temps.values()) + f", {r['max_new_tokens']} new "
        f"tokens, {r['duration_s']:g} s per level and temperature after one warm-up request per stream; median of "
        f"{r['repeats']} repeats, each starting every system afresh (the seed: the repeat's index). Verifier torch "
        f"threads tried: {', '.join(map(str, r['verifier_threads']))}; each mode is shown at its best.  ",
        "Repeat share (how much of a figure is copying) is not measured here: the load test keeps no token ids. "
        "The single-stream benchmarks (`bench services`, ...) report it beside tau.",
        "",
    ]
    if len(temps) > 1:
        columns = {"batched / unbatched": lambda row: f"{row['ratio']:.2f}x",
                   "unbatched tok/s": lambda row: _fmt(row["unbatched"]["tokens_per_s"]),
                   "batched tok/s": lambda row: _fmt(row["batched"]["tokens_per_s"]),
                   "tau batched": lambda row: _fmt(row["batched"]["tau"], 2)}
        names = [f"T={t['temperature']:g}" for t in temps.values()]
        rows = {n: [t["per_concurrency"][n] for t in temps.values()] for n in r["per_concurrency"]}
        lines += ["## Every temperature side by side", "", *side_by_side("streams", rows, columns, names), ""]
    for t in temps.values():
        lines += [f"## {_label(t['temperature'])}", "", *_temperature_lines(t)]
    return "\n".join(lines)


def _temperature_lines(t: dict) -> list[str]:
    """One temperature's tables and goal."""
    goal = t["goal"]
    lines = [
        "| streams | unbatched tok/s | batched tok/s | batched / unbatched | ITL p99 unbatched | ITL p99 batched "
        "| TTFT p50 unbatched | TTFT p50 batched | req/s batched | trees per forward | tau | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, row in t["per_concurrency"].items():
        u, b = row["unbatched"], row["batched"]
        errors = sum(int(v["errors"] or 0) for v in row["variants"].values())
        lines.append(f"| {n} | {_fmt(u['tokens_per_s'])} | {_fmt(b['tokens_per_s'])} | {row['ratio']:.2f}x | "
                     f"{_fmt(u['itl_p99_ms'], 0)} ms | {_fmt(b['itl_p99_ms'], 0)} ms | "
                     f"{_fmt(u['ttft_p50_ms'], 0)} ms | {_fmt(b['ttft_p50_ms'], 0)} ms | "
                     f"{_fmt(b['requests_per_s'], 2)} | {_fmt(b.get('trees_per_forward'), 1)} | "
                     f"{_fmt(b['tau'], 2)} | {errors} |")
    lines += ["", "Every variant (median tokens/s; ITL p99; tau):", "",
              "| streams | " + " | ".join(t["runs"]) + " |", "|---|" + "---|" * len(t["runs"])]
    for n, row in t["per_concurrency"].items():
        lines.append(f"| {n} | " + " | ".join(
            f"{_fmt(v['tokens_per_s'])} tok/s; {_fmt(v['itl_p99_ms'], 0)} ms; {_fmt(v.get('tau'), 2)}"
            for v in row["variants"].values()) + " |")
    lines += ["", f"Goal: at {goal['streams']} streams, batched >= {goal['ratio']:g}x unbatched: "
                  f"measured {_fmt(goal['measured'], 2)}x, {'met' if goal['met'] else 'NOT met'}.", ""]
    return lines


def _plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    temps = _by_temperature(r)
    levels = [int(n) for n in r["per_concurrency"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = {name: f"C{i}" for i, name in enumerate(r["runs"])}
    for t, style in zip(temps.values(), itertools.cycle(("o-", "s--", "^:", "d-."))):  # a style per temperature
        for name, colour in colours.items():
            cells = [t["per_concurrency"][str(n)]["variants"][name] for n in levels]
            label = f"{name}, T={t['temperature']:g}"
            left.plot(levels, [c["tokens_per_s"] for c in cells], style, color=colour, label=label)
            right.plot(levels, [c["itl_p99_ms"] for c in cells], style, color=colour, label=label)
    left.set(xlabel="concurrent streams", ylabel="aggregate tokens/s", title="throughput", xticks=levels)
    right.set(xlabel="concurrent streams", ylabel="ms", title="inter-token latency p99", xticks=levels)
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("specroute: batched vs unbatched verification, "
                 + (f"{r['drafter']} drafter" if r["drafter"] else "routed drafters") + " (bench zoo, this CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
