"""What every benchmark shares: the zoo it runs on (built first when missing) and the record of
the command and machine that produced its figures. Knows nothing about what is measured."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

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
