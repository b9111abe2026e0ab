"""The zoo build's stopping stages: a stop model per model drafter, adopted where it measures faster.

One stage per drafter (`stop-NAME`, after the steering stages and the costs), for the preset's
model drafters (generic and specialists; a hybrid's model part), not for model-free ones:
1. the acceptance log of the drafter on its task's training prompts (a generic drafter: every
   task's), greedy and sampled, saved as `.stop/NAME.safetensors`;
2. the decision model trained on it (`StoppingZooSpec.train`), saved as `stop-NAME/`;
3. its rule and threshold swept on validation prompts against the adaptive budget
   (`specroute.zoo.stop.sweep_thresholds`); the fastest is written into the stop model;
4. for the drafters in `hard_for`, the hard variant too (`stop-NAME-hard/`), for the benchmark.
The drafter's manifest entry names its stop model (`stop_model`) when the sweep's fastest setting
beat the adaptive budget, so serving, routing and the benchmarks load it with the drafter
(`specroute.zoo.manifest.drafter_options`); the manifest's `stop_models` lists every stage's
record, adopted or not.

This module knows what each stage does and which files it writes; `specroute.zoo.build` knows the
order of stages and their keys.
"""

from __future__ import annotations

from pathlib import Path

from drafter_service.base import create_drafter
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import drafter_options
from specroute.zoo.presets import StoppingZooSpec
from specroute.zoo.stop import ADAPTIVE, choose_threshold, collect_acceptance, encode_prompts, sweep_thresholds, \
    train_decision_model
from verifier_service.target import TargetModel

LOG_DIR = ".stop"


def stop_name(drafter: str, variant: str = "mlp") -> str:
    """The directory of a drafter's stop model."""
    return f"stop-{drafter}" if variant == "mlp" else f"stop-{drafter}-{variant}"


def stop_stage(drafter: str) -> str:
    return f"stop-{drafter}"


def stopping_plan(spec: StoppingZooSpec | None, drafter_names: list[str]) -> list[str]:
    """The stopping stages of a build (a drafter sized to a model-free kind drops its stage)."""
    if spec is None:
        return []
    return [stop_stage(n) for n in (spec.drafters or drafter_names)]


def _prompts(zoo: Path, corpus: dict, split: str, task: str | None, per_task: int) -> list[str]:
    examples = load_split(zoo / corpus["files"][split])
    tasks = [task] if task else corpus["families"]
    return [p for t in tasks for p in [ex.prompt for ex in examples if ex.task == t][:per_task]]


def stop_stage_run(zoo: Path, entry: dict, corpus: dict, spec: StoppingZooSpec) -> dict:
    """A `stop-NAME` stage for the drafter of manifest entry `entry`."""
    zoo = Path(zoo)
    target = TargetModel.from_dir(zoo / "target")
    options = drafter_options(zoo, entry)
    drafter = create_drafter(entry["kind"], options)
    task = entry.get("task")
    train = encode_prompts(target, _prompts(zoo, corpus, "train", task, spec.log_prompts_per_task),
                           spec.max_prompt_tokens)
    validation = encode_prompts(target, _prompts(zoo, corpus, "validation", task,
                                                 spec.validation_prompts_per_task * (2 if task else 1)),
                                spec.max_prompt_tokens)
    log = collect_acceptance(target, drafter, train, spec.max_new_tokens, desc=f"acceptance log {entry['name']}")
    (zoo / LOG_DIR).mkdir(parents=True, exist_ok=True)
    log.save(zoo / LOG_DIR / f"{entry['name']}.safetensors")
    record = {"drafter": entry["name"], "logged_nodes": len(log), "log": f"{LOG_DIR}/{entry['name']}.safetensors"}
    variants = ["mlp", *(["hard"] if entry["name"] in spec.hard_for else [])]
    for variant in variants:
        path = stop_name(entry["name"], variant)
        model = train_decision_model(log, spec.train.model_copy(update={"variant": variant}), entry["name"])
        model.save(zoo / path)
        sweep = sweep_thresholds(target, lambda extra: create_drafter(entry["kind"], {**options, **extra}), zoo / path,
                                 validation, spec.max_new_tokens, thresholds=spec.thresholds)
        choose_threshold(zoo / path, sweep)
        best = sweep["settings"][sweep["best"]]
        training = model.file.report["training"]
        record[variant] = {
            "path": path, "labels": spec.train.labels, "rule": best["rule"], "threshold": best["threshold"],
            "heldout_auroc": training["heldout_auroc"],
            "heldout_ece": (training["heldout_calibration"] or {}).get("ece"),
            "validation_speedup": best["mean_speedup"],
            "adaptive_validation_speedup": sweep["settings"][ADAPTIVE]["mean_speedup"],
            "best_per_rule": {rule: sweep["settings"][name] for rule, name in sweep["best_per_rule"].items()},
            "faster_than_adaptive": sweep["faster_than_adaptive"]}
    record["adopted"] = record["mlp"]["faster_than_adaptive"]
    record["path"] = record["mlp"]["path"]
    return record
