"""Training stop models: acceptance logs from the speculative loop, the decision models trained on
them, and the threshold chosen by measured speed.

1. `collect_acceptance`: the in-process speculative loop (`Engine`) over prompts, greedy and
   sampled, with the drafter's recorder on: every drafted node's features and verdict
   (`drafter_service.acceptance_log`).
2. `train_decision_model`: DynaSD's decision model (`drafter_service.stopping`) on one example per
   expanded node the verifier reached (its first child's row: the parent's features), labelled
   hard or soft; binary cross-entropy, Adam, a progress bar; a held-out split (by generation, so
   no round is on both sides) reports AUROC and calibration (expected calibration error and a
   reliability table over ten bins). Unweighted classes, so predictions stay probabilities: the
   survival rule multiplies them.
3. `sweep_thresholds`: tokens/s of the drafter with the stop model at each (rule, threshold), and
   without it (today's adaptive budget), on validation prompts, interleaved with plain decoding;
   the fastest setting is written into the stop model. Test prompts are never used here.

`run_log_acceptance` and `run_train_stop` are the CLI's `specroute log-acceptance` and
`specroute train-stop`. This module knows nothing about zoos' layouts or Ray.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from drafter_service.acceptance_log import AcceptanceLog, AcceptanceRecorder
from drafter_service.base import Drafter
from drafter_service.stopping import (RULES, DecisionModel, StopModel, StopModelFile,
                                      model_inputs, write_config)
from specroute.engine import Engine, load_drafter
from specroute.zoo.presets import StopTrainSpec
from specroute.measure import PLAIN, TEMPERATURES, compare_engines, fit_prompts, sampling_at
from verifier_service.target import TargetModel

THRESHOLDS = {"frontier": (0.2, 0.3, 0.4, 0.5, 0.6), "survival": (0.1, 0.2, 0.3, 0.4, 0.5)}
"""The thresholds a sweep measures per rule (DynaSD's code uses 0.4 with the frontier rule)."""
ADAPTIVE = "adaptive"
"""The sweep's name for the drafter without a stop model (today's adaptive budget)."""


def collect_acceptance(target: TargetModel, drafter: Drafter, prompts: list[list[int]], max_new_tokens: int,
                       temperatures: tuple[float, ...] = TEMPERATURES, seed: int = 0,
                       desc: str = "acceptance log") -> AcceptanceLog:
    """Runs the loop over every prompt at every temperature (prompt i seeded seed + i) and logs the
    drafter's nodes. Each generation's rows carry its index (`generation`), for held-out splits."""
    log = AcceptanceLog(meta={"drafter": drafter.name, "hidden_size": getattr(drafter, "hidden_size", None),
                              "temperatures": list(temperatures), "max_new_tokens": max_new_tokens})
    prompts, _ = fit_prompts(prompts, target.max_context, max_new_tokens)
    tagged = _Tagged(log)
    if not drafter.record_to(AcceptanceRecorder(tagged)):
        raise ValueError(f"drafter {drafter.name!r} drafts without a model: it has no features to log")
    engine = Engine(target, drafter)
    try:
        with tqdm(total=len(prompts) * len(temperatures), desc=desc) as bar:
            for t in temperatures:
                for i, ids in enumerate(prompts):
                    engine.generate(ids, max_new_tokens, sampling=sampling_at(t, seed + i))
                    tagged.generation += 1
                    bar.update()
    finally:
        drafter.record_to(None)
    return log


class _Tagged:
    """A sink that tags rows with the generation they came from."""

    def __init__(self, log: AcceptanceLog):
        self.log, self.generation = log, 0

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        n = len(rows["depth"])
        self.log.add({**rows, "generation": torch.full((n,), self.generation, dtype=torch.int32)})


def training_examples(columns: dict[str, torch.Tensor], variant: str, labels: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                                              torch.Tensor]:
    """(inputs, labels, generation) of the expanded nodes the verifier reached: first-child rows."""
    keep = (columns["reached"] == 1) & (columns["rank"] == 0)
    if variant == "mlp" and "hidden" not in columns:
        raise ValueError("the log has no hidden states: the mlp variant cannot be trained on it (use variant hard)")
    x = model_inputs(variant, columns.get("hidden"), columns["q"])[keep]
    y = (columns["group_accepted"] if labels == "soft" else columns["accepted"])[keep].float()
    generation = columns.get("generation", torch.zeros(len(keep), dtype=torch.int32))[keep]
    return x, y, generation


def calibration(predicted: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> dict:
    """Expected calibration error and the reliability table (mean prediction against the rate)."""
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (predicted >= lo) & ((predicted < hi) if b < bins - 1 else (predicted <= hi))
        n = int(inside.sum())
        if n == 0:
            continue
        mean, rate = float(predicted[inside].mean()), float(labels[inside].mean())
        table.append({"lo": lo, "hi": hi, "count": n, "mean_predicted": mean, "accepted_rate": rate})
        ece += n / len(predicted) * abs(mean - rate)
    return {"ece": ece, "bins": table}


def auroc(predicted: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve (None when the labels hold one class)."""
    from sklearn.metrics import roc_auc_score
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels.numpy(), predicted.numpy()))


def train_decision_model(log: AcceptanceLog, spec: StopTrainSpec, drafter_name: str = "") -> StopModel:
    """Trains the decision model; its `file.report` holds the held-out AUROC and calibration."""
    columns = log.columns()
    if not columns:
        raise ValueError("the acceptance log is empty")
    x, y, generation = training_examples(columns, spec.variant, spec.labels)
    if len(y) < 10:
        raise ValueError(f"the acceptance log has {len(y)} usable examples; log more prompts")
    hidden_size = int(columns["hidden"].shape[1]) if "hidden" in columns else int(log.meta.get("hidden_size") or 0)
    rng = random.Random(spec.seed)
    groups = sorted(set(generation.tolist()))
    rng.shuffle(groups)
    held = set(groups[: max(1, round(spec.heldout_fraction * len(groups)))]) if len(groups) > 1 else set()
    is_held = torch.tensor([g in held for g in generation.tolist()], dtype=torch.bool)
    if not held or bool(is_held.all()):  # too few generations to split by: split rows
        is_held = torch.rand(len(y), generator=torch.Generator().manual_seed(spec.seed)) < spec.heldout_fraction
    train_x, train_y, held_x, held_y = x[~is_held], y[~is_held], x[is_held], y[is_held]
    torch.manual_seed(spec.seed)
    net = DecisionModel(spec.variant, max(1, hidden_size))
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(spec.seed)
    losses = []
    for _ in tqdm(range(spec.epochs), desc=f"train stop model ({spec.variant}, {spec.labels} labels)"):
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), spec.batch_size):
            batch = order[start:start + spec.batch_size]
            loss = loss_fn(net(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    net.eval()
    predicted = net.predict(held_x) if len(held_y) else torch.empty(0)
    report = {"examples": {"train": len(train_y), "heldout": len(held_y)},
              "accepted_rate": {"train": float(train_y.mean()) if len(train_y) else None,
                                "heldout": float(held_y.mean()) if len(held_y) else None},
              "final_train_loss": statistics.fmean(losses[-20:]) if losses else None,
              "heldout_auroc": auroc(predicted, held_y) if len(held_y) else None,
              "heldout_calibration": calibration(predicted, held_y) if len(held_y) else None}
    file = StopModelFile(variant=spec.variant, labels=spec.labels, drafter_hidden_size=max(1, hidden_size),
                         drafter=drafter_name or str(log.meta.get("drafter", "")), report={"training": report})
    return StopModel(net, file)


def sweep_thresholds(target: TargetModel, make_drafter: Callable[[dict], Drafter], stop_dir: Path,
                     prompts: list[list[int]], max_new_tokens: int, temperatures: tuple[float, ...] = TEMPERATURES,
                     rules: tuple[str, ...] = RULES, thresholds: dict[str, tuple[float, ...]] | None = None) -> dict:
    """Speedup over plain of the drafter without a stop model (ADAPTIVE) and with it at every
    (rule, threshold), per temperature, on `prompts` (validation prompts), interleaved per prompt.
    make_drafter(options) loads the drafter with extra tree options (the stop model's).
    Returns {"settings": {name: {"rule", "threshold", "speedup": {t: x}, "mean_speedup"}}, "best": name,
    "best_per_rule": {rule: name}, "faster_than_adaptive": bool}."""
    thresholds = thresholds or THRESHOLDS
    settings = {ADAPTIVE: {"rule": None, "threshold": None}}
    for rule in rules:
        for t in thresholds[rule]:
            settings[f"{rule}@{t:g}"] = {"rule": rule, "threshold": t}
    engines = {PLAIN: Engine(target)}
    for name, s in settings.items():
        options = {}
        if s["rule"] is not None:
            options = {"stop_model": str(stop_dir), "stop_rule": s["rule"], "stop_threshold": s["threshold"]}
        engines[name] = Engine(target, make_drafter(options))
    speed: dict[str, dict[str, float]] = {name: {} for name in settings}
    with tqdm(total=len(prompts) * len(engines) * len(temperatures), desc="stop threshold sweep") as bar:
        for temperature in temperatures:
            cells, mismatches = compare_engines(engines, prompts, max_new_tokens, bar=bar,
                                                sampling=sampling_at(temperature, 0))
            if mismatches:
                raise AssertionError(f"greedy output differs from plain decoding with {mismatches}")
            for name in settings:
                speed[name][f"{temperature:g}"] = cells[name]["speedup"]
    for name, s in settings.items():
        s["speedup"] = speed[name]
        s["mean_speedup"] = statistics.fmean(speed[name].values())
    learned = [n for n in settings if n != ADAPTIVE]
    best = max(learned, key=lambda n: settings[n]["mean_speedup"])
    best_per_rule = {rule: max((n for n in learned if settings[n]["rule"] == rule),
                               key=lambda n: settings[n]["mean_speedup"]) for rule in rules}
    return {"settings": settings, "best": best, "best_per_rule": best_per_rule,
            "faster_than_adaptive": settings[best]["mean_speedup"] > settings[ADAPTIVE]["mean_speedup"],
            "validation_prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "temperatures": [float(t) for t in temperatures]}


def choose_threshold(stop_dir: Path, sweep: dict) -> None:
    """Writes the sweep's fastest rule and threshold, and the sweep, into the stop model's config."""
    best = sweep["settings"][sweep["best"]]
    write_config(stop_dir, rule=best["rule"], threshold=best["threshold"], report={"sweep": sweep})


def encode_prompts(target: TargetModel, prompts: list[str], max_prompt_tokens: int = 192) -> list[list[int]]:
    return [target.tokenizer.encode(p)[-max_prompt_tokens:] for p in prompts]


def run_log_acceptance(target_dir: Path, drafter: str, prompts: list[str], out: Path, max_new_tokens: int = 64,
                       temperatures: tuple[float, ...] = TEMPERATURES, device: str = "auto") -> AcceptanceLog:
    target = TargetModel.from_dir(target_dir, device=device)
    loaded = load_drafter(drafter, device=device)
    if loaded is None:
        raise ValueError("log-acceptance needs a drafter")
    log = collect_acceptance(target, loaded, encode_prompts(target, prompts), max_new_tokens, temperatures)
    log.save(out)
    return log


def run_train_stop(logs: list[Path], out: Path, spec: StopTrainSpec, target_dir: Path | None = None,
                   drafter: str | None = None, validation: list[str] | None = None, max_new_tokens: int = 64,
                   temperatures: tuple[float, ...] = TEMPERATURES, device: str = "auto") -> StopModelFile:
    """Trains on the logs and writes the stop model to `out`; with a target, a drafter and
    validation prompts, also sweeps the rule and threshold and keeps the fastest."""
    merged = AcceptanceLog()
    for path in logs:
        part = AcceptanceLog.load(path)
        merged.meta = merged.meta or part.meta
        merged.parts += part.parts
    model = train_decision_model(merged, spec)
    model.save(out)
    if validation and target_dir is not None and drafter is not None:
        target = TargetModel.from_dir(target_dir, device=device)
        sweep = sweep_thresholds(target, lambda options: load_drafter(drafter, device=device, tree=options), out,
                                 encode_prompts(target, validation), max_new_tokens, temperatures)
        choose_threshold(out, sweep)
    return StopModelFile.model_validate_json((out / "stop_model.json").read_text())
