"""Text-quality metrics on crafted sequences, and `zoo quality` on the tiny zoo."""

import json

import pytest

from specroute.repetition import distinct_n, repeat_share
from specroute.zoo.quality import meets_goal, quality_of_zoo, text_quality

LOOP = [1, 2, 3, 4] * 10
FRESH = list(range(100, 140))


def test_a_looping_sequence_repeats_and_is_not_distinct():
    assert distinct_n(LOOP, 4) == pytest.approx(4 / 37)
    assert distinct_n(LOOP, 2) == pytest.approx(4 / 39)
    # The first six tokens open the loop; every token after completes a 6-gram seen before.
    assert repeat_share([], LOOP) == pytest.approx((40 - 6 - 3) / 40)


def test_a_non_repeating_sequence_is_distinct_and_repeats_nothing():
    assert distinct_n(FRESH, 4) == 1.0 and distinct_n(FRESH, 2) == 1.0
    assert repeat_share([], FRESH) == 0.0


def test_copying_the_prompt_counts_as_repeating():
    prompt = list(range(10))
    assert repeat_share(prompt, list(range(10))) == pytest.approx(5 / 10)  # 0..4 start no seen 6-gram yet
    assert repeat_share(prompt, []) == 0.0
    assert repeat_share([1, 2, 3, 4, 5, 6], [1]) == 0.0  # the 6-gram (2..6, 1) is new


def test_the_goal():
    reference = {"repeat_share": 0.1, "distinct_4": 1.0}
    assert meets_goal({"repeat_share": 0.2, "distinct_4": 0.85}, reference)
    assert not meets_goal({"repeat_share": 0.21, "distinct_4": 0.9}, reference)
    assert not meets_goal({"repeat_share": 0.0, "distinct_4": 0.84}, reference)
    assert text_quality([])["samples"] == 0


def test_zoo_quality_on_the_tiny_zoo(built_zoo, tmp_path):
    import shutil
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    report = quality_of_zoo(zoo, prompts_per_task=2, max_new_tokens=16, out=tmp_path / "out")
    assert set(report["tasks"]) == set(json.loads((zoo / "manifest.json").read_text())["corpus"]["families"])
    for task in report["tasks"].values():
        assert task["heldout_loss"] > 0
        for kind in ("greedy", "sampled_t1", "reference"):
            assert 0 <= task[kind]["repeat_share"] <= 1 and 0 < task[kind]["distinct_4"] <= 1
    assert json.loads((zoo / "manifest.json").read_text())["target"]["quality"] == report
    assert (tmp_path / "out" / "quality.json").is_file()
