"""`python -m bench router`: task detection, the classifier, and routed tau on the bench zoo.

1. Detection: `specroute.offline.detect` on a seeded sample of the zoo's training prompts (the task
   families are hidden from it). Agreement with the families on the held-out test prompts is the
   adjusted Rand index between the classifier's tasks and the families.
2. Classifier accuracy on the test prompts: each detected task stands for the family most of its
   training prompts came from; a prediction is right when that family is the prompt's own.
3. Classifier latency: one `predict` per prompt, for the test prompts and for prompts of 1, 2
   and 4 kB; p50 and p99.
4. Assignment: `specroute.offline.assign` measures every zoo drafter on validation prompts (a seeded
   shuffle), grouped by the task the classifier gives them, greedy and at T=1: a routing table
   per sampling mode, in which a drafter slower than plain decoding is never routed to. It is
   saved beside the task artifact in `zoo/tasks`, so serving the zoo afterwards routes by both.
5. Routed tau, at T=0 and at T=1 (test prompt i seeded i): every drafter and plain decoding
   generate from every test prompt, interleaved per prompt. From those same runs: routed (the
   drafter the router picks for the request's sampling mode: classifier, confidence fallback
   and that mode's routes, `plain` included), generic (the zoo's generic drafter), and oracle
   (per prompt, the drafter with the highest tau in hindsight). Per task, tau is tokens over
   rounds; the figures averaged over tasks are plain means of the per-task values. Beside them,
   the plain outputs' repeat share: how much of the text copies earlier text.

Writes `router.md`, `router.json` and `router.png` under the output directory.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch
from sklearn.metrics import adjusted_rand_score
from tqdm.auto import tqdm

from bench.common import load_zoo, provenance, provenance_lines, write_results
from router.assign import GREEDY, mode_of
from router.detect import load_tasks
from router.router import Router, RouterConfig
from specroute.engine import Engine
from specroute.measure import PLAIN, TEMPERATURES, sampling_at, temperature_key
from specroute.offline.assign import zoo_drafters
from specroute.offline.detect import detect_tasks, save_tasks
from specroute.repetition import repeat_share
from specroute.zoo.corpus import load_split
from specroute.zoo.routing import assign_zoo

GOALS = {"ari": 0.9, "accuracy": 0.95, "routed_over_generic": 1.2, "routed_over_oracle": 0.9, "p99_ms": 1.0}


def run_router_bench(zoo: Path, preset: str, prompts_per_task: int, max_new_tokens: int, out: Path,
                     detect_prompts: int = 4000, seed: int = 0, threshold: float = 0.5,
                     check_sampling: bool = True) -> dict:
    manifest, target = load_zoo(zoo, preset, check_sampling)
    files = manifest["corpus"]["files"]
    train, test = (load_split(zoo / files[s]) for s in ("train", "test"))
    families = manifest["corpus"]["families"]

    # 1-2. Detection and the classifier.
    sample = random.Random(seed).sample(train, min(detect_prompts, len(train)))
    start = time.perf_counter()
    detection = detect_tasks([ex.prompt for ex in sample], seed=seed)
    detect_s = time.perf_counter() - start
    tasks_dir = zoo / "tasks"
    save_tasks(detection, tasks_dir)
    tasks = load_tasks(tasks_dir)
    family_of = {ex.prompt: ex.task for ex in sample}
    majority = _majority_family(detection, [family_of[p] for p in detection.prompts])
    predictions = tasks.classifier.predict_many([ex.prompt for ex in test])
    ari = adjusted_rand_score([ex.task for ex in test], [p.task for p in predictions])
    accuracy = statistics.mean(majority[p.task] == ex.task for p, ex in zip(predictions, test))

    # 3. Latency.
    latency = _latency(tasks.classifier, [ex.prompt for ex in test], seed)

    # 4. Assignment on validation prompts, grouped by the classifier's task; saved beside the
    # artifact it was made for, so serving the zoo uses both.
    table = assign_zoo(zoo, tasks, prompts_per_task, max_new_tokens, seed)
    _, drafters, generic = zoo_drafters(zoo)
    router = Router(tasks, table, None, RouterConfig(confidence_threshold=threshold, adaptive=False))

    # 5. Every drafter on every test prompt, at each temperature; routed, generic and oracle from the same runs.
    torch.set_num_threads(2)
    engines = {PLAIN: Engine(target), **{d.name: Engine(target, d.load()) for d in drafters}}
    chosen = [ex for f in families for ex in [e for e in test if e.task == f][:prompts_per_task]]
    by_temperature, lossless = {}, True
    with tqdm(total=len(chosen) * len(engines) * len(TEMPERATURES), desc="bench router") as bar:
        for temperature in TEMPERATURES:
            per_prompt = []
            for i, ex in enumerate(chosen):
                ids = target.tokenizer.encode(ex.prompt)
                runs = {name: _run(engine, ids, max_new_tokens, sampling_at(temperature, seed=i))
                        for name, engine in engines.items()}
                bar.update(len(engines))
                if temperature == 0:
                    lossless &= all(r["ids"] == runs[PLAIN]["ids"] for r in runs.values())
                decision = router.route(ex.prompt, greedy=temperature == 0)
                oracle = max((n for n in runs if n != PLAIN), key=lambda n: runs[n]["emitted"] / max(1, runs[n]["rounds"]))
                per_prompt.append({"family": ex.task, "routed": decision.drafter, "source": decision.source,
                                   "oracle": oracle, "repeat_share": repeat_share(ids, runs[PLAIN]["ids"]),
                                   "runs": {n: {k: v for k, v in r.items() if k != "ids"} for n, r in runs.items()}})
            by_temperature[temperature_key(temperature)] = _routed_figures(
                per_prompt, families, generic, table.routes(mode_of(temperature == 0)))
    greedy = by_temperature[temperature_key(0.0)]

    results = {
        "setup": {
            **provenance("router", zoo), "zoo_preset": manifest["preset"],
            "detect_prompts": len(sample), "test_prompts_classified": len(test), "prompts_per_task": prompts_per_task,
            "max_new_tokens": max_new_tokens, "confidence_threshold": threshold, "seed": seed,
            "temperatures": list(TEMPERATURES)},
        "detection": {"k": len(detection.tasks), "merge_gap": detection.meta["merge_gap"],
                      "silhouette": detection.silhouette, "seconds": detect_s,
                      "tasks": [{**t, "family": majority[t["name"]]} for t in detection.tasks]},
        "ari": ari, "accuracy": accuracy, "latency_ms": latency,
        **greedy, "by_temperature": by_temperature, "lossless": lossless, "goals": GOALS,
    }
    write_results(out, "router", results, _markdown(results), _plot)
    return results


def _run(engine: Engine, ids: list[int], max_new_tokens: int, sampling) -> dict:
    result = engine.generate(ids, max_new_tokens, sampling=sampling)
    s = result.stats
    return {"tokens": s.num_generated, "rounds": s.rounds, "emitted": s.num_emitted, "seconds": s.wall_time_s,
            "ids": result.token_ids}


def _routed_figures(per_prompt: list[dict], families: list[str], generic: str, routes) -> dict:
    """One temperature's figures: per task and their means, and the routes they were taken from."""
    per_task = _per_task(per_prompt, families, generic)
    means = {k: statistics.mean(t[k]["tau"] for t in per_task.values()) for k in ("routed", "generic", "oracle")}
    speed = {k: statistics.mean(t[k]["speedup"] for t in per_task.values()) for k in ("routed", "generic", "oracle")}
    return {"routing_table": routes.table, "default": routes.default, "assignment_matrix": routes.matrix,
            "per_task": per_task, "mean_tau": means, "mean_speedup": speed,
            "mean_repeat_share": statistics.mean(t["repeat_share"] for t in per_task.values()),
            "routed_over_generic": means["routed"] / means["generic"],
            "routed_over_oracle": means["routed"] / means["oracle"]}


