"""`python -m bench services`: one stream through the whole system against the in-process engine.

For every task family of the zoo, its specialist drafter (the one the zoo distilled for it)
generates from the task's held-out test prompts at each temperature given (default: greedy, T=0,
and sampled, T=1), in each of these ways, with the same drafter settings:
- engine: `specroute.engine.Engine` in this process (target and drafter side by side), at 1 and
  at 2 torch threads. Each task's reference is the faster of the two: while the system's
  processes share the 2 cores, two OpenMP threads can lose to stragglers;
- service, `Client.generate()`: the gRPC SDK -> Ray Serve's gRPC proxy -> the router ingress ->
  the drafter's deployment (its own process) -> a verifier replica (its own process) over gRPC,
  one round trip per round; the completion comes back as one message (`single_response`);
- service, `Client.stream()`: the same path, with the rounds streamed back as they finish
  (coalesced within the drafter's `stream_interval_ms`).
The drafter is named in the request, so every path uses the same drafter. A sampled request is
seeded with the prompt's index among its task's prompts: the same seed for the same prompt every
way and every repeat. Seeded sampling is deterministic given the seed and the drafter (the
verifier draws with the seed; drafting ahead is greedy-only), so at every temperature the service
must produce exactly the engine's tokens; outputs are checked token for token and the mismatches
counted per temperature.

One request at a time (a single stream). Each repeat runs every prompt at every temperature every
way, back to back, rotating which way goes first; tokens/s is generated tokens over the caller's
wall time (prefill, tokenisation and every hop included), summed per task and temperature; the
tables report each task's median over repeats and the ratios service / engine (goal: >= 0.85).
Beside tau, the outputs' repeat share (`specroute.repetition.repeat_share`, mean over prompts): the
share of generated tokens that complete a 6-gram already seen in the prompt or the output, i.e.
how much of a figure is copying, which lookups predict exactly.

Where a round's time goes (`bench.schedstat`, Linux): around each 1-thread engine generation and
each `generate()`, the kernel's CPU time and run-queue wait of this process, and of the task's
drafter replica and the verifier replica, reported per round.

Results: the greedy figures under the keys they always had (`per_task`, `overall_ratio`,
`goal_met`, `mismatches`), and every temperature's under `by_temperature["0"]`,
`by_temperature["1"]`, ...; sampled mismatches also as `mismatches_t1` (and so on).

Writes `services.md`, `services.json` and `services.png` under the output directory.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.common import (greedy_figures, load_zoo, provenance, provenance_lines, side_by_side, temperature_keys,
                          write_results)
from bench.schedstat import CpuTimes, Reading, read, replica_pids, thread_cpus
from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.measure import TEMPERATURES, is_greedy, sampling_at
from specroute.repetition import repeat_share
from specroute.zoo.corpus import load_split

GOAL = 0.85
ENGINE_THREADS = {"engine-1t": 1, "engine-2t": 2}
SERVICES = ("generate", "stream")
METHODS = (*ENGINE_THREADS, *SERVICES)


def run_services_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                       out: Path, verifier_threads: int | None = None, stream_interval_ms: float | None = None,
                       draft_ahead: int | None = None, ray_cpus: list[int] | None = None,
                       compute_cpus: list[int] | None = None, temperatures: tuple[float, ...] = TEMPERATURES,
                       check_sampling: bool = True) -> dict:
    """verifier_threads: torch threads of the verifier replica; stream_interval_ms: the drafters'
    chunk interval for stream(); draft_ahead: the model drafters' guesses per round (None: the
    config's defaults). The engine gets the same drafter settings (in one process it never
    drafts ahead: nothing runs meanwhile). ray_cpus and compute_cpus: the config's `ray_cpus`,
    and every drafter's and the verifier's `deployment.cpus` (None: unpinned); the engine is
    never pinned. temperatures: each prompt is generated at each (0: greedy; above: sampled,
    seeded with the prompt's index); the top-level figures are the greedy ones (the first
    temperature's where 0 is not among them)."""
    from specroute.client import Client
    from specroute.config import SystemConfig
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem

    keys = temperature_keys(temperatures)
    manifest, target = load_zoo(zoo, preset, check_sampling)
    # The zoo's config with this run's settings, validated again as a whole.
    data = local_config_for_zoo(zoo, router={"max_new_tokens_limit": max(1024, max_new_tokens)}).model_dump()
    data["ray_cpus"] = ray_cpus
    for deployment in (data["verifier"]["deployment"], *(d["deployment"] for d in data["drafters"])):
        deployment["cpus"] = compute_cpus
    if verifier_threads is not None:
        data["verifier"]["deployment"]["torch_threads"] = verifier_threads
    for d in data["drafters"]:
        if stream_interval_ms is not None:
            d["stream_interval_ms"] = stream_interval_ms
        if draft_ahead is not None and d["kind"] == "model":
            d["options"]["draft_ahead"] = draft_ahead
    config = SystemConfig.model_validate(data)
    families = manifest["corpus"]["families"]
    specialist: dict = {}
    for d in config.drafters:  # the task's own specialist: listed before any feature specialist routed for it
        if d.specialised_for:
            specialist.setdefault(d.specialised_for, d)
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    prompts = {f: [ex.prompt for ex in tests if ex.task == f][:prompts_per_task] for f in families}
    engines = {f: Engine(target, create_drafter(specialist[f].kind, specialist[f].options)) for f in families}
    for f in families:  # warm up: first calls pay for lazy initialisation
        for t in temperatures:
            engines[f].generate(prompts[f][0], 8, sampling=sampling_at(t, 0))

    system = LocalSystem.start(config)
    try:
        with Client(system.grpc_address, timeout=600) as client:
            for f in families:
                for t in temperatures:
                    client.generate(prompts[f][0], max_new_tokens=8, drafter=specialist[f].name,
                                    **_request_sampling(t, 0))
            watched = _watched_processes(config.app_name, families, specialist)
            # Per temperature key, task and way: what the runs measured.
            times = {k: {f: {m: {"rounds": 0} for m in watched[f]} for f in families} for k in keys}
            runs = {k: {f: {m: [] for m in METHODS} for f in families} for k in keys}
            drafted_ahead = {k: {f: {m: [0, 0] for m in METHODS} for f in families} for k in keys}  # ahead, rounds
            shares = {k: {f: {m: [] for m in METHODS} for f in families} for k in keys}  # one per generation
            mismatches = {k: [] for k in keys}  # (task, prompt index, way, engine's ids, the way's ids)
            total = repeats * sum(map(len, prompts.values())) * len(METHODS) * len(temperatures)
            with tqdm(total=total, desc="bench services") as bar:
                for r in range(repeats):
                    for f in families:
                        sums = {k: {m: [0, 0.0, 0.0] for m in METHODS} for k in keys}  # tokens, wall, tau-weighted
                        for i, prompt in enumerate(prompts[f]):
                            prompt_ids = engines[f].encode(prompt)
                            shift = (r + i) % len(METHODS)
                            for t, k in zip(temperatures, keys):
                                outputs = {}
                                for method in METHODS[shift:] + METHODS[:shift]:
                                    pids = watched[f].get(method, {})
                                    before = {label: read(pid) for label, pid in pids.items()}
                                    start = time.perf_counter()
                                    tokens, tau, rounds, ahead = _run(method, engines[f], client, prompt,
                                                                      max_new_tokens, specialist[f].name, t, seed=i)
                                    wall = time.perf_counter() - start
                                    drafted_ahead[k][f][method][0] += ahead
                                    drafted_ahead[k][f][method][1] += rounds
                                    if pids:
                                        _account(times[k][f][method], pids, before, rounds)
                                    outputs[method] = tokens
                                    shares[k][f][method].append(repeat_share(prompt_ids, tokens))
                                    s = sums[k][method]
                                    s[0] += len(tokens)
                                    s[1] += wall
                                    s[2] += tau * len(tokens)
                                    bar.update()
                                mismatches[k] += [(f, i, m, outputs["engine-1t"], outputs[m]) for m in METHODS[1:]
                                                  if outputs[m] != outputs["engine-1t"]]
                        for k in keys:
                            for method, (tokens, wall, tau_w) in sums[k].items():
                                runs[k][f][method].append({"tokens_per_s": tokens / wall,
                                                           "tau": tau_w / tokens if tokens else 0.0,
                                                           "tokens": tokens, "wall_s": wall})
        # Which CPUs each replica's threads may use: with pinning, its compute threads apart.
        replica_cpus = {k: thread_cpus(pid) for k, pid in replica_pids(config.app_name).items()
                        if k == "Verifier" or k in {f"Drafter-{specialist[f].name}" for f in families}}
    finally:
        system.stop()

    torch.set_num_threads(ENGINE_THREADS["engine-2t"])  # as load_zoo set it: the provenance line reports it
    by_temperature = {
        k: {"temperature": t, **_summary(families, specialist, prompts, repeats, runs[k], times[k],
                                         drafted_ahead[k], shares[k]),
            "mismatches": len(mismatches[k]), "mismatch_examples": [
                {"task": f, "prompt_index": i, "way": m, "seed": None if is_greedy(t) else i,
                 "engine_token_ids": engine_ids, "service_token_ids": ids}
                for f, i, m, engine_ids, ids in mismatches[k][:3]]}
        for t, k in zip(temperatures, keys)}
    main = greedy_figures(by_temperature)
    result = {**provenance("services", zoo), "zoo": str(zoo), "preset": manifest["preset"],
              "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats,
              "temperatures": list(temperatures), "seeds": "the prompt's index among its task's prompts",
              "startup_s": system.startup_s, "verifier_threads": config.verifier.deployment.torch_threads,
              "drafter_threads": config.drafters[0].deployment.torch_threads,
              "stream_interval_ms": config.drafters[0].stream_interval_ms,
              "draft_ahead": {f: specialist[f].options.get("draft_ahead", 0) for f in families},
              "ray_cpus": config.ray_cpus, "compute_cpus": config.verifier.deployment.cpus,
              "replica_thread_cpus": replica_cpus, "goal": GOAL,
              **{key: main[key] for key in ("per_task", "overall_ratio", "goal_met", "mismatches")},
              **{f"mismatches_t{k}": by_temperature[k]["mismatches"] for t, k in zip(temperatures, keys)
                 if not is_greedy(t)},
              "by_temperature": by_temperature}
    write_results(out, "services", result, _markdown(result), _plot)
    return result


def _summary(families: list[str], specialist: dict, prompts: dict[str, list[str]], repeats: int,
             runs: dict, times: dict, drafted_ahead: dict, shares: dict) -> dict:
    """One temperature's figures from its runs: per_task, overall_ratio and goal_met."""
    per_task, reference = {}, {}
    for f in families:
        row = {m: {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[f][m]),
                   "tau": statistics.median(x["tau"] for x in runs[f][m]),
                   "repeat_share": statistics.fmean(shares[f][m])} for m in METHODS}
        reference[f] = max(ENGINE_THREADS, key=lambda m: row[m]["tokens_per_s"])
        row["engine"] = {**row[reference[f]], "threads": ENGINE_THREADS[reference[f]]}
        row["drafter"] = specialist[f].name
        row["repeat_share"] = row["engine"]["repeat_share"]  # of the engine's outputs (every way's when they agree)
        row["per_round_ms"] = _per_round_ms(times[f])
        for m in SERVICES:
            ahead, rounds = drafted_ahead[f][m]
            row[m]["drafted_ahead"] = ahead / rounds if rounds else 0.0
            pairs = list(zip(runs[f][reference[f]], runs[f][m]))
            row[m]["ratio"] = statistics.median(s["tokens_per_s"] / e["tokens_per_s"] for e, s in pairs)
            row[m]["overhead_ms_per_request"] = statistics.median(
                (s["wall_s"] - e["wall_s"]) / len(prompts[f]) * 1e3 for e, s in pairs)
        per_task[f] = row

    def rate(method_of: dict[str, str], r: int) -> float:
        picked = [runs[f][method_of[f]][r] for f in families]
        return sum(x["tokens"] for x in picked) / sum(x["wall_s"] for x in picked)
    overall = {m: statistics.median(rate(dict.fromkeys(families, m), r) / rate(reference, r) for r in range(repeats))
               for m in SERVICES}
    return {"per_task": per_task, "overall_ratio": overall,
            "goal_met": {m: all(row[m]["ratio"] >= GOAL for row in per_task.values()) for m in SERVICES}}


