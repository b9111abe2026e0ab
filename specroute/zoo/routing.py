"""A built zoo's task artifact and routing table, made once: what serving a zoo needs.

`ensure_routing(zoo)` runs task detection on a seeded sample of the zoo's training prompts
(`router.detect`), saves the artifact in `zoo/tasks`, and measures every zoo drafter on each
detected task's validation prompts (`router.assign`) into `zoo/tasks/routing.json`. If both
exist and match the zoo, it does nothing. The router benchmark makes the same two artifacts with
more measurements; this is the quick version for `specroute serve --zoo` and the demo.

This module knows nothing about serving.
"""

from __future__ import annotations

import random
from pathlib import Path

from router.assign import ROUTING_FILE, RoutingTable, assign_drafters, zoo_drafters
from router.detect import load_tasks, save_tasks, detect_tasks
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import load_manifest


def ensure_routing(zoo: Path, detect_prompts: int = 2000, prompts_per_task: int = 3, max_new_tokens: int = 32,
                   seed: int = 0) -> Path:
    """zoo/tasks with routing.json, made if missing or stale (made for another task artifact, or
    for drafters the zoo no longer has, as after a rebuild); returns the tasks directory."""
    zoo = Path(zoo)
    tasks_dir = zoo / "tasks"
    target_dir, drafters, generic = zoo_drafters(zoo)
    try:
        tasks, table = load_tasks(tasks_dir), RoutingTable.load(tasks_dir / ROUTING_FILE)
        if table.tasks_version == tasks.version and set(table.drafters) == {d.name for d in drafters}:
            return tasks_dir
    except (FileNotFoundError, ValueError):
        pass
    files = load_manifest(zoo)["corpus"]["files"]
    train = load_split(zoo / files["train"])
    sample = random.Random(seed).sample(train, min(detect_prompts, len(train)))
    save_tasks(detect_tasks([ex.prompt for ex in sample], seed=seed), tasks_dir)
    tasks = load_tasks(tasks_dir)
    validation = load_split(zoo / files["validation"])
    validation = random.Random(seed).sample(validation, len(validation))
    samples: dict[str, list[str]] = {name: [] for name in tasks.names}
    for ex, p in zip(validation, tasks.classifier.predict_many([ex.prompt for ex in validation])):
        samples[p.task].append(ex.prompt)
    table = assign_drafters(samples, target_dir, drafters, generic, tasks.version, prompts_per_task, max_new_tokens,
                            device="cpu")
    table.save(tasks_dir / ROUTING_FILE)
    return tasks_dir