def _majority_family(detection, families: list[str]) -> dict[str, str]:
    counts: dict[str, dict[str, int]] = {name: {} for name in detection.names}
    for label, family in zip(detection.labels, families):
        row = counts[detection.names[label]]
        row[family] = row.get(family, 0) + 1
    return {name: max(row, key=row.get) for name, row in counts.items()}


def _latency(classifier, prompts: list[str], seed: int) -> dict:
    rng = random.Random(seed)
    cases = {"test prompts": prompts[:300]}
    for size in (1024, 2048, 4096):
        made = []
        for _ in range(100):
            text = ""
            while len(text) < size:
                text += rng.choice(prompts) + "\n"
            made.append(text[:size])
        cases[f"{size // 1024} kB"] = made
    classifier.predict(prompts[0])  # warm up
    out = {}
    for case, texts in cases.items():
        times = []
        for text in texts:
            start = time.perf_counter()
            classifier.predict(text)
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        out[case] = {"p50": times[len(times) // 2], "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
                     "n": len(times)}
    return out


def _per_task(per_prompt: list[dict], families: list[str], generic: str) -> dict:
    out = {}
    for family in families:
        rows = [r for r in per_prompt if r["family"] == family]
        if not rows:
            continue
        plain_s = sum(r["runs"][PLAIN]["seconds"] for r in rows)
        plain_tokens = sum(r["runs"][PLAIN]["tokens"] for r in rows)
        entry = {}
        for kind in ("routed", "generic", "oracle"):
            picks = [r["runs"][generic if kind == "generic" else r[kind]] for r in rows]
            tokens, seconds = sum(p["tokens"] for p in picks), sum(p["seconds"] for p in picks)
            rate = tokens / seconds if seconds else 0.0
            entry[kind] = {"tau": sum(p["emitted"] for p in picks) / max(1, sum(p["rounds"] for p in picks)),
                           "tokens_per_s": rate, "speedup": rate / (plain_tokens / plain_s) if plain_s else 0.0}
        entry["routed_drafters"] = sorted({r["routed"] for r in rows})
        entry["repeat_share"] = statistics.mean(r["repeat_share"] for r in rows)
        entry["fallbacks"] = sum(r["source"] == "low-confidence" for r in rows)
        entry["prompts"] = len(rows)
        out[family] = entry
    return out


def _markdown(r: dict) -> str:
    s, g = r["setup"], r["goals"]
    ok = lambda v, goal, above=True: "met" if (v >= goal if above else v < goal) else "NOT met"  # noqa: E731
    p99 = max(v["p99"] for v in r["latency_ms"].values())
    lines = [
        "# Router benchmark", "", *provenance_lines(s),
        f"Models: zoo preset `{s['zoo_preset']}`; detection on {s['detect_prompts']} training prompts; classifier on "
        f"{s['test_prompts_classified']} test prompts; routed tau on {s['prompts_per_task']} test prompts per task, "
        f"{s['max_new_tokens']} new tokens, greedy and sampled at T=1 (test prompt i seeded i); confidence threshold "
        f"{s['confidence_threshold']}. The goals on tau are greedy's.", "",
        "| goal | measured | target | |", "|---|---|---|---|",
        f"| ARI, detected tasks vs families (test prompts) | {r['ari']:.3f} | >= {g['ari']} | {ok(r['ari'], g['ari'])} |",
        f"| classifier accuracy (test prompts) | {r['accuracy']:.1%} | >= {g['accuracy']:.0%} | "
        f"{ok(r['accuracy'], g['accuracy'])} |",
        f"| classifier p99 latency, prompts up to 4 kB | {p99:.3f} ms | < {g['p99_ms']} ms | "
        f"{ok(p99, g['p99_ms'], above=False)} |",
        f"| routed tau / generic tau (mean over tasks) | {r['routed_over_generic']:.2f}x | >= {g['routed_over_generic']}x | "
        f"{ok(r['routed_over_generic'], g['routed_over_generic'])} |",
        f"| routed tau / oracle tau (mean over tasks) | {r['routed_over_oracle']:.1%} | >= {g['routed_over_oracle']:.0%} | "
        f"{ok(r['routed_over_oracle'], g['routed_over_oracle'])} |", "",
        f"Outputs identical to plain decoding for every drafter: {r['lossless']}.", "",
        f"## Detection ({r['detection']['k']} tasks, {r['detection']['seconds']:.1f} s)", "",
        "| task | prompts | majority family | top terms | routed to, T=0 | routed to, T=1 |", "|---|---|---|---|---|---|"]
    for t in r["detection"]["tasks"]:
        routed = [v["routing_table"].get(t["name"], "-") for v in r["by_temperature"].values()]
        lines.append(f"| {t['name']} | {t['size']} | {t['family']} | {' '.join(t['top_terms'])} | " + " | ".join(routed) + " |")
    lines += ["", "k is where the Ward dendrogram's merge heights jump most; merge-height gap by k: "
              + ", ".join(f"{k}: {v:.2f}" for k, v in r["detection"]["merge_gap"].items())
              + "; silhouette by k (a diagnostic): "
              + ", ".join(f"{k}: {v:.3f}" for k, v in r["detection"]["silhouette"].items()), ""]
    for key, v in r["by_temperature"].items():
        lines += [f"## Routed, generic and oracle, per task, T={key}", "",
                  f"Default for unsure prompts: {v['default']}.", "",
                  "| task | routed drafters | tau routed | tau generic | tau oracle | speedup routed | speedup generic | "
                  "speedup oracle | repeat | fallbacks |", "|---|---|---|---|---|---|---|---|---|---|"]
        for family, t in v["per_task"].items():
            lines.append(f"| {family} | {', '.join(t['routed_drafters'])} | {t['routed']['tau']:.2f} | "
                         f"{t['generic']['tau']:.2f} | {t['oracle']['tau']:.2f} | {t['routed']['speedup']:.2f}x | "
                         f"{t['generic']['speedup']:.2f}x | {t['oracle']['speedup']:.2f}x | {t['repeat_share']:.2f} | "
                         f"{t['fallbacks']}/{t['prompts']} |")
        m, sp_ = v["mean_tau"], v["mean_speedup"]
        lines += [f"| **mean** | | {m['routed']:.2f} | {m['generic']:.2f} | {m['oracle']:.2f} | {sp_['routed']:.2f}x | "
                  f"{sp_['generic']:.2f}x | {sp_['oracle']:.2f}x | {v['mean_repeat_share']:.2f} | |", ""]
    lines += ["Speedup: decoding tokens/s over plain decoding on the same prompts (prefill excluded). repeat: the "
              "plain output's share of tokens completing a 6-gram already seen in the prompt or the output.", "",
              "## Classifier latency (one prompt per call)", "", "| prompts | p50 ms | p99 ms | n |", "|---|---|---|---|"]
    for case, v in r["latency_ms"].items():
        lines.append(f"| {case} | {v['p50']:.3f} | {v['p99']:.3f} | {v['n']} |")
    return "\n".join(lines) + "\n"


def _plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = r["by_temperature"]
    fig, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 4), squeeze=False)
    width = 0.27
    for ax, (key, v) in zip(axes[0], panels.items()):
        families = list(v["per_task"])
        for i, kind in enumerate(("generic", "routed", "oracle")):
            ax.bar([x + i * width for x in range(len(families))], [v["per_task"][f][kind]["speedup"] for f in families],
                   width, label=kind)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + width for x in range(len(families))], families)
        ax.set_ylabel("speedup over plain decoding")
        ax.set_title(f"specroute router, T={key}: generic vs routed vs oracle (CPU)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
