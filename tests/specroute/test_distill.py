"""User-facing distillation: a drafter from an architecture file or a model directory is aligned to
a target on the target's continuations of the user's prompts (JSONL or plain text); bad inputs
fail early with a ValueError that says what was expected."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from specroute.zoo.distill import REPORT, DistillConfig, load_prompts, run_distill, split_prompts
from tests import tiny_models

TINY = dict(steps=15, batch_size=4, lr=3e-3, max_new_tokens=8, max_prompt_tokens=32, heldout_fraction=0.25,
            device="cpu")


@pytest.fixture(scope="module")
def prompts_file(built_zoo, tmp_path_factory):
    """The first 32 prompts of the zoo's training split, as JSONL (the full split is slow to continue)."""
    lines = (built_zoo / "corpus" / "train.jsonl").read_text().splitlines()[:32]
    path = tmp_path_factory.mktemp("prompts") / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _arch_file(tmp_path, **arch):
    path = tmp_path / "student.json"
    path.write_text(json.dumps(arch))
    return path


def test_new_student_from_architecture_file(built_zoo, prompts_file, tmp_path):
    arch = _arch_file(tmp_path, family="llama", hidden=32, layers=1, heads=4)
    out = tmp_path / "drafter"
    report = run_distill(built_zoo / "target", prompts_file, str(arch), out, DistillConfig(**TINY))

    assert json.loads((out / REPORT).read_text()) == report
    assert report["num_prompts"] == 32
    assert (report["num_train_prompts"], report["num_heldout_prompts"]) == (24, 8)
    assert report["config"]["steps"] == 15
    assert report["heldout_divergence_after"] < report["heldout_divergence_before"]
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    target_tokenizer = AutoTokenizer.from_pretrained(built_zoo / "target")
    assert tokenizer.get_vocab() == target_tokenizer.get_vocab()
    assert tokenizer.padding_side == target_tokenizer.padding_side
    assert model.config.vocab_size == len(target_tokenizer)
    assert model.config.hidden_size == 32


def test_existing_student_directory(built_zoo, prompts_file, tmp_path):
    out = tmp_path / "drafter"
    config = DistillConfig(**TINY, divergence="tv")
    report = run_distill(built_zoo / "target", prompts_file, str(built_zoo / "generic-llama"), out, config)
    assert 0 <= report["heldout_divergence_after"] < report["heldout_divergence_before"] <= 1
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


def test_plain_text_prompts_and_a_gpt2_student(built_zoo, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\n\nThe river\nimport os\nclass Point:\n{\"name\": \"x\"}\nfor i in range(3):\n")
    arch = _arch_file(tmp_path, family="gpt2", hidden=32, layers=1, heads=4)
    report = run_distill(built_zoo / "target", prompts, str(arch), tmp_path / "out",
                         DistillConfig(**{**TINY, "steps": 5}))
    assert report["num_prompts"] == 6  # the blank line is not a prompt
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.model_type == "gpt2"


def test_prompt_formats(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"task": "code", "prompt": "def f(x):\\n    return"}\n\n{"prompt": "Hello"}\n')
    assert load_prompts(jsonl) == ["def f(x):\n    return", "Hello"]
    mixed = tmp_path / "b.txt"
    mixed.write_text('{"prompt": "Hello"}\nplain line\n')
    assert load_prompts(mixed) == ['{"prompt": "Hello"}', "plain line"]


def test_split_is_deterministic_and_disjoint():
    prompts = [f"p{i}" for i in range(20)]
    train, heldout = split_prompts(prompts, 0.1, seed=3)
    assert (train, heldout) == split_prompts(prompts, 0.1, seed=3)
    assert len(heldout) == 2 and sorted(train + heldout) == sorted(prompts)
    assert split_prompts(prompts, 0.1, seed=4) != (train, heldout)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_prompts(["only"], 0.1, seed=0)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown divergence"):
        DistillConfig(divergence="js")
    with pytest.raises(ValueError, match="heldout_fraction"):
        DistillConfig(heldout_fraction=0.6)
    with pytest.raises(ValueError, match="Extra inputs"):
        DistillConfig(stpes=10)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_prompts_file(built_zoo, tmp_path, text):
    prompts = tmp_path / "empty.jsonl"
    prompts.write_text(text)
    with pytest.raises(ValueError, match="holds no prompts"):
        run_distill(built_zoo / "target", prompts, str(built_zoo / "generic-llama"), tmp_path / "out",
                    DistillConfig(**TINY))


def test_student_with_another_tokenizer(built_zoo, prompts_file, tmp_path):
    other = tmp_path / "other"
    tokenizer = tiny_models.build_word_tokenizer(other, vocab_size=512)
    tiny_models.build_llama(other, len(tokenizer), hidden=32, layers=1, seed=0, eos_id=tokenizer.eos_token_id)
    with pytest.raises(ValueError, match="another tokenizer vocabulary"):
        run_distill(built_zoo / "target", prompts_file, str(other), tmp_path / "out", DistillConfig(**TINY))
    assert not (tmp_path / "out").exists()


def test_student_that_is_neither_directory_nor_json(built_zoo, prompts_file, tmp_path):
    target, config = built_zoo / "target", DistillConfig(**TINY)
    with pytest.raises(ValueError, match="neither a model directory .* nor a JSON architecture file"):
        run_distill(target, prompts_file, str(tmp_path / "missing"), tmp_path / "out", config)
    not_json = tmp_path / "student.yaml"
    not_json.write_text("family: llama\n")
    with pytest.raises(ValueError, match="not a JSON object describing an architecture"):
        run_distill(target, prompts_file, str(not_json), tmp_path / "out", config)
    with pytest.raises(ValueError, match="not a valid architecture"):
        run_distill(target, prompts_file, str(_arch_file(tmp_path, family="mamba", hidden=32, layers=1)),
                    tmp_path / "out", config)
    with pytest.raises(ValueError, match="not a model directory"):
        run_distill(target, prompts_file, str(tmp_path), tmp_path / "out", config)


def test_distill_command_line(built_zoo, tmp_path, capsys):
    from specroute.cli import main
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\nclass Stack:\nimport os\nfor i in range(3):\n")
    arch = tmp_path / "arch.json"
    arch.write_text('{"family": "gpt2", "hidden": 32, "layers": 1, "heads": 4}')
    out = tmp_path / "student"
    assert main(["distill", "--target", str(built_zoo / "target"), "--prompts", str(prompts), "--student", str(arch),
                 "--out", str(out), "--steps", "3", "--batch-size", "2", "--max-new-tokens", "4",
                 "--heldout-fraction", "0.25"]) == 0
    assert (out / "config.json").is_file()
    assert main(["distill", "--target", str(built_zoo / "target"), "--prompts", str(prompts), "--student", str(arch),
                 "--out", str(out), "--divergence", "js"]) == 2
    assert "error" in capsys.readouterr().err
