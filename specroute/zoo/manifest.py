"""Reading a built zoo: its manifest, a summary table, and its drafters ready to use.

`specroute.zoo.build` writes `manifest.json`; everything that uses a zoo (the demo, `zoo eval`,
the benchmarks) reads it here. This module knows nothing about how a zoo is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from drafter_service.base import Drafter, create_drafter, drafter_config_model, drafter_kinds

MANIFEST = "manifest.json"


def load_manifest(zoo: Path) -> dict:
    path = Path(zoo) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{zoo} has no {MANIFEST}: build it with `specroute zoo build --out {zoo}`")
    return json.loads(path.read_text())


def drafter_options(zoo: Path, entry: dict) -> dict:
    """Settings for `create_drafter(entry["kind"], ...)`: where a drafter's weights (`path`) and
    datastore are, for the entries that have them."""
    return {key: Path(zoo) / entry[key] for key in ("path", "datastore") if entry.get(key)}


def has_weights(kind: str | None) -> bool:
    """Whether a drafter kind loads trained weights from a directory (its Config has a `path`), by the registry."""
    return kind in drafter_kinds() and "path" in drafter_config_model(kind).model_fields


def generic_drafter(manifest: dict) -> str | None:
    """The name of the generic drafter: the first drafter with weights specialised for no task."""
    return next((d["name"] for d in manifest["drafters"] if has_weights(d["kind"]) and not d["task"]), None)


def load_drafters(zoo: Path, manifest: dict) -> dict[str, Drafter]:
    """Every drafter the manifest names, by name, with its kind's default settings."""
    return {e["name"]: create_drafter(e["kind"], drafter_options(zoo, e)) for e in manifest["drafters"]}


def summary_table(manifest: dict) -> str:
    """One row per model: kind, family, shape, parameters, task, step cost against the target's,
    held-out divergence before -> after distillation; then how each sized drafter was chosen."""
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
    for d in manifest["drafters"]:
        if "lookup" in d:
            rows.append(f"lookup {d['task']}: " + ", ".join(
                f"{how} {t['speedup']:.2f}x tau {t['tau']:.2f}" + (" <- chosen" if how == d["kind"] else "")
                for how, t in d["lookup"].items()))
    return "\n".join(rows)


def _shape(arch: dict | None) -> str:
    return f"{arch['hidden']}x{arch['layers']}" if arch else "-"


def _trial(trial: dict) -> str:
    if "excluded" in trial:
        return f"{trial['candidate']} excluded ({trial['excluded']})"
    chosen = " <- chosen" if trial.get("chosen") else ""
    return f"{trial['candidate']} {trial['speedup']:.2f}x tau {trial['tau']:.2f}{chosen}"
