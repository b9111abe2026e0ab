"""`specroute bench services`: one stream through the whole system against the in-process engine.

For every task family of the zoo, its specialist drafter (the one the zoo distilled for it)
generates greedily from the task's held-out test prompts two ways, with the same drafter
settings:
- engine: `specroute.engine.Engine` in this process (target and drafter side by side);
- service: the gRPC SDK -> Ray Serve's gRPC proxy -> the router ingress -> the drafter's
  deployment (its own process) -> a verifier replica (its own process) over gRPC, one round trip
  per round, and the chunks back the same way. The drafter is named in the request, so both
  paths use the same drafter.

One request at a time (a single stream). Each repeat runs every prompt both ways, back to back,
alternating which goes first; tokens/s is generated tokens over the caller's wall time (prefill,
tokenisation and every hop included), summed per task; the table reports each task's median over
repeats and the ratio service / engine (goal: >= 0.85). Outputs are checked token for token: the
service must produce exactly the engine's tokens.

Writes `services.md`, `services.json` and `services.png` under the output directory.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from tqdm.auto import tqdm

from bench.common import load_zoo, provenance, provenance_lines, write_results
from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.zoo.corpus import load_split

GOAL = 0.85


def run_services_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, repeats: int,
                       out: Path, verifier_threads: int | None = None) -> dict:
    """verifier_threads: torch threads of the verifier replica (None: the config's default)."""
    from specroute.client import Client
    from specroute.config import local_config_for_zoo
    from specroute.serve import LocalSystem

    manifest, target = load_zoo(zoo, preset)
    config = local_config_for_zoo(zoo, router={"max_new_tokens_limit": max(1024, max_new_tokens)})
    if verifier_threads is not None:  # only the threads: the verifier keeps the rest of its deployment defaults
        deployment = config.verifier.deployment.model_copy(update={"torch_threads": verifier_threads})
        config = config.model_copy(update={"verifier": config.verifier.model_copy(update={"deployment": deployment})})
    families = manifest["corpus"]["families"]
    specialist = {d.specialised_for: d for d in config.drafters if d.specialised_for}
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    prompts = {f: [ex.prompt for ex in tests if ex.task == f][:prompts_per_task] for f in families}
    engines = {f: Engine(target, create_drafter(specialist[f].kind, specialist[f].options)) for f in families}
    for f in families:  # warm up: first calls pay for lazy initialisation
        engines[f].generate(prompts[f][0], 8)

    system = LocalSystem.start(config)
    try:
        with Client(system.grpc_address, timeout=600) as client:
            for f in families:
                client.generate(prompts[f][0], max_new_tokens=8, drafter=specialist[f].name)
            runs = {f: {"engine": [], "service": []} for f in families}
            mismatches = 0
            total = repeats * sum(map(len, prompts.values())) * 2
            with tqdm(total=total, desc="bench services") as bar:
                for r in range(repeats):
                    for f in families:
                        sums = {"engine": [0, 0.0, 0.0], "service": [0, 0.0, 0.0]}  # tokens, wall, tau-weighted
                        for i, prompt in enumerate(prompts[f]):
                            order = ("engine", "service") if (r + i) % 2 == 0 else ("service", "engine")
                            outputs = {}
                            for method in order:
                                start = time.perf_counter()
                                if method == "engine":
                                    result = engines[f].generate(prompt, max_new_tokens)
                                    tokens, tau = result.token_ids, result.stats.tau
                                else:
                                    done = client.generate(prompt, max_new_tokens=max_new_tokens,
                                                           drafter=specialist[f].name)
                                    tokens, tau = done.token_ids, done.metadata.tau
                                wall = time.perf_counter() - start
                                outputs[method] = tokens
                                s = sums[method]
                                s[0] += len(tokens)
                                s[1] += wall
                                s[2] += tau * len(tokens)
                                bar.update()
                            mismatches += outputs["engine"] != outputs["service"]
                        for method, (tokens, wall, tau_w) in sums.items():
                            runs[f][method].append({"tokens_per_s": tokens / wall, "tau": tau_w / tokens,
                                                    "tokens": tokens, "wall_s": wall})
    finally:
        system.stop()

    per_task = {}
    for f in families:
        row = {m: {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[f][m]),
                   "tau": statistics.median(x["tau"] for x in runs[f][m])} for m in ("engine", "service")}
        ratios = [s["tokens_per_s"] / e["tokens_per_s"] for e, s in zip(runs[f]["engine"], runs[f]["service"])]
        row["ratio"] = statistics.median(ratios)
        row["drafter"] = specialist[f].name
        row["overhead_ms_per_request"] = statistics.median(
            (s["wall_s"] - e["wall_s"]) / len(prompts[f]) * 1e3 for e, s in zip(runs[f]["engine"], runs[f]["service"]))
        per_task[f] = row
    overall = statistics.median(
        sum(runs[f]["service"][r]["tokens"] for f in families) / sum(runs[f]["service"][r]["wall_s"] for f in families)
        / (sum(runs[f]["engine"][r]["tokens"] for f in families) / sum(runs[f]["engine"][r]["wall_s"] for f in families))
        for r in range(repeats))
    result = {**provenance("services", zoo), "zoo": str(zoo), "preset": manifest["preset"],
              "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeats": repeats,
              "startup_s": system.startup_s, "verifier_threads": config.verifier.deployment.torch_threads,
              "drafter_threads": config.drafters[0].deployment.torch_threads, "mismatches": mismatches, "per_task": per_task,
              "overall_ratio": overall, "goal": GOAL,
              "goal_met": all(row["ratio"] >= GOAL for row in per_task.values())}
    write_results(out, "services", result, _markdown(result), _plot)
    return result


