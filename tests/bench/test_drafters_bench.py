"""The drafters benchmark runs end to end on the tiny zoo and writes its results (not a timing test)."""

import json

from bench.drafters import POSITIONS, run_drafters_bench


def test_drafters_bench_writes_results(built_zoo, tmp_path):
    results = run_drafters_bench(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=8, repeats=1,
                                 out=tmp_path)
    for name in ("drafters.md", "drafters.json", "drafters.png"):
        assert (tmp_path / name).is_file()
    written = json.loads((tmp_path / "drafters.json").read_text())
    methods = set(written["setup"]["methods"])
    assert {"plain", "generic", "specialist", "eagle", "feature-specialist", "feature+lookup"} <= methods, methods
    for key, table in written["by_temperature"].items():
        for scope, rows in table.items():
            assert set(rows) == methods
            assert rows["plain"]["speedup"] == 1.0 and rows["plain"]["state_bytes_per_round"] == 0.0
            for method, row in rows.items():
                assert row["lossless"] is (True if key == "0" else None), (key, scope, method)
                assert len(row["acceptance_by_position"]) == POSITIONS
                assert all(0.0 <= a <= 1.0 for a in row["acceptance_by_position"])
            assert rows["eagle"]["state_bytes_per_round"] > 0, "a feature drafter's verdicts carry states"
    cost = results["state_cost"]["trees"]
    assert set(cost) == {"1", "12"} and all(row["with_ms"] > 0 for row in cost.values())
    assert "acc@1" in (tmp_path / "drafters.md").read_text()
