"""`python -m bench target`: which training levers make a zoo's target stop looping.

Trains target variants on a preset's corpus and tokenizer (built, or reused, in the zoo
directory), each from scratch with the preset's architecture unless the variant changes it, and
measures each on the task's validation prompts (`specroute.zoo.quality`: held-out loss,
distinct-n and repeat share of greedy output, T=1 samples and the reference). Validation, not
test, prompts: this chooses the recipe the preset then uses. Variants run one after another;
each is checkpointed, so an interrupted run resumes. Each variant's weights keep a record of the
target stage's key they were trained under, so a build whose preset names the same recipe adopts
them instead of training them again.

A variant is a name and overrides of the preset's target training (`TrainSpec` fields:
steps, batch_size, lr, unlikelihood) and, optionally, of its architecture (hidden, layers). Its
checkpoint is keyed by its settings, so a name reused with other settings starts afresh.

This module knows nothing about drafters.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bench.common import provenance
from specroute.zoo.build import LEVER_RECORD, LEVERS, ZooBuilder, stage_key, target_inputs
from specroute.zoo.presets import PRESETS, ArchSpec, TrainSpec
from specroute.zoo.quality import evaluate_quality, quality_table
from specroute.zoo.training import pretrain


def parse_variant(text: str) -> tuple[str, dict]:
    """'ul05:unlikelihood=0.5,steps=2000' -> ('ul05', {'unlikelihood': 0.5, 'steps': 2000})."""
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = float(value) if "." in value or "e" in value else int(value)
    return name, overrides


def run(preset_name: str, zoo: Path, out: Path, variants: list[str], prompts_per_task: int,
        max_new_tokens: int) -> dict:
    torch.set_num_threads(2)
    preset = PRESETS[preset_name]
    builder = ZooBuilder(preset, zoo)
    tokenizer = builder.build_text()
    tokens = builder.train_stream()
    validation = builder._splits()["validation"]
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "target.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"variants": {}}
    results.update({"preset": preset_name, **provenance("target", zoo), "train_tokens": len(tokens),
                    "prompts_per_task": prompts_per_task, "max_new_tokens": max_new_tokens,
                    "split": "validation"})
    for text in variants:
        name, overrides = parse_variant(text)
        # Validated, so a mistyped field fails here rather than being ignored.
        arch = ArchSpec(**{**preset.target.model_dump(), **{k: overrides.pop(k) for k in ("hidden", "layers")
                                                            if k in overrides}})
        train = TrainSpec(**{**preset.target_train.model_dump(), **overrides})
        settings = {"arch": arch.model_dump(), "train": train.model_dump()}
        inputs = target_inputs(preset, tokenizer["key"], arch, train)
        digest = stage_key(inputs)
        if results["variants"].get(name, {}).get("settings") == settings:
            print(f"[target] {name}: measured already")
            continue
        model_dir = zoo / LEVERS / name  # weights stay beside the zoo; results go to `out`
        start = time.perf_counter()
        model = builder._new_model(arch, preset.seed)
        losses = pretrain(model, tokens, train.steps, train.batch_size, preset.seq_len, train.lr, preset.seed,
                          desc=f"target {name}", checkpoint=model_dir.parent / f"{name}-{digest}.ckpt", unlikelihood=train.unlikelihood,
                          block_starts=builder._block_starts(tokens, train))
        train_s = time.perf_counter() - start
        model.save_pretrained(model_dir)
        builder._load_tokenizer().save_pretrained(model_dir)
        # The build's target stage adopts these weights when the preset's recipe is this one.
        (model_dir / LEVER_RECORD).write_text(json.dumps(
            {"key": digest, "inputs": inputs, "final_loss": sum(losses[-20:]) / len(losses[-20:])}, indent=2))
        report = evaluate_quality(model_dir, validation, list(preset.families), prompts_per_task, max_new_tokens,
                                  seed=preset.seed)
        print(f"[target] {name} ({settings}):\n{quality_table(report)}")
        results["variants"][name] = {"settings": settings, "train_s": round(train_s, 1),
                                     "final_train_loss": sum(losses[-20:]) / len(losses[-20:]), "quality": report}
        results_path.write_text(json.dumps(results, indent=2))
        (model_dir.parent / f"{name}-{digest}.ckpt").unlink(missing_ok=True)
    (out / "target.md").write_text(summary(results))
    print(summary(results))
    return results


def summary(results: dict) -> str:
    lines = [f"# Target levers ({results['preset']} corpus, {results['train_tokens']:,} train tokens)", "",
             f"Command: `{results['command']}`  ", f"Machine: {results['machine']}; torch {results['torch']}", "",
             f"Validation prompts: {results['prompts_per_task']} per task, "
             f"{results['max_new_tokens']} new tokens; T=1 samples seeded. Mean over tasks.", "",
             "| variant | settings | train min | held-out loss | distinct-4 greedy | repeat greedy | "
             "repeat T=1 | repeat ref | tasks within goal |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in results["variants"].items():
        tasks = v["quality"]["tasks"].values()
        mean = lambda f: sum(f(t) for t in tasks) / len(tasks)  # noqa: E731
        t, a = v["settings"]["train"], v["settings"]["arch"]
        lines.append(f"| {name} | {a['hidden']}x{a['layers']}, {t['steps']} steps x {t['batch_size']}, lr {t['lr']}, "
                     f"UL {t['unlikelihood']} | {v['train_s'] / 60:.1f} | {mean(lambda t: t['heldout_loss']):.2f} | "
                     f"{mean(lambda t: t['greedy']['distinct_4']):.2f} | {mean(lambda t: t['greedy']['repeat_share']):.2f} | "
                     f"{mean(lambda t: t['sampled_t1']['repeat_share']):.2f} | "
                     f"{mean(lambda t: t['reference']['repeat_share']):.2f} | "
                     f"{v['quality']['tasks_meeting_goal']} of {len(tasks)} |")
    lines += ["", "Per task, greedy (distinct-4 / repeat share; reference in brackets):", ""]
    for name, v in results["variants"].items():
        cells = [f"{task} {t['greedy']['distinct_4']:.2f}/{t['greedy']['repeat_share']:.2f} "
                 f"({t['reference']['distinct_4']:.2f}/{t['reference']['repeat_share']:.2f})"
                 for task, t in v["quality"]["tasks"].items()]
        lines.append(f"- {name}: " + ", ".join(cells))
    return "\n".join(lines) + "\n"
