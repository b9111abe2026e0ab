"""`python -m bench scale` on the tiny zoo: both verification modes run, greedy and sampled (T=1), and the
results are written."""

import json

import pytest


@pytest.mark.integration
def test_scale_bench_writes_its_results(built_zoo, tmp_path):
    from bench.scale import run_scale_bench
    result = run_scale_bench(built_zoo, "tiny", concurrencies=(1, 2), duration_s=2.0, max_new_tokens=8, repeats=1,
                             out=tmp_path, drafter="ngram", temperatures=(0.0, 1.0))
    written = json.loads((tmp_path / "scale-ngram.json").read_text())
    assert set(written["per_concurrency"]) == {"1", "2"}
    for row in result["per_concurrency"].values():
        assert row["unbatched"]["tokens_per_s"] > 0 and row["batched"]["tokens_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["batched"]["tokens_per_s"] / row["unbatched"]["tokens_per_s"])
        assert all(v["errors"] == 0 for v in row["variants"].values())
    assert result["goal"]["streams"] == 8 and result["goal"]["measured"] is None  # no 8-stream level here
    assert (tmp_path / "scale-ngram.png").stat().st_size > 0
    text = (tmp_path / "scale-ngram.md").read_text()
    assert "batched / unbatched" in text
    # Greedy and seeded T=1 side by side; the top-level figures are the greedy ones.
    assert result["temperatures"] == [0.0, 1.0] and set(written["by_temperature"]) == {"0", "1"}
    assert result["by_temperature"]["0"]["per_concurrency"] == result["per_concurrency"]
    for t in result["by_temperature"].values():
        assert set(t["per_concurrency"]) == {"1", "2"}
        for row in t["per_concurrency"].values():
            assert row["unbatched"]["tokens_per_s"] > 0 and row["batched"]["tokens_per_s"] > 0
            assert row["batched"]["tau"] is not None and row["batched"]["tau"] > 0
            assert all(v["errors"] == 0 for v in row["variants"].values())
    assert "T=0" in text and "T=1" in text and "repeat share" in text.lower()
