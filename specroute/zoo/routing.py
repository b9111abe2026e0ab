"""A built zoo's task artifact and routing table, made once: what serving a zoo needs.

`ensure_routing(zoo)` runs task detection on a seeded sample of the zoo's training prompts
(`specroute.offline.detect`), saves the artifact in `zoo/tasks`, and measures every zoo drafter on each
detected task's validation prompts (`specroute.offline.assign`) into `zoo/tasks/routing.json`: every
model, hybrid and ngram drafter, and the feature specialists the build routed (`manifest.routed_drafters`:
those that measured faster than their task's specialist). If both
exist and match the zoo, it does nothing; an artifact that exists is kept and only the table is
measured again. `assign_zoo` is that measurement, which the router benchmark also uses (with more
prompts, after its own detection); this is the quick version for `specroute serve --zoo` and the demo.

This module knows nothing about serving.
"""

from __future__ import annotations

import random
from pathlib import Path

from router.assign import PLAIN_DRAFTER, ROUTING_FILE, RoutingTable
from router.detect import load_tasks
from specroute.measure import PLAIN
from specroute.offline.assign import assign_drafters, zoo_drafters
from specroute.offline.detect import detect_tasks, save_tasks
from specroute.zoo.corpus import load_split
from specroute.zoo.manifest import load_manifest


def ensure_routing(zoo: Path, detect_prompts: int = 2000, prompts_per_task: int = 3, max_new_tokens: int = 32,
                   seed: int = 0) -> Path:
    """zoo/tasks with routing.json, made if missing or stale; returns the tasks directory. A task
    artifact that exists is kept; a routing table made for another artifact, or for drafters the
    zoo no longer has or has of another kind (as after a rebuild), is measured again."""
    zoo = Path(zoo)
    tasks_dir = zoo / "tasks"
    try:
        tasks = load_tasks(tasks_dir)
    except (FileNotFoundError, ValueError):
        train = load_split(zoo / load_manifest(zoo)["corpus"]["files"]["train"])
        sample = random.Random(seed).sample(train, min(detect_prompts, len(train)))
        save_tasks(detect_tasks([ex.prompt for ex in sample], seed=seed), tasks_dir)
        tasks = load_tasks(tasks_dir)
    else:
        try:
            table = RoutingTable.load(tasks_dir / ROUTING_FILE)
            kinds = {name: d["kind"] for name, d in table.drafters.items()}
            zoo_kinds = {d.name: d.kind for d in zoo_drafters(zoo)[1]}
            if table.tasks_version == tasks.version and kinds == {PLAIN: PLAIN_DRAFTER["kind"], **zoo_kinds}:
                return tasks_dir
        except (FileNotFoundError, ValueError):
            pass
    assign_zoo(zoo, tasks, prompts_per_task, max_new_tokens, seed)
    return tasks_dir


def assign_zoo(zoo: Path, tasks, prompts_per_task: int, max_new_tokens: int, seed: int = 0) -> RoutingTable:
    """Measures every zoo drafter on the zoo's validation prompts, grouped by the task `tasks`'
    classifier gives them, and saves the table as zoo/tasks/routing.json beside the artifact.
    The prompts are shuffled (seeded) first: the split is ordered by family, and a task's first
    few prompts must not all be one family's misclassified ones."""
    zoo = Path(zoo)
    validation = load_split(zoo / load_manifest(zoo)["corpus"]["files"]["validation"])
    validation = random.Random(seed).sample(validation, len(validation))
    samples: dict[str, list[str]] = {name: [] for name in tasks.names}
    for ex, p in zip(validation, tasks.classifier.predict_many([ex.prompt for ex in validation])):
        samples[p.task].append(ex.prompt)
    target_dir, drafters, generic = zoo_drafters(zoo)
    table = assign_drafters(samples, target_dir, drafters, generic, tasks.version, prompts_per_task, max_new_tokens,
                            device="cpu")
    table.save(zoo / "tasks" / ROUTING_FILE)
    return table

