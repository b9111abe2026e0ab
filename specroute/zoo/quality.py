"""`specroute zoo quality`: does the zoo's target write text, or loop?

A target whose greedy output repeats itself flatters every drafter, lookups most: once output
repeats, prompt lookup and a datastore of the target's own continuations predict it exactly. So
the zoo measures its target, per task on held-out test prompts, for greedy output, T=1 samples
and the corpus's reference continuation:
- held-out loss: the target's mean next-token cross-entropy on the reference continuations;
- distinct-n and the repeat share (`specroute.repetition`), per continuation, the mean over
  prompts (so one looping answer is not diluted by the others).

The goal a bench target must meet, per task, greedy: repeat share <= 1.5 x the reference's + 0.05
and distinct-4 >= 0.85 x the reference's (`meets_goal`).

This module knows nothing about drafters or serving.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from specroute.repetition import REPEAT_N, distinct_n, repeat_share


def text_quality(pairs: list[tuple[list[int], list[int]]]) -> dict:
    """Mean distinct-2, distinct-4 and repeat share over (prompt, continuation) pairs."""
    if not pairs:
        return {"distinct_2": None, "distinct_4": None, "repeat_share": None, "samples": 0}
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"distinct_2": mean([distinct_n(c, 2) for _, c in pairs]),
            "distinct_4": mean([distinct_n(c, 4) for _, c in pairs]),
            "repeat_share": mean([repeat_share(p, c) for p, c in pairs]),
            "samples": len(pairs)}


def meets_goal(generated: dict, reference: dict) -> bool:
    """The bench target's bar for one task's greedy output against its reference text."""
    return (generated["repeat_share"] <= 1.5 * reference["repeat_share"] + 0.05
            and generated["distinct_4"] >= 0.85 * reference["distinct_4"])


@torch.no_grad()
def heldout_loss(model, pairs: list[tuple[list[int], list[int]]]) -> float:
    """Mean next-token cross-entropy (nats) of the continuations given their prompts."""
    total, count = 0.0, 0
    for prompt, continuation in pairs:
        if not continuation:
            continue
        ids = torch.tensor([prompt + continuation], device=model.device)
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1].float()
        loss = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):], reduction="sum")
        total, count = total + float(loss), count + len(continuation)
    return total / count if count else math.nan


def evaluate_quality(target_dir: Path, examples: list, tasks: list[str], prompts_per_task: int,
                     max_new_tokens: int, seed: int = 0) -> dict:
    """Per task: held-out loss and text quality of greedy output, T=1 samples and the reference.

    `examples` are corpus examples (task, prompt, continuation); the first `prompts_per_task` of
    each task whose prompt and `max_new_tokens` fit the target's context are used.
    """
    from specroute.engine import Engine
    from specroute.measure import fit_prompts
    from core.sampling import SamplingParams
    from verifier_service.target import TargetModel
    target = TargetModel.from_dir(target_dir, device="cpu")
    engine, tok = Engine(target), target.tokenizer
    results = {}
    chosen = {}
    for task in tasks:
        ids = [(tok.encode(ex.prompt, add_special_tokens=False), tok.encode(ex.continuation, add_special_tokens=False))
               for ex in examples if ex.task == task]
        fitting, _ = fit_prompts([p for p, _ in ids], target.max_context, max_new_tokens)
        keep = {tuple(p) for p in fitting}
        chosen[task] = [(p, c[:max_new_tokens]) for p, c in ids if tuple(p) in keep][:prompts_per_task]
    with tqdm(total=sum(map(len, chosen.values())) * 2, desc="zoo quality") as bar:
        for task, pairs in chosen.items():
            greedy, sampled = [], []
            for i, (prompt, _) in enumerate(pairs):
                greedy.append((prompt, engine.generate(prompt, max_new_tokens).token_ids))
                bar.update()
                sampled.append((prompt, engine.generate(
                    prompt, max_new_tokens, sampling=SamplingParams(temperature=1.0, seed=seed + i)).token_ids))
                bar.update()
            reference = text_quality(pairs)
            results[task] = {"heldout_loss": heldout_loss(target.model, pairs), "greedy": text_quality(greedy),
                             "sampled_t1": text_quality(sampled), "reference": reference}
            results[task]["meets_goal"] = bool(pairs) and meets_goal(results[task]["greedy"], reference)
    return {"prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens, "repeat_n": REPEAT_N,
            "tasks": results, "tasks_meeting_goal": sum(r["meets_goal"] for r in results.values())}


def quality_table(report: dict) -> str:
    """One row per task: loss, distinct-4 and repeat share for greedy, T=1 and the reference."""
    lines = [f"{'task':<12} {'loss':>6}  {'distinct-4 greedy/T=1/ref':>26}  {'repeat greedy/T=1/ref':>22}  goal"]
    for task, r in report["tasks"].items():
        g, s, ref = r["greedy"], r["sampled_t1"], r["reference"]
        if not ref["samples"]:
            lines.append(f"{task:<12} (no test prompt fits the context)")
            continue
        lines.append(f"{task:<12} {r['heldout_loss']:>6.2f}  "
                     f"{g['distinct_4']:>8.2f} {s['distinct_4']:>8.2f} {ref['distinct_4']:>8.2f}  "
                     f"{g['repeat_share']:>7.2f} {s['repeat_share']:>7.2f} {ref['repeat_share']:>6.2f}  "
                     f"{'met' if r['meets_goal'] else 'missed'}")
    lines.append(f"tasks within the goal: {report['tasks_meeting_goal']} of {len(report['tasks'])}")
    return "\n".join(lines)


def quality_of_zoo(zoo: Path, prompts_per_task: int = 8, max_new_tokens: int = 96, out: Path | None = None) -> dict:
    """Measures a built zoo's target on its test split; writes quality.json into `out` (default:
    the zoo) and records the report in the zoo's manifest."""
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import MANIFEST, load_manifest
    zoo = Path(zoo)
    manifest = load_manifest(zoo)
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    report = evaluate_quality(zoo / manifest["target"]["path"], tests, manifest["corpus"]["families"],
                              prompts_per_task, max_new_tokens, seed=manifest.get("seed", 0))
    out = Path(out or zoo)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(report, indent=2))
    manifest["target"]["quality"] = report
    (zoo / MANIFEST).write_text(json.dumps(manifest, indent=2))
    print(quality_table(report))
    return report
