"""`python -m bench mask` runs end to end at a tiny size and writes its results; its trees are drafted trees."""

import json
import random

from bench.__main__ import build_parser
from bench.mask import candidate_count, default_shapes, drafted_round, run_mask_bench
from core.contracts import NO_PARENT
from core.tree_mask import tree_depths


def test_drafted_rounds_are_trees_of_the_asked_shape():
    rng = random.Random(0)
    for top_k, depth, nodes in default_shapes():
        assert nodes <= candidate_count(top_k, depth)
        r = drafted_round(rng, top_k, depth, nodes)
        assert len(r.tree_parents) == nodes
        assert r.tree_parents[0] == NO_PARENT and all(0 <= p < i for i, p in enumerate(r.tree_parents) if i)
        assert max(tree_depths(r.tree_parents)) <= depth
        assert len(r.candidate_parents) == candidate_count(top_k, depth)
        assert list(r.level_sizes) == sorted(r.level_sizes) and len(r.level_sizes) == depth - 1


def test_the_bench_runs_at_a_tiny_size_and_writes_its_files(tmp_path):
    result = run_mask_bench(out=tmp_path, zoo=tmp_path / "no-zoo", rounds=3, repeats=2,
                            shapes=[(1, 3, 4), (2, 3, 8)], prefixes=(8,), target_forward=False)
    saved = json.loads((tmp_path / "mask.json").read_text())
    assert saved["shapes"] == result["shapes"]
    assert set(saved["shapes"]) == {"k=1 d=3 n=4", "k=2 d=3 n=8"}
    for figures in saved["shapes"].values():
        assert {"ancestors", "mask P=8", "pool P=8", "drafter levels"} <= set(figures)
        assert all(f["build_us"] > 0 and f["slice_us"] > 0 for f in figures.values())
    assert saved["provenance"]["machine"] and saved["target_forward_ms"] is None
    markdown = (tmp_path / "mask.md").read_text()
    assert "| k=2 d=3 n=8 |" in markdown and "build/slice" in markdown


def test_the_subcommand_is_registered():
    args = build_parser().parse_args(["mask", "--rounds", "5", "--no-target-forward"])
    assert args.rounds == 5 and args.no_target_forward