def _request_sampling(temperature: float, seed: int) -> dict:
    """The same as the SDK's keyword arguments."""
    return {"temperature": temperature, "seed": None if is_greedy(temperature) else seed}


def _run(method: str, engine: Engine, client, prompt: str, max_new_tokens: int, drafter: str,
         temperature: float, seed: int) -> tuple[list[int], float, int, int]:
    """One generation by `method` at `temperature` (seeded with `seed` when sampled): (its token
    ids, its tau, its rounds, the rounds whose tree was drafted ahead)."""
    if method in ENGINE_THREADS:
        torch.set_num_threads(ENGINE_THREADS[method])
        result = engine.generate(prompt, max_new_tokens, sampling=sampling_at(temperature, seed))
        return result.token_ids, result.stats.tau, result.stats.rounds, result.stats.rounds_drafted_ahead
    sampling = _request_sampling(temperature, seed)
    if method == "generate":
        done = client.generate(prompt, max_new_tokens=max_new_tokens, drafter=drafter, **sampling)
        m = done.metadata
        return done.token_ids, m.tau, m.rounds, m.rounds_drafted_ahead
    chunks = list(client.stream(prompt, max_new_tokens=max_new_tokens, drafter=drafter, **sampling))
    m = chunks[-1].metadata
    return [t for c in chunks for t in c.token_ids], m.tau, m.rounds, m.rounds_drafted_ahead