def _markdown(r: dict) -> str:
    lines = [
        "# Services: one stream through the SDK and Ray Serve against the in-process engine",
        "", *provenance_lines(r),
        f"Zoo: `{r['zoo']}` (preset {r['preset']}); {r['prompts_per_task']} test prompts per task, "
        f"{r['max_new_tokens']} new tokens, greedy, median of {r['repeats']} repeats; system start-up "
        f"{r['startup_s']:.0f} s.  ",
        f"torch threads per replica: verifier {r.get('verifier_threads') or 'Ray default'}, drafters "
        f"{r.get('drafter_threads') or 'Ray default'}; the engine runs in the benchmark's process.",
        "",
        "Each task's specialist drafter, the same settings both ways. tokens/s = generated tokens over the "
        "caller's wall time (prefill and every hop included).",
        "",
        "| task | drafter | engine tok/s | service tok/s | service / engine | overhead per request | tau |",
        "|---|---|---|---|---|---|---|",
    ]
    for f, row in r["per_task"].items():
        lines.append(f"| {f} | {row['drafter']} | {row['engine']['tokens_per_s']:.1f} | "
                     f"{row['service']['tokens_per_s']:.1f} | {row['ratio']:.2f} | "
                     f"{row['overhead_ms_per_request']:.0f} ms | {row['service']['tau']:.2f} |")
    lines += ["", f"All tasks: service / engine = {r['overall_ratio']:.2f} (goal >= {r['goal']} per task: "
                  f"{'met' if r['goal_met'] else 'NOT met'}).",
              f"Outputs differing between service and engine: {r['mismatches']}.", ""]
    return "\n".join(lines)


def _plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(r["per_task"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.4
    for i, method in enumerate(("engine", "service")):
        ax.bar([x + i * width for x in range(len(tasks))], [r["per_task"][t][method]["tokens_per_s"] for t in tasks],
               width, label=method)
    for x, t in enumerate(tasks):
        ax.annotate(f"{r['per_task'][t]['ratio']:.2f}", (x + width, r["per_task"][t]["service"]["tokens_per_s"]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks([x + width / 2 for x in range(len(tasks))], tasks)
    ax.set_ylabel("tokens/s (single stream)")
    ax.set_title("specroute: SDK through Ray Serve vs in-process engine (label: ratio)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
