"""The lookup benchmark runs end to end on the tiny zoo and writes its results (not a timing test)."""

import json

import pytest

from bench.lookup import METHODS, run_lookup_bench
from specroute.zoo.manifest import load_manifest


def test_lookup_bench_writes_every_method_per_task(built_zoo, tmp_path):
    run_lookup_bench(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=6, out=tmp_path)
    saved = json.loads((tmp_path / "lookup.json").read_text())
    with_weights = {d["task"] for d in load_manifest(built_zoo)["drafters"] if d["task"] and d["path"]}
    assert set(saved["cells"]) == with_weights  # an ngram specialist has no model to look up with
    assert saved["by_temperature"]["0"] == saved["cells"] and set(saved["by_temperature"]) == {"0", "1"}
    for cells in saved["by_temperature"].values():
        assert set(cells) == with_weights
        for row in cells.values():
            assert all(row[m]["tau"] >= 1.0 and 0.0 <= row[m]["repeat_share"] <= 1.0 for m in METHODS)
    text = (tmp_path / "lookup.md").read_text()
    assert "| **tau / generic's, mean** |" in text and "## T=0" in text and "## T=1" in text


def test_a_zoo_without_datastores_is_named(built_zoo, tmp_path):
    import shutil
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    shutil.rmtree(zoo / "datastores")
    with pytest.raises(FileNotFoundError, match="no task datastores"):
        run_lookup_bench(zoo=zoo, preset="tiny", prompts_per_task=1, max_new_tokens=6, out=tmp_path / "out")
