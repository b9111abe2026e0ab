"""`specroute zoo eval` on the tiny zoo: the task x drafter matrix, its JSON and heatmap."""

import json

import pytest

from specroute.cli import main


def test_zoo_eval_writes_the_matrix(built_zoo, tmp_path, capsys):
    assert main(["zoo", "eval", "--zoo", str(built_zoo), "--prompts", "2", "--max-new-tokens", "8",
                 "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert (tmp_path / "eval_tau.png").stat().st_size > 0
    from specroute.zoo.presets import ALL_FAMILIES
    assert results["tasks"] == list(ALL_FAMILIES)
    assert {"generic-llama", "generic-gpt2", "ngram", "math-llama", "translation-gpt2"} <= set(results["drafters"])
    for task in results["tasks"]:
        assert results["cells"][task]["plain"]["tau"] == 1.0
        for drafter in results["drafters"]:
            assert results["cells"][task][drafter]["tau"] >= 1.0
    assert results["lossless_mismatches"] == []
    assert set(results["by_temperature"]) == {"0", "1"}
    assert results["by_temperature"]["0"]["cells"] == results["cells"]
    for task, row in results["by_temperature"]["1"]["cells"].items():
        assert row["plain"]["tau"] == 1.0 and row["plain"]["speedup"] == 1.0
        assert all(row[d]["tau"] >= 1.0 and 0.0 <= row[d]["repeat_share"] <= 1.0 for d in results["drafters"])
    out = capsys.readouterr().out
    assert "T=0:" in out and "T=1:" in out
    assert "generic-llama" in out and "identical to plain decoding: True" in out
    assert "mean specialist gain over the generic drafter" in out
    assert set(results["specialists"]["per_task"]) == set(ALL_FAMILIES)


def test_specialist_gains_compare_each_task_specialist_with_the_generic_drafter():
    from specroute.zoo.evaluate import specialist_gains
    manifest = {"drafters": [{"name": "g", "kind": "model", "task": None}, {"name": "ngram", "kind": "ngram", "task": None},
                             {"name": "a-x", "kind": "model", "task": "a"}, {"name": "b-ngram", "kind": "ngram", "task": "b"}]}
    cells = {"a": {"g": {"tau": 2.0}, "a-x": {"tau": 2.5}, "ngram": {"tau": 1.0}, "b-ngram": {"tau": 1.0}},
             "b": {"g": {"tau": 4.0}, "a-x": {"tau": 3.0}, "ngram": {"tau": 3.0}, "b-ngram": {"tau": 3.0}}}
    gains = specialist_gains(manifest, cells)
    assert gains["per_task"]["a"]["gain"] == pytest.approx(0.25)
    assert gains["per_task"]["b"] == {"specialist": "b-ngram", "generic": "g", "tau_specialist": 3.0,
                                      "tau_generic": 4.0, "gain": pytest.approx(-0.25)}
    assert gains["mean_gain"] == pytest.approx(0.0)
