"""What every benchmark shares: the zoo it runs on (built first when missing, and checked to
sample with every drafter on every task), the record of the command and machine that produced
its figures, and how results are written. Knows nothing about what is measured."""

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


def load_zoo(zoo: Path, preset: str, check_sampling: bool = True) -> tuple[dict, TargetModel]:
    """(manifest, target) of the zoo, building `preset` into it first if it has no manifest; then
    `check_sampled_generation` unless told not to."""
    if not (zoo / "manifest.json").is_file():
        print(f"[bench] no zoo at {zoo}: building preset {preset!r} first")
        build_zoo(preset, zoo)
    torch.set_num_threads(2)
    manifest = load_manifest(zoo)
    target = TargetModel.from_dir(zoo / manifest["target"]["path"])
    if check_sampling:
        check_sampled_generation(zoo, manifest, target)
    return manifest, target


def check_sampled_generation(zoo: Path, manifest: dict, target: TargetModel, prompts_per_task: int = 3,
                             max_new_tokens: int = 32) -> int:
    """Seeded T=1 generation with every drafter of the zoo from the first test prompts of every
    task: a drafter that fails to sample fails the benchmark before it measures anything (greedy
    outputs are checked against plain decoding where each benchmark measures). Returns the count."""
    from specroute.engine import Engine
    from specroute.measure import fit_prompts
    from specroute.zoo.corpus import load_split
    from specroute.zoo.manifest import load_drafters
    from core.sampling import SamplingParams
    tests = load_split(zoo / manifest["corpus"]["files"]["test"])
    drafters = load_drafters(zoo, manifest)
    done = 0
    for task in manifest["corpus"]["families"]:
        ids = [target.tokenizer.encode(ex.prompt) for ex in tests if ex.task == task]
        prompts = fit_prompts(ids, target.max_context, max_new_tokens)[0][:prompts_per_task]
        for name, drafter in drafters.items():
            for seed, prompt in enumerate(prompts):
                try:
                    Engine(target, drafter).generate(prompt, max_new_tokens,
                                                     sampling=SamplingParams(temperature=1.0, seed=seed))
                except Exception as err:
                    raise RuntimeError(f"sampled generation failed: drafter {name!r}, task {task!r}, test prompt "
                                       f"{seed}: {type(err).__name__}: {err}") from err
                done += 1
    print(f"[bench] sampled generation checked: {done} generations, every drafter on every task")
    return done


def provenance(bench: str, zoo: Path) -> dict:
    """The command (as typed, when run from the CLI), the machine, Python and torch."""
    typed = Path(sys.argv[0]).parent.name == "bench" and sys.argv[1:2] == [bench]  # python -m bench NAME ...
    command = "python -m bench " + " ".join(sys.argv[1:]) if typed else f"python -m bench {bench} --zoo {zoo}"
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


def temperature_keys(temperatures) -> list[str]:
    """The results' keys of a benchmark's temperatures (`temperature_key`); refuses none, or one twice."""
    from specroute.measure import temperature_key
    if not temperatures:
        raise ValueError("temperatures: give at least one")
    keys = [temperature_key(t) for t in temperatures]
    if len(set(keys)) != len(keys):
        raise ValueError(f"temperatures: each at most once (got {list(temperatures)})")
    return keys


def greedy_figures(by_temperature: dict[str, dict]) -> dict:
    """The greedy figures of a benchmark's per-temperature results (the first temperature's where
    greedy was not measured): what its top-level keys report."""
    from specroute.measure import temperature_key
    return by_temperature.get(temperature_key(0.0), next(iter(by_temperature.values())))


def side_by_side(row_label: str, rows: dict[str, list[dict]], columns: dict[str, Callable[[dict], str]],
                 names: list[str]) -> list[str]:
    """A markdown table with one row per key of `rows` (its value: that row's record at each of
    `names`, e.g. each temperature), and for each column one cell per name, side by side."""
    lines = [f"| {row_label} | " + " | ".join(f"{c} {n}" for c in columns for n in names) + " |",
             "|---|" + "---|" * (len(columns) * len(names))]
    for label, records in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell(rec) for cell in columns.values() for rec in records) + " |")
    return lines
