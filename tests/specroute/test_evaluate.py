"""`specroute zoo eval` on the tiny zoo: the task x drafter matrix, its JSON and heatmap."""

import json

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
    out = capsys.readouterr().out
    assert "generic-llama" in out and "identical to plain decoding: True" in out