def _watched_processes(app_name: str, families: list[str], specialist: dict) -> dict[str, dict[str, dict[str, int]]]:
    """Per task and method, the processes whose CPU time and run-queue wait the bench records: this
    process for the 1-thread engine; the task's drafter replica and the verifier replica for
    generate(). A method is left out where its processes cannot be read (no schedstat, or a
    replica's process not found)."""
    if read(os.getpid()) is None:
        return {f: {} for f in families}
    pids = replica_pids(app_name)
    watched = {}
    for f in families:
        drafter, verifier = pids.get(f"Drafter-{specialist[f].name}"), pids.get("Verifier")
        watched[f] = {"engine-1t": {"engine": os.getpid()}}
        if drafter and verifier:
            watched[f]["generate"] = {"drafter": drafter, "verifier": verifier}
    return watched


def _account(into: dict, pids: dict[str, int], before: dict[str, Reading | None], rounds: int) -> None:
    into["rounds"] += rounds
    for label, pid in pids.items():
        after = read(pid)
        if after is not None and before[label] is not None:
            into[label] = into.get(label, CpuTimes(0.0, 0.0)) + after.since(before[label])


def _per_round_ms(times: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {process: {"cpu": ms, "wait": ms}}} per round, over every repeat."""
    return {method: {label: {"cpu": t.cpu_s / acc["rounds"] * 1e3, "wait": t.wait_s / acc["rounds"] * 1e3}
                     for label, t in acc.items() if label != "rounds"}
            for method, acc in times.items() if acc["rounds"]}


def _label(temperature: float) -> str:
    return f"T={temperature:g} (greedy)" if is_greedy(temperature) else \
        f"T={temperature:g} (sampled, seed = the prompt's index)"


def _by_temperature(r: dict) -> dict[str, dict]:
    """Every temperature's figures (a result from before temperatures: its greedy ones)."""
    return r.get("by_temperature") or {"0": {**r, "temperature": 0.0}}


