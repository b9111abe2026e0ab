"""`python -m bench scale`: aggregate throughput under concurrent streams, through the whole system:
batched against unbatched verification, the step budget's even split against the acceptance-weighted
one, and speculation against plain decoding through the same batched verifier.

The system is the one `specroute serve --zoo` starts (Ray Serve: the router, one deployment per
zoo drafter, the verifier; embedded Redis), on the bench zoo. The load is `specroute loadtest`'s
(closed loop: N streams, each sending the next request when its last one ends; prompts from every
task's held-out test split, routed by the classifier as any client's would be), at each temperature
given (default: greedy, T=0, and sampled, T=1; at T > 0 the load test seeds request i with
`seed + i`, the seed being the repeat's index). The modes (`modes`, default all four), identical
systems but for the verifier's settings and the drafter asked for:
- unbatched: each session verified on its own, one target forward per tree (`_Unbatched`);
- batched: continuous batching, the trees of every waiting session in one forward
  (`verifier_service.batching`), the step budget split evenly among open sessions (`split="even"`);
- weighted: the same, the step budget split by each session's predicted acceptance, a session whose
  next node does not pay for its verify cost getting a root-only tree (`split="weighted"`,
  `verifier_service.split`);
- plain: every request to the `plain` drafter (root-only trees: plain decoding, no drafter) through
  the batched system, which it shares with `batched` (a root-only tree is the same under any split):
  the baseline speculation must never fall below under load (the crossover llm-d and vLLM report).
Each mode also runs with each verifier torch thread count given (`--verifier-threads`, default 1
and 2): small unbatched forwards gain nothing from a second thread and lose to contention, large
batched ones gain, so each mode is shown at its best thread count and every variant is reported.
Each repeat starts every variant's system once (reversing the order on odd repeats) and measures
every concurrency level at every temperature on it for `duration_s` (the temperatures back to back
within a level, their order alternating between repeats, and so do the modes sharing a system); a
variant's figures are medians over repeats, and a mode's figure at a level is its best variant's.
Goals, at each temperature (judged greedy at the top level):
- batched >= 2x unbatched aggregate tokens/s at 8 streams (`goal`);
- weighted >= 1.1x batched (the even split) at 8 streams (`goals["weighted_over_even"]`);
- no crossover: at every level, weighted >= plain's tokens/s with an ITL p99 no worse than plain's
  (`goals["no_crossover"]`).

Per temperature: tokens/s, latencies and tau. The outputs' repeat share (how much of a figure is
copying) is not measured here: the load test keeps no token ids; the single-stream benchmarks
(`bench services`, ...) report it.

Results: the greedy figures under the keys they always had (`per_concurrency`, `runs`, `goal`;
and `goals`), and every temperature's under `by_temperature["0"]`, `by_temperature["1"]`, ...
A level's row has each measured mode's figures under its name, and the ratios `ratio` (batched /
unbatched), `weighted_over_even` and `weighted_over_plain` (None where a mode was not measured).

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
from specroute.measure import PLAIN, TEMPERATURES, is_greedy

GOAL_STREAMS, GOAL = 8, 2.0
WEIGHTED_GOAL = 1.1  # weighted over even, at GOAL_STREAMS
MODES = ("unbatched", "batched", "weighted", "plain")
SYSTEMS = {"unbatched": {"batching": False, "split": "even"}, "batched": {"batching": True, "split": "even"},
           "weighted": {"batching": True, "split": "weighted"}}
"""The verifier settings of each system a mode runs on (`_system_of`)."""


def _system_of(mode: str) -> str:
    """The system a mode runs on: plain decoding shares the batched (even split) one."""
    return "batched" if mode == "plain" else mode


def run_scale_bench(zoo: Path, preset: str, concurrencies: tuple[int, ...], duration_s: float, max_new_tokens: int,
                    repeats: int, out: Path, drafter: str | None = None,
                    verifier_threads: tuple[int, ...] = (1,), temperatures: tuple[float, ...] = TEMPERATURES,
                    modes: tuple[str, ...] = MODES, verifier: dict | None = None, check_sampling: bool = True) -> dict:
    """drafter: every request to this drafter, and only it (and the routing table's default, which the
    router needs) deployed; None: every zoo drafter deployed, the router choosing per prompt.
    verifier_threads: each mode runs with each of these torch thread counts in the verifier; a
    mode's figure at a level is its best thread count's (so neither mode is judged at a setting
    that suits only the other). temperatures: every variant runs every level at each (0: greedy;
    above: sampled, seeded); the top-level figures are the greedy ones (the first temperature's
    where 0 is not among them). modes: which of MODES to measure (plain deploys the `plain`
    drafter and sends its requests there). verifier: further verifier settings for every system
    (the weighted split's `forward_base_ms` and `forward_per_token_ms`, say)."""
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise ValueError(f"modes: some of {', '.join(MODES)} (got {list(modes)})")
    modes = tuple(m for m in MODES if m in modes)
    from router.assign import RoutingTable
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem
    from specroute.zoo.routing import ensure_routing

    keys = temperature_keys(temperatures)
    manifest, target = load_zoo(zoo, preset, check_sampling)
    # Every request goes to `drafter`; the routing defaults stay deployed, as the router needs them.
    keep = None if drafter is None else {drafter, *(r.default for r in RoutingTable.load(ensure_routing(zoo)).modes.values())}
    with_plain = "plain" in modes
    if keep is not None and with_plain:
        keep.add(PLAIN)
    every = load_zoo_prompts(zoo)
    prompts = [p for p in every  # prompts the target's context holds with their new tokens
               if len(target.tokenizer.encode(p.prompt)) + max_new_tokens <= target.max_context]
    systems = [(system, threads, [m for m in modes if _system_of(m) == system])
               for system in dict.fromkeys(map(_system_of, modes)) for threads in verifier_threads]
    temps = list(zip(temperatures, keys))
    names = {_name((m, threads)): m for _, threads, arms in systems for m in arms}  # variant -> mode
    runs = {k: {name: {n: [] for n in concurrencies} for name in names} for k in keys}  # per temperature key
    startup = {name: [] for name in names}
    with tqdm(total=repeats * len(names) * len(concurrencies) * len(keys), desc="bench scale") as bar:
        for r in range(repeats):
            for system_name, threads, arms in (systems if r % 2 == 0 else systems[::-1]):
                config = local_config_for_zoo(zoo, with_plain,
                                              verifier={**SYSTEMS[system_name], **(verifier or {}),
                                                        "max_sessions": max(16, max(concurrencies)),
                                                        "deployment": {"num_cpus": 0.5, "torch_threads": threads}},
                                              router={"max_new_tokens_limit": max(1024, max_new_tokens)})
                if keep is not None:
                    config = config.model_copy(update={"drafters": [d for d in config.drafters if d.name in keep]})
                system = LocalSystem.start(config)
                for mode in arms:
                    startup[_name((mode, threads))].append(system.startup_s)
                try:
                    for n in concurrencies:
                        for i, (t, k) in enumerate(temps if r % 2 == 0 else temps[::-1]):
                            for mode in (arms if (r + i) % 2 == 0 else arms[::-1]):
                                name = _name((mode, threads))
                                bar.set_postfix_str(f"repeat {r + 1}, {name}, {n} streams, T={k}")
                                load = LoadTestConfig(target=system.grpc_address, concurrency=n,
                                                      duration_s=duration_s, max_new_tokens=max_new_tokens,
                                                      warmup_requests=n, seed=r, temperature=t,
                                                      drafter=PLAIN if mode == "plain" else drafter)
                                runs[k][name][n].append(_measure(load, prompts, config.app_name,
                                                                 counted=mode != "unbatched"))
                                bar.update()
                finally:
                    system.stop()

    by_temperature = {k: {"temperature": t, **_summary(runs[k], names, concurrencies)} for t, k in temps}
    main = greedy_figures(by_temperature)
    deployed = [d["name"] for d in manifest["drafters"]] if drafter is None else [drafter]
    result = {**provenance("scale", zoo), "zoo": str(zoo), "preset": manifest["preset"], "drafter": drafter,
              "drafters": deployed, "verifier_threads": list(verifier_threads), "duration_s": duration_s,
              "max_new_tokens": max_new_tokens, "repeats": repeats, "temperatures": list(temperatures),
              "prompts": len(prompts), "prompts_too_long": len(every) - len(prompts),
              "startup_s": {name: statistics.median(v) for name, v in startup.items()},
              "modes": list(modes), "verifier": verifier or {},
              **{key: main[key] for key in ("per_concurrency", "runs", "goal", "goals")},
              "by_temperature": by_temperature}
    write_results(out, "scale-routed" if drafter is None else f"scale-{drafter}", result, _markdown(result), _plot)
    return result


def _measure(load: LoadTestConfig, prompts, app: str, counted: bool) -> dict:
    """One mode's figures at one level and temperature; with `counted` (a batched verifier), also
    its trees per forward over the level (prefill chunks count as forwards)."""
    before = _verifier_counters(app) if counted else {}
    figures = _figures(run_loadtest(load, prompts, progress=False).to_dict())
    if counted:
        after = _verifier_counters(app)
        forwards = after.get("forwards", 0) - before.get("forwards", 0)
        trees = after.get("trees", 0) - before.get("trees", 0)
        figures["trees_per_forward"] = trees / forwards if forwards > 0 else None
    return figures


def _ratio(row: dict, over: str, under: str, key: str = "tokens_per_s") -> float | None:
    """Mode `over`'s figure over mode `under`'s at a level (None where either is missing)."""
    a, b = (row.get(over) or {}).get(key), (row.get(under) or {}).get(key)
    return a / b if a is not None and b else None


def _summary(runs: dict[str, dict[int, list[dict]]], names: dict[str, str], concurrencies: tuple[int, ...]) -> dict:
    """One temperature's figures from its runs ({variant: {level: [figures per repeat]}}; names:
    each variant's mode): per_concurrency (every variant's medians, each mode's best, the ratios),
    runs, goal and goals."""
    rows = {}
    for n in concurrencies:
        medians = {name: {k: statistics.median(x[k] for x in by_n[n] if x.get(k) is not None)
                          if any(x.get(k) is not None for x in by_n[n]) else None
                          for k in {key for x in by_n[n] for key in x}}
                   for name, by_n in runs.items()}
        row = {"variants": medians}
        for mode in dict.fromkeys(names.values()):
            best = max((name for name in medians if names[name] == mode), key=lambda v: medians[v]["tokens_per_s"])
            row[mode] = {**medians[best], "variant": best}
        row["ratio"] = _ratio(row, "batched", "unbatched")
        row["weighted_over_even"] = _ratio(row, "weighted", "batched")
        row["weighted_over_plain"] = _ratio(row, "weighted", "plain")
        row["itl_p99_weighted_over_plain"] = _ratio(row, "weighted", "plain", "itl_p99_ms")
        rows[str(n)] = row
    at_goal = rows.get(str(GOAL_STREAMS), {})
    goal_ratio, weighted_ratio = at_goal.get("ratio"), at_goal.get("weighted_over_even")
    crossover = {n: {"tokens_ratio": row["weighted_over_plain"], "itl_p99_ratio": row["itl_p99_weighted_over_plain"],
                     "met": (row["weighted_over_plain"] is not None and row["weighted_over_plain"] >= 1.0
                             and row["itl_p99_weighted_over_plain"] is not None
                             and row["itl_p99_weighted_over_plain"] <= 1.0)}
                 for n, row in rows.items() if row["weighted_over_plain"] is not None}
    return {"per_concurrency": rows,
            "runs": {name: {str(n): v for n, v in by_n.items()} for name, by_n in runs.items()},
            "goal": {"streams": GOAL_STREAMS, "ratio": GOAL, "measured": goal_ratio,
                     "met": goal_ratio is not None and goal_ratio >= GOAL},
            "goals": {"weighted_over_even": {"streams": GOAL_STREAMS, "ratio": WEIGHTED_GOAL,
                                             "measured": weighted_ratio,
                                             "met": weighted_ratio is not None and weighted_ratio >= WEIGHTED_GOAL},
                      "no_crossover": {"levels": crossover,
                                       "met": bool(crossover) and all(c["met"] for c in crossover.values())}}}


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


def _modes(r: dict) -> list[str]:
    """The modes a result measured (a result from before modes: unbatched and batched)."""
    return r.get("modes") or ["unbatched", "batched"]


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


RATIOS = {"batched / unbatched": ("ratio", {"unbatched", "batched"}),
          "weighted / even": ("weighted_over_even", {"batched", "weighted"}),
          "weighted / plain": ("weighted_over_plain", {"weighted", "plain"})}
"""The ratios a table shows: its heading, its key in a row, the modes it needs."""


def _markdown(r: dict) -> str:
    temps = _by_temperature(r)
    modes = _modes(r)
    ratios = {heading: key for heading, (key, needs) in RATIOS.items() if needs <= set(modes)}
    lines = [
        "# Scale: aggregate throughput under concurrent streams: " + ", ".join(modes),
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
        "Modes: unbatched (one forward per tree), batched (continuous batching, the step budget split evenly), "
        "weighted (split by predicted acceptance, root-only trees where a node does not pay), plain (every "
        "request to the plain drafter, root-only trees, through the batched system).  "
        + (f"Verifier settings: {', '.join(f'{k}={v}' for k, v in r['verifier'].items())}.  " if r.get("verifier")
           else ""),
        "Repeat share (how much of a figure is copying) is not measured here: the load test keeps no token ids. "
        "The single-stream benchmarks (`bench services`, ...) report it beside tau.",
        "",
    ]
    if len(temps) > 1:
        columns = {heading: (lambda row, key=key: _times(row[key])) for heading, key in ratios.items()}
        columns.update({f"{mode} tok/s": (lambda row, mode=mode: _fmt(row[mode]["tokens_per_s"])) for mode in modes})
        if "batched" in modes:
            columns["tau batched"] = lambda row: _fmt(row["batched"]["tau"], 2)
        names = [f"T={t['temperature']:g}" for t in temps.values()]
        rows = {n: [t["per_concurrency"][n] for t in temps.values()] for n in r["per_concurrency"]}
        lines += ["## Every temperature side by side", "", *side_by_side("streams", rows, columns, names), ""]
    for t in temps.values():
        lines += [f"## {_label(t['temperature'])}", "", *_temperature_lines(t, modes, ratios)]
    return "\n".join(lines)


def _temperature_lines(t: dict, modes: list[str], ratios: dict[str, str]) -> list[str]:
    """One temperature's tables and goals."""
    batched = [m for m in modes if m != "unbatched"]
    headings = ([f"{m} tok/s" for m in modes] + list(ratios) + [f"ITL p99 {m}" for m in modes]
                + [f"TTFT p50 {m}" for m in modes] + [f"tau {m}" for m in modes if m != "plain"]
                + [f"trees per forward {m}" for m in batched] + ["errors"])
    lines = ["| streams | " + " | ".join(headings) + " |", "|---|" + "---|" * len(headings)]
    for n, row in t["per_concurrency"].items():
        errors = sum(int(v["errors"] or 0) for v in row["variants"].values())
        cells = ([_fmt(row[m]["tokens_per_s"]) for m in modes] + [_times(row.get(key)) for key in ratios.values()]
                 + [f"{_fmt(row[m]['itl_p99_ms'], 0)} ms" for m in modes]
                 + [f"{_fmt(row[m]['ttft_p50_ms'], 0)} ms" for m in modes]
                 + [_fmt(row[m]["tau"], 2) for m in modes if m != "plain"]
                 + [_fmt(row[m].get("trees_per_forward"), 1) for m in batched] + [str(errors)])
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Every variant (median tokens/s; ITL p99; tau):", "",
              "| streams | " + " | ".join(t["runs"]) + " |", "|---|" + "---|" * len(t["runs"])]
    for n, row in t["per_concurrency"].items():
        lines.append(f"| {n} | " + " | ".join(
            f"{_fmt(v['tokens_per_s'])} tok/s; {_fmt(v['itl_p99_ms'], 0)} ms; {_fmt(v.get('tau'), 2)}"
            for v in row["variants"].values()) + " |")
    goal = t["goal"]
    lines.append("")
    if {"batched", "unbatched"} <= set(modes):
        lines.append(f"Goal: at {goal['streams']} streams, batched >= {goal['ratio']:g}x unbatched: "
                     f"measured {_times(goal['measured'])}, {'met' if goal['met'] else 'NOT met'}.  ")
    goals = t.get("goals", {})
    weighted = goals.get("weighted_over_even")
    if weighted and {"batched", "weighted"} <= set(modes):
        lines.append(f"Goal: at {weighted['streams']} streams, weighted >= {weighted['ratio']:g}x the even split: "
                     f"measured {_times(weighted['measured'])}, {'met' if weighted['met'] else 'NOT met'}.  ")
    crossover = goals.get("no_crossover")
    if crossover and crossover["levels"]:
        cells = "; ".join(f"{n} streams {_times(c['tokens_ratio'])} tokens/s, {_times(c['itl_p99_ratio'])} ITL p99"
                          for n, c in crossover["levels"].items())
        lines.append(f"Goal: no crossover, weighted >= plain's tokens/s with ITL p99 no worse at every level: {cells}; "
                     f"{'met' if crossover['met'] else 'NOT met'}.")
    lines.append("")
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
    fig.suptitle(f"specroute: {', '.join(_modes(r))}, "
                 + (f"{r['drafter']} drafter" if r["drafter"] else "routed drafters") + " (bench zoo, this CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
