"""`specroute bench scale`: aggregate throughput under concurrent streams, batched against unbatched
verification, through the whole system.

The system is the one `specroute serve --zoo` starts (Ray Serve: the router, one deployment per
zoo drafter, the verifier; embedded Redis), on the bench zoo. The load is `specroute loadtest`'s
(closed loop: N streams, each sending the next request when its last one ends; prompts from every
task's held-out test split, routed by the classifier as any client's would be). Two systems take
turns, identical but for the verifier's `batching` setting:
- unbatched: each session verified on its own, one target forward per tree (`_Unbatched`);
- batched: continuous batching, the trees of every waiting session in one forward
  (`verifier_service.batching`).
Each mode also runs with each verifier torch thread count given (`--verifier-threads`, default 1
and 2): small unbatched forwards gain nothing from a second thread and lose to contention, large
batched ones gain, so each mode is shown at its best thread count and every variant is reported.
Each repeat starts every variant's system once (reversing the order on odd repeats) and measures
every concurrency level on it for `duration_s`; a variant's figures are medians over repeats, and
the ratio at a level is the best batched variant's median tokens/s over the best unbatched one's.
Goal: >= 2x aggregate tokens/s at 8 streams.

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

import statistics
from pathlib import Path

from tqdm.auto import tqdm

from bench.common import load_zoo, provenance, provenance_lines, write_results
from specroute.loadtest import LoadTestConfig, load_zoo_prompts, run_loadtest

GOAL_STREAMS, GOAL = 8, 2.0
MODES = ("unbatched", "batched")


def run_scale_bench(zoo: Path, preset: str, concurrencies: tuple[int, ...], duration_s: float, max_new_tokens: int,
                    repeats: int, out: Path, drafter: str | None = None,
                    verifier_threads: tuple[int, ...] = (1,)) -> dict:
    """drafter: every request to this drafter, and only it (and the routing table's default, which the
    router needs) deployed; None: every zoo drafter deployed, the router choosing per prompt.
    verifier_threads: each mode runs with each of these torch thread counts in the verifier; a
    mode's figure at a level is its best thread count's (so neither mode is judged at a setting
    that suits only the other)."""
    from router.assign import RoutingTable
    from specroute.config import local_config_for_zoo
    from specroute.serve import LocalSystem
    from specroute.zoo.routing import ensure_routing

    manifest, target = load_zoo(zoo, preset)
    # Every request goes to `drafter`; the routing defaults stay deployed, as the router needs them.
    keep = None if drafter is None else {drafter, *(r.default for r in RoutingTable.load(ensure_routing(zoo)).modes.values())}
    every = load_zoo_prompts(zoo)
    prompts = [p for p in every  # prompts the target's context holds with their new tokens
               if len(target.tokenizer.encode(p.prompt)) + max_new_tokens <= target.max_context]
    variants = [(mode, threads) for mode in MODES for threads in verifier_threads]
    runs = {_name(v): {n: [] for n in concurrencies} for v in variants}
    startup = {_name(v): [] for v in variants}
    with tqdm(total=repeats * len(variants) * len(concurrencies), desc="bench scale") as bar:
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
                        bar.set_postfix_str(f"repeat {r + 1}, {name}, {n} streams")
                        load = LoadTestConfig(target=system.grpc_address, concurrency=n, duration_s=duration_s,
                                              max_new_tokens=max_new_tokens, warmup_requests=n, seed=r,
                                              drafter=drafter)
                        before = _verifier_counters(config.app_name)
                        report = run_loadtest(load, prompts, progress=False).to_dict()
                        after = _verifier_counters(config.app_name)
                        figures = _figures(report)
                        if mode == "batched":  # trees per forward over the level (prefill chunks count as forwards)
                            forwards = after.get("forwards", 0) - before.get("forwards", 0)
                            figures["trees_per_forward"] = (after.get("trees", 0) - before.get("trees", 0)) / forwards \
                                if forwards > 0 else None
                        runs[name][n].append(figures)
                        bar.update()
                finally:
                    system.stop()

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
        rows[n] = row
    goal_ratio = rows[GOAL_STREAMS]["ratio"] if GOAL_STREAMS in rows else None
    deployed = [d["name"] for d in manifest["drafters"]] if drafter is None else [drafter]
    result = {**provenance("scale", zoo), "zoo": str(zoo), "preset": manifest["preset"], "drafter": drafter,
              "drafters": deployed, "verifier_threads": list(verifier_threads), "duration_s": duration_s,
              "max_new_tokens": max_new_tokens, "repeats": repeats,
              "prompts": len(prompts), "prompts_too_long": len(every) - len(prompts),
              "startup_s": {name: statistics.median(v) for name, v in startup.items()},
              "per_concurrency": {str(n): row for n, row in rows.items()}, "runs": {
                  name: {str(n): v for n, v in by_n.items()} for name, by_n in runs.items()},
              "goal": {"streams": GOAL_STREAMS, "ratio": GOAL, "measured": goal_ratio,
                       "met": goal_ratio is not None and goal_ratio >= GOAL}}
    write_results(out, "scale-routed" if drafter is None else f"scale-{drafter}", result, _markdown(result), _plot)
    return result


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


def _markdown(r: dict) -> str:
    goal = r["goal"]
    lines = [
        "# Scale: aggregate throughput under concurrent streams, batched vs unbatched verification",
        "", *provenance_lines(r),
        f"Zoo: `{r['zoo']}` (preset {r['preset']}); " + (
            f"every request to the {r['drafter']} drafter.  " if r["drafter"] else
            f"every drafter deployed ({', '.join(r['drafters'])}), the router choosing per prompt.  "),
        f"Load: `specroute loadtest` closed loop over every task's test prompts ({r['prompts']}; "
        f"{r['prompts_too_long']} left out as too long for the context), greedy, {r['max_new_tokens']} new "
        f"tokens, {r['duration_s']:g} s per level after one warm-up request per stream; median of {r['repeats']} "
        f"repeats, each starting every system afresh. Verifier torch threads tried: "
        f"{', '.join(map(str, r['verifier_threads']))}; each mode is shown at its best.",
        "",
        "| streams | unbatched tok/s | batched tok/s | batched / unbatched | ITL p99 unbatched | ITL p99 batched "
        "| TTFT p50 unbatched | TTFT p50 batched | req/s batched | trees per forward | tau | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, row in r["per_concurrency"].items():
        u, b = row["unbatched"], row["batched"]
        errors = sum(int(v["errors"] or 0) for v in row["variants"].values())
        lines.append(f"| {n} | {_fmt(u['tokens_per_s'])} | {_fmt(b['tokens_per_s'])} | {row['ratio']:.2f}x | "
                     f"{_fmt(u['itl_p99_ms'], 0)} ms | {_fmt(b['itl_p99_ms'], 0)} ms | "
                     f"{_fmt(u['ttft_p50_ms'], 0)} ms | {_fmt(b['ttft_p50_ms'], 0)} ms | "
                     f"{_fmt(b['requests_per_s'], 2)} | {_fmt(b.get('trees_per_forward'), 1)} | "
                     f"{_fmt(b['tau'], 2)} | {errors} |")
    lines += ["", "Every variant (median tokens/s; ITL p99):", "",
              "| streams | " + " | ".join(r["runs"]) + " |", "|---|" + "---|" * len(r["runs"])]
    for n, row in r["per_concurrency"].items():
        lines.append(f"| {n} | " + " | ".join(f"{_fmt(v['tokens_per_s'])} tok/s; {_fmt(v['itl_p99_ms'], 0)} ms"
                                              for v in row["variants"].values()) + " |")
    lines += ["", f"Goal: at {goal['streams']} streams, batched >= {goal['ratio']:g}x unbatched: "
                  f"measured {_fmt(goal['measured'], 2)}x, {'met' if goal['met'] else 'NOT met'}.", ""]
    return "\n".join(lines)


def _plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = [int(n) for n in r["per_concurrency"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in r["runs"]:
        left.plot(levels, [r["per_concurrency"][str(n)]["variants"][name]["tokens_per_s"] for n in levels], "o-",
                  label=name)
        right.plot(levels, [r["per_concurrency"][str(n)]["variants"][name]["itl_p99_ms"] for n in levels], "o-",
                   label=name)
    left.set(xlabel="concurrent streams", ylabel="aggregate tokens/s", title="throughput", xticks=levels)
    right.set(xlabel="concurrent streams", ylabel="ms", title="inter-token latency p99", xticks=levels)
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("specroute: batched vs unbatched verification, "
                 + (f"{r['drafter']} drafter" if r["drafter"] else "routed drafters") + " (bench zoo, this CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
