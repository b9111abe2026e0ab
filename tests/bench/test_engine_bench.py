"""The engine benchmark runs end to end on the tiny zoo and writes its results (not a timing test)."""

import json

from bench.engine import run_engine_bench


def test_engine_bench_writes_results(built_zoo, tmp_path):
    results = run_engine_bench(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=8,
                               repeats=1, out=tmp_path)
    for name in ("engine.md", "engine.json", "engine.png"):
        assert (tmp_path / name).is_file()
    table = json.loads((tmp_path / "engine.json").read_text())["results"]["all"]
    assert set(table) == {"plain", "hf_plain", "hf_assisted", "chain", "tree", "ngram", "specialist"}
    assert all(row["lossless"] for row in table.values())
    assert table["plain"]["speedup"] == 1.0
    assert results["setup"]["zoo_preset"] == "tiny"


def test_tree_sweep_uses_validation_prompts(built_zoo, tmp_path):
    from bench.engine import run_tree_sweep
    results = run_tree_sweep(zoo=built_zoo, preset="tiny", prompts_per_task=1, max_new_tokens=6, repeats=1,
                             out=tmp_path, grid=[(1, 2, 3), (2, 2, 5)])
    assert results["setup"]["split"] == "validation"
    assert set(results["results"]["all"]) == {"plain", "k1-d2-n3", "k2-d2-n5"}
    assert all(row["lossless"] for row in results["results"]["all"].values())
    assert (tmp_path / "engine_sweep.md").is_file()
