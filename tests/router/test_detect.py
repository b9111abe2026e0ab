"""Task detection on the zoo's six families: the number of tasks is chosen by silhouette, the
tasks match the families on held-out prompts, and the artifact is versioned and reloads."""

import json

import pytest
from sklearn.metrics import adjusted_rand_score

from router.detect import SCHEMA, TASKS_FILE, load_tasks
from specroute.offline.detect import detect_tasks

# Measured on the tiny corpus (seed 0, 400 examples per family): see test_detection_recovers_the_families.
ARI_BOUND = 0.9


def test_detection_recovers_the_families_on_heldout_prompts(detection, corpus, tasks_dir):
    assert len(detection.tasks) == 6
    gaps = {int(k): v for k, v in detection.meta["merge_gap"].items()}
    assert max(gaps, key=gaps.get) == 6
    test = corpus["test"]
    predicted = load_tasks(tasks_dir).classifier.predict_many([ex.prompt for ex in test])
    ari = adjusted_rand_score([ex.task for ex in test], [p.task for p in predicted])
    assert ari >= ARI_BOUND, ari


def test_clusters_are_named_by_their_top_terms(detection):
    names = detection.names
    assert len(set(names)) == len(names)
    for task in detection.tasks:
        assert task["top_terms"] and task["name"].startswith(task["top_terms"][0].replace(" ", "_"))
        assert task["size"] == int((detection.labels == task["label"]).sum())


def test_artifact_is_versioned_and_reloads(tasks_dir, detection):
    meta = json.loads((tasks_dir / TASKS_FILE).read_text())
    assert meta["schema"] == SCHEMA and meta["version"] == detection.meta["version"]
    assert set(meta["merge_gap"]) == {str(k) for k in range(2, 10)}
    loaded = load_tasks(tasks_dir)
    assert loaded.names == detection.names
    samples = loaded.samples()
    assert set(samples) == set(detection.names) and all(1 <= len(v) <= 4 for v in samples.values())


def test_another_schema_or_a_missing_artifact_is_refused(tasks_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="tasks detect"):
        load_tasks(tmp_path)
    (tmp_path / TASKS_FILE).write_text(json.dumps({"schema": SCHEMA + 1}))
    with pytest.raises(ValueError, match="schema"):
        load_tasks(tmp_path)


def test_too_few_prompts_or_a_bad_range_is_an_error():
    with pytest.raises(ValueError, match="at least 4 non-empty prompts"):
        detect_tasks(["a", "b", " "])
    with pytest.raises(ValueError, match="k_min <= k_max"):
        detect_tasks(["x y z"] * 10, k_min=5, k_max=3)


def test_embedding_featuriser_is_a_plugin_that_explains_what_it_needs(tmp_path):
    from router.features import create_featuriser
    with pytest.raises(ValueError, match="sentence-transformers|does not exist"):
        create_featuriser("embedding", model_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown featuriser"):
        create_featuriser("bag-of-words")
