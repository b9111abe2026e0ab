"""The task artifact as the router reads it: task names, the version and the trained classifier.

Task detection (`specroute.offline.detect`) writes a versioned artifact directory: `tasks.json`
(schema, version, featuriser, each task's name, size and top terms), `classifier.joblib` (a
`router.classifier.TaskClassifier`) and `samples.jsonl` (a few prompts per task, for drafter
assignment). `load_tasks` reads it back and refuses another schema.
This module knows nothing about clustering, training, drafters, Redis or serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib

from router.classifier import TaskClassifier

SCHEMA = 1
TASKS_FILE, CLASSIFIER_FILE, SAMPLES_FILE = "tasks.json", "classifier.joblib", "samples.jsonl"


@dataclass
class TaskArtifact:
    meta: dict
    classifier: TaskClassifier
    path: Path

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.meta["tasks"]]

    @property
    def version(self) -> str:
        return self.meta["version"]

    def samples(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {name: [] for name in self.names}
        for line in (self.path / SAMPLES_FILE).read_text().splitlines():
            if line:
                row = json.loads(line)
                out.setdefault(row["task"], []).append(row["prompt"])
        return out


def load_tasks(path: Path) -> TaskArtifact:
    path = Path(path)
    if not (path / TASKS_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {TASKS_FILE}: run `specroute tasks detect --out {path}` first")
    meta = json.loads((path / TASKS_FILE).read_text())
    if meta.get("schema") != SCHEMA:
        raise ValueError(f"{path} holds task artifact schema {meta.get('schema')}, this specroute reads {SCHEMA}")
    return TaskArtifact(meta, joblib.load(path / CLASSIFIER_FILE), path)
