"""The feature drafter's network and directory: files, tree attention, PosS specialists, FSPAD options."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from core.tree_mask import tree_attention_mask, tree_position_ids
from drafter_service.feature_model import CONFIG_FILE, WEIGHTS_FILE, FeatureDraftConfig, FeatureDraftModel
from tests.tiny_models import build_gpt2, build_llama, build_tokenizer

HIDDEN = 32
VOCAB = 512


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature_targets")
    tokenizer = build_tokenizer(root / "tok", vocab_size=VOCAB)
    dirs = {"llama": root / "llama", "gpt2": root / "gpt2", "small_vocab": root / "small_vocab"}
    build_llama(dirs["llama"], VOCAB, HIDDEN, 2, seed=0)
    build_gpt2(dirs["gpt2"], VOCAB, HIDDEN, 2, seed=0)
    build_llama(dirs["small_vocab"], 256, HIDDEN, 2, seed=0)
    for d in dirs.values():
        tokenizer.save_pretrained(d)
    return dirs


def _randomise(model: FeatureDraftModel, seed: int) -> FeatureDraftModel:
    """Gives every own weight (the zero-initialised FSPAD gate included) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("target_parts."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _inputs(n: int, seed: int, start: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, HIDDEN, generator=gen), torch.randint(0, VOCAB, (n,), generator=gen),
            torch.arange(start, start + n))


def test_round_trip_keeps_outputs_and_saves_no_target_weight(targets, tmp_path):
    options = FeatureDraftConfig(position_specialists=2, feature_sampling=True, partial_alignment=0.5, train_depth=4)
    model = _randomise(FeatureDraftModel.from_target(targets["llama"], options, seed=3), seed=4)
    model.save(tmp_path / "drafter")
    loaded = FeatureDraftModel.from_dir(tmp_path / "drafter")
    assert loaded.config == options
    for step in (0, 2):
        features, tokens, positions = _inputs(5, seed=step)
        a = model.step(features, tokens, positions, model.new_cache(), None, step)
        b = loaded.step(features, tokens, positions, loaded.new_cache(), None, step)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    record = json.loads((tmp_path / "drafter" / CONFIG_FILE).read_text())
    assert record["kind"] == "feature" and record["feature_layer"] == -1 and not record["target"].startswith("/")
    assert record["hidden"] == HIDDEN and record["vocab_size"] == VOCAB and record["num_layers_of_target"] == 2
    weights = load_file(tmp_path / "drafter" / WEIGHTS_FILE)
    assert set(weights) == set(model.own_state_dict())
    assert not any(VOCAB in w.shape for w in weights.values())  # no embedding, no head
    assert (tmp_path / "drafter" / "tokenizer.json").is_file()


@pytest.mark.parametrize("wrong, message", [("gpt2", "family"), ("small_vocab", "vocab_size"), ("nowhere", "missing")])
def test_a_wrong_target_is_a_clear_error(targets, tmp_path, wrong, message):
    FeatureDraftModel.from_target(targets["llama"], seed=0).save(tmp_path / "drafter")
    path = tmp_path / "drafter" / CONFIG_FILE
    record = json.loads(path.read_text())
    record["target"] = str(targets.get(wrong, tmp_path / wrong))
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        FeatureDraftModel.from_dir(tmp_path / "drafter")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_tree_forward_equals_each_node_run_as_a_chain(targets, family):
    model = _randomise(FeatureDraftModel.from_target(targets[family], FeatureDraftConfig(feature_sampling=True)), 1)
    context = _inputs(6, seed=10)
    parents = [-1, 0, 0, 1, 2, 4]
    features, tokens, _ = _inputs(len(parents), seed=11)
    positions = tree_position_ids(parents, 7)[0]
    cache = model.new_cache()
    model.step(*context, cache, None, 0)
    _, tree_logits = model.step(features, tokens, positions, cache, tree_attention_mask(parents, 6), 1)
    assert cache.get_seq_length() == 6 + len(parents)
    for node in range(len(parents)):
        chain = [node]
        while parents[chain[0]] != -1:
            chain.insert(0, parents[chain[0]])
        cache = model.new_cache()
        model.step(*context, cache, None, 0)
        _, chain_logits = model.step(features[chain], tokens[chain], positions[chain], cache, None, 1)
        torch.testing.assert_close(tree_logits[node], chain_logits[-1], atol=1e-5, rtol=1e-5)


def test_specialists_follow_the_step_and_only_their_weights_change_it(targets):
    def plan(n: int, depth: int, steps: int) -> list[int]:
        model = FeatureDraftModel.from_target(targets["llama"], FeatureDraftConfig(position_specialists=n,
                                                                                   train_depth=depth))
        return [model.specialist_for(d) for d in range(steps)]

    assert plan(0, 4, 6) == [0] * 6
    assert plan(2, 5, 8) == [0, 0, 1, 1, 2, 2, 2, 2]
    assert plan(1, 4, 6) == [0, 1, 2, 3, 3, 3]
    model = _randomise(FeatureDraftModel.from_target(targets["llama"], FeatureDraftConfig(
        position_specialists=2, train_depth=5)), seed=2)
    assert len(model.layers) == 3
    inputs = _inputs(4, seed=5)
    for step in range(6):
        base = model.step(*inputs, model.new_cache(), None, step)[1]
        for j in range(len(model.layers)):
            changed = copy.deepcopy(model)
            with torch.no_grad():
                changed.layers[j].mlp.down_proj.weight.add_(0.5)
            out = changed.step(*inputs, changed.new_cache(), None, step)[1]
            assert (not torch.equal(out, base)) == (j == model.specialist_for(step)), (step, j)


def test_every_specialist_shares_one_cache_slot(targets):
    model = _randomise(FeatureDraftModel.from_target(targets["llama"], FeatureDraftConfig(position_specialists=1)), 6)
    cache = model.new_cache()
    model.step(*_inputs(4, seed=1), cache, None, 0)
    model.step(*_inputs(1, seed=2, start=5), cache, None, 1)
    model.step(*_inputs(1, seed=3, start=6), cache, None, 2)
    assert len(cache.layers) == 1 and cache.get_seq_length() == 6


def test_feature_sampling_is_the_token_gate_and_starts_as_eagle(targets):
    plain = FeatureDraftModel.from_target(targets["llama"], FeatureDraftConfig(), seed=7)
    gated = FeatureDraftModel.from_target(targets["llama"], FeatureDraftConfig(feature_sampling=True), seed=7)
    features, tokens, positions = _inputs(5, seed=8)
    # A new gate is zero: exactly EAGLE.
    assert torch.equal(plain.step(features, tokens, positions, plain.new_cache(), None, 0)[1],
                       gated.step(features, tokens, positions, gated.new_cache(), None, 0)[1])
    with torch.no_grad():
        gated.sampler.weight.normal_(0, 0.5)
        sampled = features * (1 + torch.tanh(gated.sampler(gated.embed(tokens, positions))))
    out = gated.step(features, tokens, positions, gated.new_cache(), None, 0)[1]
    assert not torch.allclose(out, plain.step(features, tokens, positions, plain.new_cache(), None, 0)[1])
    torch.testing.assert_close(out, plain.step(sampled, tokens, positions, plain.new_cache(), None, 0)[1])


def test_partial_alignment_names_the_regressed_dimensions(targets):
    def dims(share: float) -> int:
        options = FeatureDraftConfig(partial_alignment=share)
        return FeatureDraftModel.from_target(targets["llama"], options).aligned_dims()

    assert dims(0.0) == HIDDEN and dims(0.5) == HIDDEN // 2 and dims(1.0) == HIDDEN and dims(0.3) == 10
