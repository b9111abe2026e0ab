"""`python -m bench stopping` on the tiny zoo: every method per task at both temperatures, greedy
output identical to plain decoding, the goals judged on the stop model as the zoo saved it."""

import json

import pytest


@pytest.mark.integration
def test_stopping_bench_writes_every_method_per_task(built_zoo, tmp_path):
    from bench.stopping import METHODS, run_stopping_bench
    result = run_stopping_bench(built_zoo, "tiny", prompts_per_task=1, max_new_tokens=8, repeats=1, out=tmp_path)
    written = json.loads((tmp_path / "stopping.json").read_text())
    assert set(written["by_temperature"]) == {"0", "1"}
    expected = {"plain", *(f"generic-llama/{m}" for m in METHODS)}
    for key, table in result["by_temperature"].items():
        assert "tasks" in table and len(table) == 7  # six tasks and their mean
        for scope, rows in table.items():
            assert set(rows) == expected
            for name, row in rows.items():
                assert row["speedup"] > 0 and 0 <= row["rejected_share"] <= 1
                assert row["lossless"] is (True if key == "0" else None), f"{name} on {scope}"
        assert table["tasks"]["plain"]["nodes_per_round"] == 0
        assert table["tasks"]["generic-llama/static"]["nodes_per_round"] > 0
    assert {(g["drafter"], g["temperature"]) for g in result["goals"]} == {("generic-llama", "0"), ("generic-llama", "1")}
    assert result["setup"]["chosen"]["generic-llama"] in ("decision-mlp", "survival")
    text = (tmp_path / "stopping.md").read_text()
    assert "speedup / adaptive" in text and "rejected" in text and (tmp_path / "stopping.png").stat().st_size > 0
