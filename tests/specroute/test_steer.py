"""`specroute steer` and the zoo's steering stages (SD²): a steered drafter directory any loader takes."""

from __future__ import annotations

import json
import shutil

from core.sampling import SamplingParams
from drafter_service.base import directory_kind
from specroute.engine import Engine
from specroute.zoo.build import ZooBuilder, build_plan
from specroute.zoo.manifest import load_manifest
from specroute.zoo.presets import TINY, SteerTrainSpec, SteeringZooSpec
from specroute.zoo.steer import REPORT, unsteered_prompt

PROMPTS = "def add(a, b):\nclass Stack:\nimport os\nfor i in range(3):\nThe river\nSolve 3 + 4\n"


def test_steer_command_line_writes_a_steered_drafter_and_its_report(built_zoo, tmp_path, capsys):
    from specroute.cli import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    out = tmp_path / "steered"
    assert main(["steer", "--target", str(built_zoo / "target"), "--drafter", str(built_zoo / "generic-llama"),
                 "--prompts", str(prompts), "--out", str(out), "--steps", "6", "--batch-size", "4",
                 "--max-new-tokens", "8", "--heldout-fraction", "0.34", "--max-offset", "3"]) == 0
    assert directory_kind(out) == "steered"
    report = json.loads((out / REPORT).read_text())
    assert report["layers"] == [0, 1, 2] and report["train"]["max_offset"] == 3
    assert report["heldout_kl_before"] > 0 and report["heldout_kl_after"] > 0
    assert "held-out KL" in capsys.readouterr().out
    engine = Engine.load(built_zoo / "target", drafter=str(out), device="cpu")
    plain = Engine.load(built_zoo / "target", device="cpu")
    assert engine.generate("def add(a, b):", 16).token_ids == plain.generate("def add(a, b):", 16).token_ids
    sampled = engine.generate("import os", 16, SamplingParams(temperature=1.0, seed=1))
    assert sampled.stats.num_generated > 0


def test_steer_refuses_what_it_cannot_steer(built_zoo, tmp_path, capsys):
    from specroute.cli import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    steered = built_zoo / "steered-generic-llama"
    assert main(["steer", "--target", str(built_zoo / "target"), "--drafter", str(steered), "--prompts",
                 str(prompts), "--out", str(tmp_path / "x")]) == 2
    assert "plain model drafter" in capsys.readouterr().err
    assert main(["steer", "--target", str(built_zoo / "target"), "--drafter", str(built_zoo / "generic-llama"),
                 "--prompts", str(prompts), "--out", str(tmp_path / "y"), "--layers", "0", "1", "7"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_tiny_zoo_steers_its_generic_llama(built_zoo):
    manifest = load_manifest(built_zoo)
    (entry,) = manifest["steered_drafters"]
    assert entry["name"] == "steered-generic-llama" and entry["start"] == "distilled" and entry["family"] == "llama"
    assert manifest["pretrained_drafters"] == []
    assert directory_kind(built_zoo / entry["path"]) == "steered"
    assert [s for s in build_plan(TINY) if s.startswith("steer")] == ["steer-states", "steer-generic-llama"]


def test_steering_from_the_pretrained_base_remakes_it_exactly(built_zoo, tmp_path):
    """`from_pretrained` makes the generic drafter's pretrained base again (its drafter stage's own
    pretraining) and steers it too; the earlier stages are skipped, not redone."""
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    preset = TINY.model_copy(update={"steering": SteeringZooSpec(
        drafters=("generic-llama",), from_pretrained=True, train=SteerTrainSpec(steps=3, batch_size=4, max_offset=4),
        samples_per_task=4, heldout_samples=2)})
    logs = []
    manifest = ZooBuilder(preset, zoo, log=logs.append).build()
    (base,) = manifest["pretrained_drafters"]
    assert base["name"] == "generic-llama-pretrained" and base["matches_recorded_base"], base
    assert [d["start"] for d in manifest["steered_drafters"]] == ["distilled", "pretrained"]
    assert directory_kind(zoo / "steered-generic-llama-pretrained") == "steered"
    assert any("drafter-generic-llama: done already, skipped" in line for line in logs)


def test_training_leaves_the_prompt_before_the_first_root_unsteered_as_inference_does():
    import torch
    biases = torch.ones(2, 5, 3, 4)
    predicting = torch.tensor([[False, False, True, True, False], [True, True, True, True, True]])
    out = unsteered_prompt(biases, predicting)
    assert out[0, :2].abs().sum() == 0 and torch.equal(out[0, 2:], biases[0, 2:])
    assert torch.equal(out[1], biases[1])
