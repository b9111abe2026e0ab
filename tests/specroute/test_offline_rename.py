"""`specroute tasks rename`: a task's new name reaches every file of the artifact, which still loads."""

import json

import pytest

from router.assign import ROUTING_FILE, RoutingTable, Routes
from router.detect import SAMPLES_FILE, TASKS_FILE, load_tasks
from specroute.cli import main
from specroute.offline.detect import detect_tasks, save_tasks
from specroute.offline.rename import rename_task

PROMPTS = ([f"def get_{w}(self):\n    \"\"\"Return the widget's {w}.\"\"\"" for w in ("width", "height", "colour", "font")]
           + [f"Translate to French: the {w} is on the table." for w in ("cat", "book", "cup", "key")])


@pytest.fixture
def artifact(tmp_path):
    detection = detect_tasks(PROMPTS, k_min=2, k_max=2)
    save_tasks(detection, tmp_path)
    names = detection.names
    cell = {"tau": 2.0, "tokens_per_s": 10.0, "speedup": 1.5}
    routes = Routes({n: "ngram" for n in names}, {n: ["ngram"] for n in names},
                    {n: {"plain": {**cell, "speedup": 1.0}, "ngram": cell} for n in names}, "ngram")
    RoutingTable({"greedy": routes, "sampled": routes}, {"ngram": {"kind": "ngram", "options": {}}},
                 detection.meta["version"], "target").save(tmp_path / ROUTING_FILE)
    return tmp_path, names


def test_rename_reaches_every_file_and_the_artifact_still_loads(artifact):
    path, names = artifact
    before = load_tasks(path)
    old = before.classifier.predict(PROMPTS[0]).task
    done = rename_task(path, old, "getters")
    after = load_tasks(path)
    assert after.names == [("getters" if n == old else n) for n in names] and after.classifier.tasks == after.names
    assert after.version == done.version != before.version
    assert after.meta["renamed"][-1]["from"] == old and after.meta["renamed"][-1]["previous_version"] == before.version
    assert set(after.samples()) == set(after.names) and len(after.samples()["getters"]) == 4
    assert old not in (path / SAMPLES_FILE).read_text()
    assert after.classifier.predict(PROMPTS[0]).task == "getters"
    table = RoutingTable.load(path)
    assert table.tasks_version == after.version and table.tasks == after.names
    for routes in table.modes.values():
        assert list(routes.eligible) == list(routes.matrix) == after.names
    assert set(done.files) == {"classifier.joblib", SAMPLES_FILE, ROUTING_FILE, TASKS_FILE}


def test_rename_refuses_an_unknown_task_a_taken_name_or_a_bad_name(artifact):
    path, names = artifact
    with pytest.raises(ValueError, match="no task 'nope'"):
        rename_task(path, "nope", "x")
    with pytest.raises(ValueError, match="already has"):
        rename_task(path, names[0], names[1])
    with pytest.raises(ValueError, match="task name"):
        rename_task(path, names[0], "two words")
    assert load_tasks(path).names == names


def test_the_cli_renames_and_reports_errors(artifact, capsys):
    path, names = artifact
    assert main(["tasks", "rename", "--tasks", str(path), names[1], "french"]) == 0
    assert "renamed task" in capsys.readouterr().out
    assert json.loads((path / TASKS_FILE).read_text())["tasks"][1]["name"] == "french"
    assert main(["tasks", "rename", "--tasks", str(path), "missing", "x"]) == 2
    assert "no task 'missing'" in capsys.readouterr().err
