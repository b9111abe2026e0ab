"""Reading a built zoo: its manifest, a summary table, and its drafters ready to use.

`specroute.zoo.build` writes `manifest.json`; everything that uses a zoo (the demo, `zoo eval`,
the benchmarks) reads it here. This module knows nothing about how a zoo is built.

`drafters` lists the model, hybrid and ngram drafters; a zoo with feature drafters (EAGLE-style, kind
`feature`) lists them apart in `feature_drafters` (the generic one, its variants, a specialist per task
with its trial against the task's specialist and whether it is `routed`), and `task_drafters` names per
task its specialist, its feature specialist and the one routed. `routed_drafters` is what routing
measures and serving deploys: every drafter plus the feature specialists that measured faster.
"""

from __future__ import annotations

import json
from pathlib import Path

from drafter_service.base import Drafter, create_drafter, drafter_config_model, drafter_kinds

MANIFEST = "manifest.json"
FEATURE = "feature"  # the kind of an EAGLE-style drafter (drafter_service.feature_model)


def load_manifest(zoo: Path) -> dict:
    path = Path(zoo) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{zoo} has no {MANIFEST}: build it with `specroute zoo build --out {zoo}`")
    return json.loads(path.read_text())


def drafter_options(zoo: Path, entry: dict) -> dict:
    """Settings for `create_drafter(entry["kind"], ...)`: where a drafter's weights (`path`),
    datastore and adopted stop model (`stop_model`) are, for the entries that have them."""
    return {key: Path(zoo) / entry[key] for key in ("path", "datastore", "stop_model") if entry.get(key)}


def has_weights(kind: str | None) -> bool:
    """Whether a drafter kind loads trained weights from a directory (its Config has a `path`), by the registry."""
    return kind in drafter_kinds() and "path" in drafter_config_model(kind).model_fields


def generic_drafter(manifest: dict) -> str | None:
    """The name of the generic drafter: the first model drafter with weights specialised for no task."""
    return next((d["name"] for d in manifest["drafters"]
                 if has_weights(d["kind"]) and d["kind"] != FEATURE and not d["task"]), None)


def feature_drafters(manifest: dict, task: str | None = None, generic: bool = False) -> list[dict]:
    """The manifest's feature drafter entries (none for a zoo without them); with `task`, the task's
    specialist; with `generic`, the generic ones (the plain one first, then its variants)."""
    entries = manifest.get("feature_drafters", [])
    if task is not None:
        return [e for e in entries if e["task"] == task]
    return [e for e in entries if not e["task"]] if generic else list(entries)


def routed_drafters(manifest: dict) -> list[dict]:
    """The entries routing measures and serving deploys: every drafter, then each feature specialist
    that measured faster than its task's specialist, as the kind it measured fastest as (`routed_kind`:
    feature, or hybrid with the task's datastore grafted on: `routed_datastore`)."""
    return [*manifest["drafters"], *({**e, "kind": e.get("routed_kind", e["kind"]),
                                      **({"datastore": e["routed_datastore"]} if "routed_datastore" in e else {})}
                                     for e in feature_drafters(manifest) if e.get("routed"))]


def load_drafters(zoo: Path, manifest: dict, features: bool = True) -> dict[str, Drafter]:
    """Every drafter the manifest names (with `features`, the feature drafters too), by name, with its
    kind's default settings."""
    entries = [*manifest["drafters"], *(feature_drafters(manifest) if features else [])]
    return {e["name"]: create_drafter(e["kind"], drafter_options(zoo, e)) for e in entries}


def summary_table(manifest: dict) -> str:
    """One row per model: kind, family, shape, parameters, task, step cost against the target's,
    held-out divergence before -> after distillation (for a feature drafter, its held-out agreement
    with the target per draft step); then how each sized drafter was chosen, and each feature trial."""
    rows = [f"{'model':<24} {'kind':<6} {'family':<6} {'shape':>7} {'params':>10}  {'task':<12} {'step cost':>9}  divergence"]
    t = manifest["target"]
    rows.append(f"{'target':<24} {'target':<6} {t['family']:<6} {_shape(t.get('arch')):>7} {t['params']:>10,}  {'all':<12}")
    for d in manifest["drafters"]:
        cost = f"{d['step_cost_ratio']:.3f}" if "step_cost_ratio" in d else "-"
        div = (f"{d['divergence']} {d['heldout_divergence_before']:.3f} -> {d['heldout_divergence_after']:.3f}"
               if "heldout_divergence_after" in d else "-")
        rows.append(f"{d['name']:<24} {d['kind']:<6} {d['family'] or '-':<6} {_shape(d.get('arch')):>7} "
                    f"{d['params']:>10,}  {d['task'] or 'all':<12} {cost:>9}  {div}")
    for d in manifest["drafters"]:
        if "sizing" in d:
            rows.append(f"sizing {d['task']}: " + ", ".join(_trial(t) for t in d["sizing"]))
    for d in feature_drafters(manifest):
        cost = f"{d['step_cost_ratio']:.3f}" if "step_cost_ratio" in d else "-"
        agreement = " ".join(f"{a:.2f}" for a in d["heldout"]["agreement"])
        rows.append(f"{d['name']:<24} {d['kind']:<6} {d['family'] or '-':<6} {'-':>7} {d['params']:>10,}  "
                    f"{d['task'] or 'all':<12} {cost:>9}  agreement per step {agreement}")
    for d in manifest["drafters"]:
        if "lookup" in d:
            rows.append(f"lookup {d['task']}: " + ", ".join(
                f"{how} {t['speedup']:.2f}x tau {t['tau']:.2f}" + (" <- chosen" if how == d["kind"] else "")
                for how, t in d["lookup"].items()))
    for d in feature_drafters(manifest):
        if "trial" in d:
            rows.append(f"feature trial {d['task']}: " + ", ".join(
                f"{name} {t['speedup']:.2f}x tau {t['tau']:.2f}"
                + (" <- routed" if (name == d["name"]) == d["routed"] else "")
                for name, t in d["trial"]["trials"].items()))
    return "\n".join(rows)


def _shape(arch: dict | None) -> str:
    return f"{arch['hidden']}x{arch['layers']}" if arch else "-"


def _trial(trial: dict) -> str:
    if "excluded" in trial:
        return f"{trial['candidate']} excluded ({trial['excluded']})"
    chosen = " <- chosen" if trial.get("chosen") else ""
    return f"{trial['candidate']} {trial['speedup']:.2f}x tau {trial['tau']:.2f}{chosen}"
