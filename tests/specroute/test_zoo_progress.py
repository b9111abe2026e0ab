"""A zoo build's progress line: its place in the plan, a bar, and the time left from the preset's
expected stage costs scaled by the build's pace; pretraining on document-aligned blocks."""

from specroute.zoo.build import build_plan
from specroute.zoo.feature_stages import feature_plan
from specroute.zoo.steer_stages import steering_plan
from specroute.zoo.stop_stages import stopping_plan
from specroute.zoo.presets import BENCH, DEMO, TINY, TrainSpec
from specroute.zoo.progress import BuildProgress
from specroute.zoo.training import document_starts


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_estimate_follows_the_builds_pace():
    clock = Clock()
    progress = BuildProgress(["a", "b", "c"], {"a": 10.0, "b": 30.0, "c": 60.0}, clock)
    assert progress.position("b") == "stage 2 of 3: "
    assert progress.left_s() == 100.0 and progress.fraction() == 0.0
    clock.now = 20.0
    progress.done("a", 20.0)  # twice as slow as expected: the rest will be too
    assert progress.pace() == 2.0 and progress.left_s() == 180.0 and progress.fraction() == 0.1
    assert progress.status() == "|##..................| 0.3 min in, about 3.0 min left"
    progress.done("b", None)  # skipped: costs nothing, does not change the pace
    assert progress.left_s() == 120.0 and progress.fraction() == 0.4


def test_without_expected_costs_there_is_no_estimate():
    progress = BuildProgress(["a", "b"], None, Clock())
    progress.done("a", 5.0)
    assert progress.left_s() is None and progress.fraction() == 0.5
    assert progress.status() == "|##########..........| 0.0 min in"
    progress.drop("b")
    assert progress.plan == ["a"] and progress.position("b") == ""


def test_the_demo_preset_expects_every_stage_it_plans():
    plan = build_plan(DEMO)
    assert plan[:3] == ["corpus", "tokenizer", "target"] and plan[-1] == "costs"
    assert set(plan) == set(DEMO.stage_seconds)
    assert len(build_plan(TINY)) == (7 + 1 + len(TINY.drafters) + sum(d.lookup for d in TINY.drafters)
                                     + len(feature_plan(TINY.features, TINY.families))
                                     + len(steering_plan(TINY.steering))
                                     + len(stopping_plan(TINY.stopping, [d.name for d in TINY.drafters])))
    assert build_plan(TINY)[-2:] == ["costs", "stop-generic-llama"], "stop models after the costs"
    assert TINY.stage_seconds is None
    assert set(BENCH.stage_seconds) <= set(build_plan(BENCH)), "estimates only for stages the build plans"


def test_document_blocks_leave_earlier_zoo_keys_alone():
    assert "document_blocks" not in TrainSpec(steps=1).model_dump()
    assert TrainSpec(steps=1, document_blocks=True).model_dump()["document_blocks"] is True
    assert document_starts([5, 0, 6, 7, 0, 8, 0], end_of_text=0) == [0, 2, 5]