def _markdown(r: dict) -> str:
    temps = _by_temperature(r)
    lines = [
        "# Services: one stream through the SDK and Ray Serve against the in-process engine",
        "", *provenance_lines(r),
        f"Zoo: `{r['zoo']}` (preset {r['preset']}); {r['prompts_per_task']} test prompts per task, "
        f"{r['max_new_tokens']} new tokens, at " + " and ".join(_label(t["temperature"]) for t in temps.values())
        + f", median of {r['repeats']} repeats; system start-up {r['startup_s']:.0f} s.  ",
        f"torch threads per replica: verifier {r.get('verifier_threads') or 'Ray default'}, drafters "
        f"{r.get('drafter_threads') or 'Ray default'}; the engine runs in the benchmark's process, at 1 and 2 "
        "threads, and each task's reference is the faster (its thread count in the table).  ",
        f"CPUs: {_cpus_setting(r)}.  ",
        "Threads per set of CPUs they may run on, at the end of the run: " + "; ".join(
            f"{name} {counts}" for name, counts in sorted(r.get("replica_thread_cpus", {}).items())) + ".",
        "",
        "Each task's specialist drafter, the same settings every way. tokens/s = generated tokens over the "
        "caller's wall time (prefill and every hop included). `generate()` gets the completion as one message; "
        f"`stream()` gets the rounds as they finish (coalesced within {r['stream_interval_ms']:g} ms). "
        "Overhead: the service's extra wall time per request. Drafted ahead: the share of `generate()`'s rounds "
        "whose tree the drafter drafted while the previous tree was verified (the drafters' `draft_ahead`: "
        f"{_draft_ahead_setting(r)}). A sampled request is seeded with the prompt's index among its task's "
        "prompts, the same every way and every repeat, so every way must give the engine's tokens. "
        "Repeat share: the share of generated tokens that complete a 6-gram already seen in the prompt or the "
        "output (mean over prompts, of the engine's outputs), i.e. how much of a figure is copying.",
        "",
    ]
    if len(temps) > 1:
        columns = {"generate() / engine": lambda row: f"{row['generate']['ratio']:.2f}",
                   "stream() / engine": lambda row: f"{row['stream']['ratio']:.2f}",
                   "tau": lambda row: f"{row['generate']['tau']:.2f}",
                   "repeat share": lambda row: f"{row['repeat_share']:.2f}"}
        names = [f"T={t['temperature']:g}" for t in temps.values()]
        rows = {f"{f} ({r['per_task'][f]['drafter']})": [t["per_task"][f] for t in temps.values()] for f in r["per_task"]}
        lines += ["## Every temperature side by side", "", *side_by_side("task (drafter)", rows, columns, names)]
        lines += ["", "Outputs differing from the engine's: " + ", ".join(
            f"{name}: {t['mismatches']}" for name, t in zip(names, temps.values())) + ".", ""]
    for t in temps.values():
        lines += [f"## {_label(t['temperature'])}", "", *_temperature_lines(r, t)]
    return "\n".join(lines)


