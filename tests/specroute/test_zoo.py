"""The zoo's tiny preset: artifacts load with the real loaders, the corpus is deterministic with
disjoint splits, and distillation lowers the divergence to the target on held-out data."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from specroute.zoo.build import build_zoo
from specroute.zoo.manifest import load_manifest
from specroute.zoo.corpus import build_corpus


def test_manifest_names_every_artifact(built_zoo):
    manifest = load_manifest(built_zoo)
    assert manifest["target"]["path"] == "target"
    kinds = {d["kind"] for d in manifest["drafters"]}
    assert kinds == {"model", "ngram"}
    families = {d["family"] for d in manifest["drafters"] if d["kind"] == "model"}
    assert families == {"llama", "gpt2"}
    for split, path in manifest["corpus"]["files"].items():
        assert (built_zoo / path).is_file(), split


def test_artifacts_load_with_auto_classes(built_zoo):
    manifest = load_manifest(built_zoo)
    tokenizer = AutoTokenizer.from_pretrained(built_zoo / manifest["tokenizer"])
    text = "def f(x):\n    return x  # héllo"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    for path in ["target"] + [d["path"] for d in manifest["drafters"] if d["path"]]:
        model = AutoModelForCausalLM.from_pretrained(built_zoo / path)
        assert model.config.vocab_size == len(tokenizer)
        assert AutoTokenizer.from_pretrained(built_zoo / path).get_vocab() == tokenizer.get_vocab()


def test_corpus_is_deterministic_and_splits_disjoint():
    a = build_corpus(["code", "prose"], seed=3, max_per_family=200)
    b = build_corpus(["code", "prose"], seed=3, max_per_family=200)
    assert a == b
    prompts = {split: {ex.prompt for ex in examples} for split, examples in a.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    assert {ex.task for ex in a["train"]} == {"code", "prose"}


def test_distillation_lowers_heldout_divergence(built_zoo):
    for drafter in load_manifest(built_zoo)["drafters"]:
        if drafter["kind"] == "model":
            assert drafter["heldout_divergence_after"] < drafter["heldout_divergence_before"], drafter["name"]


def test_build_resumes_without_redoing_stages(built_zoo):
    stages = sorted((built_zoo / ".stages").glob("*.json"))
    before = {p.name: p.read_text() for p in stages}
    build_zoo("tiny", built_zoo)
    after = {p.name: p.read_text() for p in sorted((built_zoo / ".stages").glob("*.json"))}
    assert before == after
    assert json.loads((built_zoo / "manifest.json").read_text())["preset"] == "tiny"


def test_prompts_end_at_a_token_boundary():
    """A prompt never ends in whitespace: in training, that whitespace would merge with the next
    line's indentation, and a bare trailing newline token only ever precedes end-of-text."""
    splits = build_corpus(["code", "prose"], seed=0, max_per_family=300)
    for ex in splits["test"] + splits["train"]:
        assert ex.prompt == ex.prompt.rstrip()
        assert ex.continuation.strip()


def test_a_zoo_refuses_another_preset(built_zoo):
    with pytest.raises(ValueError, match="another preset"):
        build_zoo("demo", built_zoo)


def test_all_six_families_build_deterministic_disjoint_splits():
    from specroute.zoo.corpus import FAMILIES
    families = ["math", "translation", "extraction", "structured"]
    assert set(families) | {"code", "prose"} == set(FAMILIES)
    a = build_corpus(families, seed=5, max_per_family=500)
    assert a == build_corpus(families, seed=5, max_per_family=500)
    for family in families:
        train = {ex.prompt for ex in a["train"] if ex.task == family}
        test = {ex.prompt for ex in a["test"] if ex.task == family}
        assert len(train) > 350 and test, family
        assert not train & test, family
    assert all(ex.prompt == ex.prompt.rstrip() for split in a.values() for ex in split)


def test_every_task_has_a_distilled_specialist(built_zoo):
    manifest = load_manifest(built_zoo)
    specialists = {d["task"]: d for d in manifest["drafters"] if d["kind"] == "model" and d["task"]}
    assert set(specialists) == set(manifest["corpus"]["families"])
    assert {d["family"] for d in specialists.values()} == {"llama", "gpt2"}
    assert {d["divergence"] for d in specialists.values()} == {"forward_kl", "reverse_kl", "tv"}
