"""`python -m bench scale` on the tiny zoo: every mode runs (unbatched, batched with the even split, batched with
the acceptance-weighted split, plain decoding through the batched verifier), greedy and sampled (T=1), and the
results and their goals are written."""

import json

import pytest


@pytest.mark.integration
def test_scale_bench_writes_its_results(built_zoo, tmp_path):
    from bench.scale import MODES, run_scale_bench
    result = run_scale_bench(built_zoo, "tiny", concurrencies=(1, 2), duration_s=1.5, max_new_tokens=8, repeats=1,
                             out=tmp_path, drafter="ngram", temperatures=(0.0, 1.0),
                             check_sampling=False)  # test_common tests the pre-run sampling check
    written = json.loads((tmp_path / "scale-ngram.json").read_text())
    assert set(written["per_concurrency"]) == {"1", "2"} and result["modes"] == list(MODES)
    for row in result["per_concurrency"].values():
        assert all(row[mode]["tokens_per_s"] > 0 for mode in MODES)
        assert row["ratio"] == pytest.approx(row["batched"]["tokens_per_s"] / row["unbatched"]["tokens_per_s"])
        weighted = row["weighted"]["tokens_per_s"]
        assert row["weighted_over_even"] == pytest.approx(weighted / row["batched"]["tokens_per_s"])
        assert row["weighted_over_plain"] == pytest.approx(weighted / row["plain"]["tokens_per_s"])
        assert all(v["errors"] == 0 for v in row["variants"].values())
    assert result["goal"]["streams"] == 8 and result["goal"]["measured"] is None  # no 8-stream level here
    assert result["goals"]["weighted_over_even"]["measured"] is None
    assert set(result["goals"]["no_crossover"]["levels"]) == {"1", "2"}
    assert (tmp_path / "scale-ngram.png").stat().st_size > 0
    text = (tmp_path / "scale-ngram.md").read_text()
    assert "batched / unbatched" in text and "weighted / even" in text and "weighted / plain" in text
    # Greedy and seeded T=1 side by side; the top-level figures are the greedy ones.
    assert result["temperatures"] == [0.0, 1.0] and set(written["by_temperature"]) == {"0", "1"}
    assert result["by_temperature"]["0"]["per_concurrency"] == result["per_concurrency"]
    for t in result["by_temperature"].values():
        assert set(t["per_concurrency"]) == {"1", "2"}
        for row in t["per_concurrency"].values():
            assert all(row[mode]["tokens_per_s"] > 0 for mode in MODES)
            assert row["batched"]["tau"] is not None and row["batched"]["tau"] > 0
            assert row["weighted"]["tau"] is not None and row["weighted"]["tau"] > 0
            assert row["plain"]["tau"] == pytest.approx(1.0)  # root-only trees: one token per round, no drafting
            assert all(v["errors"] == 0 for v in row["variants"].values())
    assert "T=0" in text and "T=1" in text and "repeat share" in text.lower()