def _temperature_lines(r: dict, t: dict) -> list[str]:
    """One temperature's table, totals, mismatches and where a round's time goes."""
    lines = [
        "| task | drafter | engine tok/s, 1 / 2 threads | generate() tok/s | generate() / engine | overhead | "
        "stream() tok/s | stream() / engine | overhead | tau | repeat share | drafted ahead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, row in t["per_task"].items():
        g, s = row["generate"], row["stream"]
        one, two = (f"{row[m]['tokens_per_s']:.1f}" for m in ENGINE_THREADS)
        one, two = (f"**{x}**" if row["engine"]["threads"] == n else x for x, n in ((one, 1), (two, 2)))
        share = row.get("repeat_share")
        lines.append(f"| {f} | {row['drafter']} | {one} / {two} | "
                     f"{g['tokens_per_s']:.1f} | {g['ratio']:.2f} | {g['overhead_ms_per_request']:.0f} ms | "
                     f"{s['tokens_per_s']:.1f} | {s['ratio']:.2f} | {s['overhead_ms_per_request']:.0f} ms | "
                     f"{g['tau']:.2f} | {'-' if share is None else f'{share:.2f}'} | "
                     f"{g.get('drafted_ahead', 0.0):.0%} |")
    lines.append("")
    for m in SERVICES:
        lines.append(f"All tasks, {m}(): service / engine = {t['overall_ratio'][m]:.2f} (goal >= {r['goal']} per "
                     f"task: {'met' if t['goal_met'][m] else 'NOT met'}).  ")
    lines.append(f"Outputs differing from the engine's: {t['mismatches']}.  ")
    for x in t.get("mismatch_examples", [])[:1]:
        engine_ids, ids = x["engine_token_ids"], x["service_token_ids"]
        first = next((j for j, (a, b) in enumerate(zip(engine_ids, ids)) if a != b), min(len(engine_ids), len(ids)))
        way = f"{x['way']}()" if x["way"] in SERVICES else x["way"]
        lines.append(f"For example {x['task']}, prompt {x['prompt_index']}, {way}: from token {first} on, the engine "
                     f"{engine_ids[first:first + 8]}, {way} {ids[first:first + 8]}.")
    lines.append("")
    rows = [(f, row["per_round_ms"]) for f, row in t["per_task"].items()
            if {"engine-1t", "generate"} <= set(row.get("per_round_ms", {}))]
    if rows:
        lines += [
            "Where a round's time goes (the kernel's schedstat, summed over each process's threads, ms per round over "
            "every repeat): on a CPU, and runnable but waiting for one. The engine is this process at 1 thread; "
            "`generate()` is the task's drafter replica and the verifier replica.",
            "",
            "| task | engine: cpu / waiting | drafter replica: cpu / waiting | verifier replica: cpu / waiting |",
            "|---|---|---|---|",
            *(f"| {f} | " + " | ".join(f"{p[k]['cpu']:.2f} / {p[k]['wait']:.2f}" for p, k in (
                (ms["engine-1t"], "engine"), (ms["generate"], "drafter"), (ms["generate"], "verifier"))) + " |"
              for f, ms in rows),
            "",
        ]
    return lines


def _cpus_setting(r: dict) -> str:
    if r.get("ray_cpus") is None and r.get("compute_cpus") is None:
        return "nothing pinned (every thread wherever the OS puts it)"
    return (f"Ray's processes started on {r.get('ray_cpus') or 'any'}, the drafters' drafting threads and the "
            f"verifier's forward thread pinned to {r.get('compute_cpus') or 'none'}; the engine unpinned")


def _draft_ahead_setting(r: dict) -> str:
    settings = sorted(set(r.get("draft_ahead", {}).values()))
    return ", ".join(map(str, settings)) if settings else "0"


def _plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    temps = list(_by_temperature(r).values())
    tasks = list(r["per_task"])
    fig, axes = plt.subplots(len(temps), 1, figsize=(9, 3.5 * len(temps) + 0.5), sharey=True, squeeze=False)
    width = 0.2
    for ax, t in zip(axes[:, 0], temps):
        for i, method in enumerate(METHODS):
            ax.bar([x + i * width for x in range(len(tasks))],
                   [t["per_task"][task][method]["tokens_per_s"] for task in tasks],
                   width, label=method if method in ENGINE_THREADS else f"{method}()")
            if method in SERVICES:
                for x, task in enumerate(tasks):
                    cell = t["per_task"][task][method]
                    ax.annotate(f"{cell['ratio']:.2f}", (x + i * width, cell["tokens_per_s"]), ha="center",
                                va="bottom", fontsize=7)
        ax.set_xticks([x + 1.5 * width for x in range(len(tasks))], tasks)
        ax.set_title(_label(t["temperature"]))
        ax.set_ylabel("tokens/s (single stream)")
        ax.legend()
    fig.suptitle("specroute: SDK through Ray Serve vs in-process engine (label: ratio to the faster engine)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
