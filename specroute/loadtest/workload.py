"""What a load test sends: prompts with their task labels, and request i's prompt for a seed and a mix.

Prompts come from a built zoo's held-out test split or from a JSONL file; `PromptMix` picks
request `i`'s prompt from `(seed, i)` alone (a weighted draw of the task, then a uniform draw
within it), so the same seed, mix and prompts give the same requests whatever the scheduling.
This module knows nothing about sending, timing, statistics or reports.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import load_manifest

UNLABELLED = "unlabelled"  # the task of a prompt that has none


@dataclass(frozen=True)
class PromptItem:
    task: str
    prompt: str


def load_zoo_prompts(zoo: Path | str) -> list[PromptItem]:
    """A built zoo's held-out test prompts (its manifest's corpus test split), with their tasks."""
    zoo = Path(zoo)
    manifest = load_manifest(zoo)  # FileNotFoundError with a hint when it is not a built zoo
    try:
        test_file = zoo / manifest["corpus"]["files"]["test"]
    except (KeyError, TypeError):
        raise ValueError(f"{zoo}'s manifest names no corpus test split") from None
    if not test_file.is_file():
        raise ValueError(f"{zoo}'s test split {test_file} is missing")
    items = [PromptItem(ex.task, ex.prompt) for ex in load_split(test_file) if ex.prompt.strip()]
    if not items:
        raise ValueError(f"{zoo}'s test split {test_file} holds no prompts")
    return items


def load_prompts_file(path: Path | str) -> list[PromptItem]:
    """Prompts from JSONL: one object per non-empty line, {"prompt": TEXT, "task": NAME}; "task" is
    optional (default "unlabelled"). ValueError naming the line when one is malformed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg}); "
                             "expected {\"prompt\": ..., \"task\": ...}") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}:{number}: expected an object with a string \"prompt\"")
        task = record.get("task", UNLABELLED)
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"{path}:{number}: \"task\" must be a non-empty string")
        if record["prompt"].strip():
            items.append(PromptItem(task.strip(), record["prompt"]))
    if not items:
        raise ValueError(f"prompts file {path} holds no prompts")
    return items


def load_prompt_source(zoo: Path | str | None = None, prompts_file: Path | str | None = None) -> list[PromptItem]:
    """Exactly one of a zoo's test split and a JSONL prompts file."""
    if (zoo is None) == (prompts_file is None):
        raise ValueError("give exactly one of a zoo (--zoo DIR) and a prompts file (--prompts FILE)")
    return load_zoo_prompts(zoo) if zoo is not None else load_prompts_file(prompts_file)


def _as_items(prompts: Iterable[PromptItem | Mapping | str]) -> list[PromptItem]:
    items = []
    for p in prompts:
        if isinstance(p, PromptItem):
            items.append(p)
        elif isinstance(p, str):
            items.append(PromptItem(UNLABELLED, p))
        elif isinstance(p, Mapping) and isinstance(p.get("prompt"), str):
            items.append(PromptItem(str(p.get("task") or UNLABELLED), p["prompt"]))
        else:
            raise ValueError(f"not a prompt: {p!r}")
    return items


class PromptMix:
    """Picks request `i`'s prompt: a task by weight, then a prompt of it, both from `(seed, i)` alone."""

    def __init__(self, prompts: Iterable[PromptItem | Mapping | str], mix: Mapping[str, float] | None = None,
                 seed: int = 0):
        by_task: dict[str, list[PromptItem]] = {}
        for item in _as_items(prompts):
            by_task.setdefault(item.task, []).append(item)
        if not by_task:
            raise ValueError("no prompts to send")
        if mix:
            unknown = sorted(set(mix) - set(by_task))
            if unknown:
                raise ValueError(f"--mix names tasks the prompts do not have: {', '.join(unknown)}; "
                                 f"available: {', '.join(sorted(by_task))}")
            weights = {task: float(w) for task, w in mix.items()}
        else:
            weights = {task: 1.0 for task in sorted(by_task)}
        total = sum(weights.values())
        self.seed = seed
        self.tasks = list(weights)
        self.shares = {task: w / total for task, w in weights.items()}
        self.available = {task: len(by_task[task]) for task in self.tasks}
        self._by_task = {task: by_task[task] for task in self.tasks}
        self._cumulative = []
        running = 0.0
        for task in self.tasks:
            running += self.shares[task]
            self._cumulative.append(running)

    def pick(self, index: int) -> PromptItem:
        rng = random.Random(f"specroute-loadtest:{self.seed}:{index}")
        u = rng.random()
        for task, edge in zip(self.tasks, self._cumulative):
            if u < edge:
                break
        else:  # u beyond the last edge by rounding
            task = self.tasks[-1]
        return rng.choice(self._by_task[task])
