"""`specroute bench scale` on the tiny zoo: both verification modes run, and the results are written."""

import json

import pytest


@pytest.mark.integration
def test_scale_bench_writes_its_results(built_zoo, tmp_path):
    from bench.scale import run_scale_bench
    result = run_scale_bench(built_zoo, "tiny", concurrencies=(1, 2), duration_s=2.0, max_new_tokens=8, repeats=1,
                             out=tmp_path, drafter="ngram")
    written = json.loads((tmp_path / "scale-ngram.json").read_text())
    assert set(written["per_concurrency"]) == {"1", "2"}
    for row in result["per_concurrency"].values():
        assert row["unbatched"]["tokens_per_s"] > 0 and row["batched"]["tokens_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["batched"]["tokens_per_s"] / row["unbatched"]["tokens_per_s"])
        assert all(v["errors"] == 0 for v in row["variants"].values())
    assert result["goal"]["streams"] == 8 and result["goal"]["measured"] is None  # no 8-stream level here
    assert (tmp_path / "scale-ngram.png").stat().st_size > 0
    assert "batched / unbatched" in (tmp_path / "scale-ngram.md").read_text()
