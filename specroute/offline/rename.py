"""`specroute tasks rename`: gives a detected task another name throughout its artifact.

Task detection names tasks from their prompts' words (`specroute.offline.detect`); a person may
know a better name. A rename rewrites every file of the artifact directory that holds task
names: `tasks.json` (the task's name, a `renamed` record, a new version), `samples.jsonl`, the
classifier's label names in `classifier.joblib`, and, when the directory holds one, the routing
table `routing.json` (its tables, eligible lists and matrix, and the version it was made for). A
routing table kept elsewhere no longer matches the new version, so the router refuses it rather
than route to a name that is gone. The artifact's schema does not change: `router.detect.load_tasks`
reads it as before. Routing statistics already kept in Redis under the old name are not moved.

Each file is written beside itself and then moved into place, so a failure leaves every file
whole (though possibly some renamed and some not: run the rename again to finish).
This module knows nothing about clustering, measuring drafters or serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import joblib

from router.assign import ROUTING_FILE, RoutingTable
from router.detect import CLASSIFIER_FILE, SAMPLES_FILE, TASKS_FILE, load_tasks

TASK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


@dataclass(frozen=True)
class Renamed:
    """What a rename did: the new version and the files it rewrote."""

    old: str
    new: str
    version: str
    files: tuple[str, ...]


def rename_task(tasks_dir: Path, old: str, new: str) -> Renamed:
    """Renames task `old` to `new` in the artifact at `tasks_dir` (see the module docstring)."""
    tasks_dir = Path(tasks_dir)
    artifact = load_tasks(tasks_dir)
    if old not in artifact.names:
        raise ValueError(f"no task {old!r} in {tasks_dir}; its tasks: {', '.join(artifact.names)}")
    if not re.fullmatch(TASK_NAME, new):
        raise ValueError(f"task name {new!r}: use letters, digits, '_', '.' or '-' (at most 64, no leading "
                         "punctuation)")
    if new in artifact.names:
        raise ValueError(f"{tasks_dir} already has a task {new!r}")
    now = datetime.now(timezone.utc)
    version = f"{now:%Y%m%dT%H%M%SZ}-" + hashlib.sha256(f"{artifact.version}:{old}:{new}".encode()).hexdigest()[:8]
    meta = dict(artifact.meta)
    meta["tasks"] = [{**t, "name": new} if t["name"] == old else t for t in meta["tasks"]]
    meta["renamed"] = [*meta.get("renamed", []), {"from": old, "to": new, "previous_version": artifact.version,
                                                  "at": f"{now:%Y-%m-%dT%H:%M:%SZ}"}]
    meta["version"] = version
    written = []

    classifier = artifact.classifier
    classifier.tasks = [new if name == old else name for name in classifier.tasks]
    _replace(tasks_dir / CLASSIFIER_FILE, lambda tmp: joblib.dump(classifier, tmp))
    written.append(CLASSIFIER_FILE)

    samples = tasks_dir / SAMPLES_FILE
    if samples.is_file():
        rows = [json.loads(line) for line in samples.read_text().splitlines() if line]
        text = "".join(json.dumps({**r, "task": new} if r.get("task") == old else r) + "\n" for r in rows)
        _replace(samples, lambda tmp: tmp.write_text(text))
        written.append(SAMPLES_FILE)

    routing = tasks_dir / ROUTING_FILE
    if routing.is_file():
        table = RoutingTable.load(routing)
        if table.tasks_version == artifact.version:
            for routes in table.modes.values():
                for by_task in (routes.table, routes.eligible, routes.matrix):
                    _rename_key(by_task, old, new)
            table.tasks_version = version
            _replace(routing, table.save)
            written.append(ROUTING_FILE)

    # tasks.json last: until it is written, the artifact still reads as the old version.
    _replace(tasks_dir / TASKS_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    written.append(TASKS_FILE)
    return Renamed(old, new, version, tuple(written))


def _rename_key(mapping: dict, old: str, new: str) -> None:
    """Renames a key in place, keeping the order of the keys."""
    if old in mapping:
        items = [(new if k == old else k, v) for k, v in mapping.items()]
        mapping.clear()
        mapping.update(items)


def _replace(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".renaming")
    write(tmp)
    os.replace(tmp, path)
