"""`bench target` on the tiny preset, and a build adopting a lever trained with its exact recipe."""

import json

from safetensors.torch import load_file

from bench.target import run
from specroute.zoo.build import LEVER_RECORD, ZooBuilder
from specroute.zoo.presets import PRESETS


def test_a_build_adopts_a_lever_trained_with_its_recipe_and_no_other(tmp_path):
    zoo, out = tmp_path / "zoo", tmp_path / "results"
    tiny = PRESETS["tiny"].target_train
    same = f"same:steps={tiny.steps},lr={tiny.lr}"
    results = run("tiny", zoo, out, [same, "shorter:steps=20"], prompts_per_task=1, max_new_tokens=8)
    assert set(results["variants"]) == {"same", "shorter"}
    assert "shorter" in (out / "target.md").read_text()
    assert json.loads((out / "target.json").read_text())["split"] == "validation"

    logs = []
    record = ZooBuilder(PRESETS["tiny"], zoo, log=logs.append).build_target()
    assert record["adopted_from"] == "levers/same" and any("adopted" in line for line in logs)
    assert not (zoo / "target" / LEVER_RECORD).exists()
    adopted, lever = load_file(zoo / "target" / "model.safetensors"), load_file(zoo / "levers" / "same" / "model.safetensors")
    assert adopted.keys() == lever.keys() and all((adopted[k] == lever[k]).all() for k in lever)

    # What adoption stands for: a build that trains the target itself gets the same weights.
    trained = ZooBuilder(PRESETS["tiny"], tmp_path / "fresh", log=logs.append).build_target()
    assert "adopted_from" not in trained
    own = load_file(tmp_path / "fresh" / "target" / "model.safetensors")
    assert all((own[k] == lever[k]).all() for k in lever)
