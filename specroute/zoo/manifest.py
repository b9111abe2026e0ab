"""Reading a built zoo: its manifest, a summary table, and its drafters ready to use.

`specroute.zoo.build` writes `manifest.json`; everything that uses a zoo (the demo, `zoo eval`,
the benchmarks) reads it here. This module knows nothing about how a zoo is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from drafter_service.base import Drafter, create_drafter

MANIFEST = "manifest.json"


def load_manifest(zoo: Path) -> dict:
    path = Path(zoo) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{zoo} has no {MANIFEST}: build it with `specroute zoo build --out {zoo}`")
    return json.loads(path.read_text())


def load_drafters(zoo: Path, manifest: dict) -> dict[str, Drafter]:
    """Every drafter the manifest names, by name, with its kind's default settings."""
    drafters: dict[str, Drafter] = {}
    for entry in manifest["drafters"]:
        if entry["kind"] == "model":
            drafters[entry["name"]] = create_drafter("model", {"path": Path(zoo) / entry["path"]})
        else:
            drafters[entry["name"]] = create_drafter(entry["kind"], {})
    return drafters


def summary_table(manifest: dict) -> str:
    rows = [f"{'model':<16} {'kind':<6} {'family':<6} {'params':>10}  task"]
    rows.append(f"{'target':<16} {'target':<6} {manifest['target']['family']:<6} {manifest['target']['params']:>10,}  all")
    for d in manifest["drafters"]:
        rows.append(f"{d['name']:<16} {d['kind']:<6} {d['family'] or '-':<6} {d['params']:>10,}  {d['task'] or 'all'}")
    return "\n".join(rows)
