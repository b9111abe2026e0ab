"""Training stop models: acceptance logs, the decision models' report, the threshold sweep, the CLI,
and the tiny zoo's stop stage."""

import json

import pytest

from drafter_service.base import create_drafter
from drafter_service.stopping import StopModel
from specroute.cli import main
from specroute.zoo.manifest import drafter_options
from specroute.zoo.presets import StopTrainSpec
from specroute.zoo.stop import choose_threshold, collect_acceptance, sweep_thresholds, train_decision_model
from tests.conftest import PROMPTS


@pytest.fixture(scope="module")
def acceptance(target, tiny_zoo):
    drafter = create_drafter("model", {"path": tiny_zoo.llama_drafter})
    ids = [target.tokenizer.encode(p) for p in PROMPTS[:4]]
    return collect_acceptance(target, drafter, ids, 16)


def test_a_log_covers_both_temperatures_and_every_generation(acceptance):
    columns = acceptance.columns()
    assert set(columns["greedy"].tolist()) == {0, 1}
    assert set(columns["generation"].tolist()) == set(range(8))  # 4 prompts x (greedy, T=1)
    assert acceptance.meta["drafter"] and acceptance.meta["hidden_size"] == 64


@pytest.mark.parametrize("variant,labels", [("mlp", "soft"), ("hard", "hard")])
def test_a_decision_model_trains_with_a_heldout_auroc_and_calibration_report(acceptance, variant, labels):
    model = train_decision_model(acceptance, StopTrainSpec(variant=variant, labels=labels, epochs=3))
    report = model.file.report["training"]
    assert report["examples"]["train"] > 0 and report["examples"]["heldout"] > 0
    assert report["heldout_auroc"] is None or 0 <= report["heldout_auroc"] <= 1
    calibration = report["heldout_calibration"]
    assert 0 <= calibration["ece"] <= 1 and sum(b["count"] for b in calibration["bins"]) == report["examples"]["heldout"]
    assert model.file.variant == variant and model.file.labels == labels and model.file.drafter_hidden_size == 64


def test_the_sweep_measures_each_setting_and_writes_the_fastest(acceptance, target, tiny_zoo, tmp_path):
    train_decision_model(acceptance, StopTrainSpec(epochs=2)).save(tmp_path / "stop")
    ids = [target.tokenizer.encode(p) for p in PROMPTS[4:6]]
    sweep = sweep_thresholds(target, lambda extra: create_drafter("model", {"path": tiny_zoo.llama_drafter, **extra}),
                             tmp_path / "stop", ids, 8, thresholds={"frontier": (0.3, 0.6), "survival": (0.2,)})
    assert set(sweep["settings"]) == {"adaptive", "frontier@0.3", "frontier@0.6", "survival@0.2"}
    assert all(set(s["speedup"]) == {"0", "1"} for s in sweep["settings"].values())
    assert set(sweep["best_per_rule"]) == {"frontier", "survival"} and sweep["best"] != "adaptive"
    choose_threshold(tmp_path / "stop", sweep)
    chosen = StopModel.load(tmp_path / "stop").file
    assert (chosen.rule, chosen.threshold) == (sweep["settings"][sweep["best"]]["rule"],
                                               sweep["settings"][sweep["best"]]["threshold"])
    assert chosen.report["sweep"]["best"] == sweep["best"]


def test_the_cli_logs_and_trains(tiny_zoo, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:3]))
    assert main(["log-acceptance", "--target", str(tiny_zoo.target), "--drafter", str(tiny_zoo.llama_drafter),
                 "--prompts", str(prompts), "--out", str(tmp_path / "log.safetensors"), "--max-new-tokens", "12"]) == 0
    assert main(["train-stop", "--logs", str(tmp_path / "log.safetensors"), "--out", str(tmp_path / "stop"),
                 "--variant", "hard", "--epochs", "2", "--target", str(tiny_zoo.target),
                 "--drafter", str(tiny_zoo.llama_drafter), "--validation", str(prompts), "--max-prompts", "1",
                 "--max-new-tokens", "8", "--temperatures", "0"]) == 0
    written = json.loads((tmp_path / "stop" / "stop_model.json").read_text())
    assert written["variant"] == "hard" and "sweep" in written["report"] and "training" in written["report"]
    assert "held-out AUROC" in capsys.readouterr().out
    assert main(["log-acceptance", "--target", str(tiny_zoo.target), "--drafter", "ngram", "--prompts", str(prompts),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no features to log" in capsys.readouterr().err
    assert main(["train-stop", "--logs", str(tmp_path / "log.safetensors"), "--out", str(tmp_path / "s2"),
                 "--validation", str(prompts)]) == 2
    assert main(["generate", "--target", str(tiny_zoo.target), "--drafter", str(tiny_zoo.llama_drafter),
                 "--prompt", PROMPTS[0], "--max-new-tokens", "4", "--stop-model", str(tmp_path / "stop")]) == 0
    capsys.readouterr()
    assert main(["generate", "--target", str(tiny_zoo.target), "--drafter", str(tiny_zoo.llama_drafter),
                 "--prompt", PROMPTS[0], "--stop-model", str(tmp_path / "nowhere")]) == 2
    assert "stop_model" in capsys.readouterr().err


def test_the_tiny_zoo_trains_a_stop_model_and_names_it_where_it_was_faster(built_zoo):
    manifest = json.loads((built_zoo / "manifest.json").read_text())
    (record,) = manifest["stop_models"]
    assert record["drafter"] == "generic-llama" and record["logged_nodes"] > 0
    for variant in ("mlp", "hard"):
        assert StopModel.load(built_zoo / record[variant]["path"]).file.variant == variant
        assert set(record[variant]["best_per_rule"]) == {"frontier", "survival"}
    entry = next(d for d in manifest["drafters"] if d["name"] == "generic-llama")
    assert ("stop_model" in entry) == record["adopted"]
    drafter = create_drafter(entry["kind"], drafter_options(built_zoo, entry))
    assert (drafter.stop is not None) == record["adopted"]
