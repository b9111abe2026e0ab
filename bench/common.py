"""What every benchmark shares: the zoo it runs on (built first when missing), the record of the
command and machine that produced its figures, and how results are written. Knows nothing about
what is measured."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import torch

from specroute.zoo.build import build_zoo
from specroute.zoo.manifest import load_manifest
from verifier_service.target import TargetModel


def load_zoo(zoo: Path, preset: str) -> tuple[dict, TargetModel]:
    """(manifest, target) of the zoo, building `preset` into it first if it has no manifest."""
    if not (zoo / "manifest.json").is_file():
        print(f"[bench] no zoo at {zoo}: building preset {preset!r} first")
        build_zoo(preset, zoo)
    torch.set_num_threads(2)
    manifest = load_manifest(zoo)
    return manifest, TargetModel.from_dir(zoo / manifest["target"]["path"])


def provenance(bench: str, zoo: Path) -> dict:
    """The command (as typed, when run from the CLI), the machine, Python and torch."""
    command = ("specroute " + " ".join(sys.argv[1:]) if sys.argv[1:3] == ["bench", bench]
               else f"specroute bench {bench} --zoo {zoo}")
    return {"command": command,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "python": platform.python_version(), "torch": torch.__version__}


def provenance_lines(p: dict) -> list[str]:
    """The markdown lines naming the command and the machine of a `provenance` record."""
    return [f"Command: `{p.get('command', '')}`  ",
            f"Machine: {p.get('machine', '')}; Python {p.get('python', '')}, torch {p.get('torch', '')}  "]


def write_results(out: Path, stem: str, result: dict, markdown: str,
                  plot: Callable[[dict, Path], None] | None = None) -> None:
    """Writes STEM.json and STEM.md (and STEM.png through `plot`) under `out`; prints the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(markdown)
    if plot is not None:
        plot(result, out / f"{stem}.png")
    print(markdown)
