"""`specroute generate` end to end through main(), on the test session's tiny models."""

import json

import pytest

from specroute.cli import main


def run_json(capsys, *args):
    assert main(["generate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("drafter", ["none", "ngram", "model"])
def test_generate_json_is_the_same_for_every_drafter(capsys, tiny_zoo, drafter):
    spec = str(tiny_zoo.llama_drafter) if drafter == "model" else drafter
    out = run_json(capsys, "--target", str(tiny_zoo.target), "--drafter", spec,
                   "--prompt", "def fill(text):", "--max-new-tokens", "16")
    plain = run_json(capsys, "--target", str(tiny_zoo.target), "--drafter", "none",
                     "--prompt", "def fill(text):", "--max-new-tokens", "16")
    assert out["token_ids"] == plain["token_ids"] and out["text"] == plain["text"]
    assert len(out["token_ids"]) <= 16
    for key in ("tau", "acceptance_rate", "rounds", "tokens_per_s"):
        assert key in out["stats"]
    assert out["stats"]["tau"] >= 1.0


def test_generate_sampling_is_seeded(capsys, tiny_zoo):
    args = ["--target", str(tiny_zoo.target), "--drafter", str(tiny_zoo.gpt2_drafter), "--prompt", "import os",
            "--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40", "--seed", "7"]
    assert run_json(capsys, *args)["token_ids"] == run_json(capsys, *args)["token_ids"]


def test_generate_streams_text_and_stats(capsys, tiny_zoo):
    assert main(["generate", "--target", str(tiny_zoo.target), "--drafter", "ngram", "--prompt", "return",
                 "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    assert "tau" in captured.err and "tokens/s" in captured.err


@pytest.mark.parametrize("bad", [["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"],
                                 ["--max-new-tokens", "-3"]])
def test_generate_rejects_bad_parameters(capsys, tiny_zoo, bad):
    assert main(["generate", "--target", str(tiny_zoo.target), "--prompt", "x", *bad]) == 2
    assert "error" in capsys.readouterr().err


def test_engine_rejects_a_drafter_with_another_tokenizer(tiny_zoo, tmp_path):
    from specroute.engine import Engine
    from tests import tiny_models
    other = tmp_path / "other"
    tokenizer = tiny_models.build_word_tokenizer(other, 16)
    tiny_models.build_llama(other, len(tokenizer), hidden=32, layers=1, seed=0)
    with pytest.raises(ValueError, match="tokenizer"):
        Engine.load(tiny_zoo.target, str(other))


def test_serve_log_flags_override_the_configs_logs_and_keep_what_they_do_not_name(tmp_path):
    from specroute.cli import build_parser, with_log_flags
    from specroute.config import validate_config
    config = validate_config({"target": {"path": "t"}, "drafters": [{"name": "plain", "kind": "plain"}],
                              "router": {"tasks": "tasks"}, "logs": {"format": "json", "level": "WARNING"}})
    unchanged = with_log_flags(config, build_parser().parse_args(["serve", "--zoo", "z"]))
    assert unchanged.logs == config.logs
    args = build_parser().parse_args(["serve", "--zoo", "z", "--log-format", "text", "--log-dir", str(tmp_path / "l")])
    logs = with_log_flags(config, args).logs
    assert (logs.format, logs.dir, logs.level) == ("text", str(tmp_path / "l"), "WARNING")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--zoo", "z", "--log-format", "xml"])


def test_the_training_commands_defaults_are_their_specs():
    """`specroute steer` and `train-stop` spell their specs' defaults in the parser (building it imports no
    transformers); they must not drift from the specs the zoo trains with."""
    from specroute.cli import build_parser
    from specroute.zoo.presets import SteerTrainSpec
    from specroute.zoo.stop import StopTrainSpec
    steer = build_parser().parse_args(["steer", "--target", "t", "--drafter", "d", "--prompts", "p", "--out", "o"])
    for name in ("steps", "batch_size", "lr", "max_offset"):
        assert getattr(steer, name) == SteerTrainSpec.model_fields[name].default, name
    stop = build_parser().parse_args(["train-stop", "--logs", "l", "--out", "o"])
    for name in ("variant", "labels", "epochs", "seed"):
        assert getattr(stop, name) == StopTrainSpec.model_fields[name].default, name
