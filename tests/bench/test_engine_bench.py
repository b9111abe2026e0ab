"""The engine benchmark runs end to end on the tiny zoo and writes its results (not a timing test)."""

import json

from bench.engine import run_engine_bench


def _check_temperatures(results: dict, methods: set[str]) -> None:
    """Both temperatures measured: T=0 lossless and equal to `results`, T=1 unchecked (None);
    plain's speedup 1.0 and every repeat share in [0, 1] at each."""
    by_t = results["by_temperature"]
    assert set(by_t) == {"0", "1"}
    assert results["setup"]["temperatures"] == [0.0, 1.0]
    assert by_t["0"] == results["results"]
    for key, table in by_t.items():
        for scope, rows in table.items():
            assert set(rows) == methods
            assert rows["plain"]["speedup"] == 1.0
            for row in rows.values():
                assert 0.0 <= row["repeat_share"] <= 1.0
                assert row["lossless"] is (True if key == "0" else None), (key, scope, row)


def test_engine_bench_writes_results(built_zoo, tmp_path):
    results = run_engine_bench(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=8,
                               repeats=1, out=tmp_path, check_sampling=False)  # test_common tests that check
    for name in ("engine.md", "engine.json", "engine.png"):
        assert (tmp_path / name).is_file()
    written = json.loads((tmp_path / "engine.json").read_text())
    methods = {"plain", "hf_plain", "hf_assisted", "chain", "tree", "ngram", "specialist"}
    assert set(written["results"]["all"]) == methods
    _check_temperatures(written, methods)
    assert results["setup"]["zoo_preset"] == "tiny"
    markdown = (tmp_path / "engine.md").read_text()
    assert "tau T=1" in markdown and "repeat T=0" in markdown and "lossless (T=0)" in markdown


def test_tree_sweep_uses_validation_prompts(built_zoo, tmp_path):
    from bench.engine import run_tree_sweep
    results = run_tree_sweep(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=6, repeats=1,
                             out=tmp_path, grid=[(1, 2, 3), (2, 2, 5)], check_sampling=False)
    assert results["setup"]["split"] == "validation"
    _check_temperatures(results, {"plain", "k1-d2-n3", "k2-d2-n5"})
    assert (tmp_path / "engine_sweep.md").is_file()
    assert "T=1" in (tmp_path / "engine_sweep.md").read_text()
