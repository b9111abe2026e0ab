"""Training a feature drafter: the state cache, the unrolled forward's match with inference, learning, fine-tuning."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from core.hf import forward_tree_states
from drafter_service.feature_model import FeatureDraftConfig, FeatureDraftModel
from specroute.zoo.feature import (FeatureStateCache, FeatureTrainSpec, feature_term, heldout_report,
                                   train_feature_drafter, unrolled_forward)
from specroute.zoo.teacher import Sample
from tests.tiny_models import build_gpt2, build_llama, build_tokenizer

HIDDEN = 32
VOCAB = 512


def _samples(target, count: int, seed: int) -> list[Sample]:
    """Random 4-token prompts and 20 tokens sampled from the target after each."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    prompts = torch.randint(1, VOCAB, (count, 4), generator=gen)
    with torch.no_grad():
        out = target.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=0,
                              max_new_tokens=20, min_new_tokens=20, pad_token_id=0)
    return [Sample(row[:4].tolist(), row[4:].tolist()) for row in out]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("feature_training")
    tokenizer = build_tokenizer(root / "tok", vocab_size=VOCAB)
    found = {}
    # A one-layer Llama (its next feature is learnable in a few steps) and a two-layer GPT-2.
    for family, build, layers in (("llama", build_llama, 1), ("gpt2", build_gpt2, 2)):
        build(root / family, VOCAB, HIDDEN, layers, seed=0, sharpen=20.0)
        tokenizer.save_pretrained(root / family)
        target = AutoModelForCausalLM.from_pretrained(root / family).eval()
        states = FeatureStateCache.build(target, _samples(target, 40, 1), progress=False)
        found[family] = (root / family, target, states)
    return found


def test_the_cache_keeps_the_last_layer_before_the_norm(zoo, tmp_path):
    path, target, cache = zoo["llama"]
    sample = cache.samples[0]
    _, states = forward_tree_states(target, sample.ids, list(range(-1, len(sample.ids) - 1)),
                                    DynamicCache(), (1,))
    torch.testing.assert_close(cache.features[0].float(), states[:, 0].float(), atol=1e-2, rtol=1e-2)
    assert cache.features[0].dtype == torch.float16 and cache.features[0].shape == (len(sample.ids), HIDDEN)
    cache.save(tmp_path / "states.pt")
    loaded = FeatureStateCache.load(tmp_path / "states.pt")
    assert loaded.samples == cache.samples and all(torch.equal(a, b) for a, b in zip(loaded.features, cache.features))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_unrolled_forward_equals_inference_step_by_step(zoo, family):
    path, _, cache = zoo[family]
    options = FeatureDraftConfig(position_specialists=1, feature_sampling=True, train_depth=3)
    model = FeatureDraftModel.from_target(path, options, seed=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("target_parts."):
                p.add_(torch.randn_like(p) * 0.1)
    features, ids, _ = cache.batch([0, 1], "cpu")
    outputs = unrolled_forward(model.eval(), features, ids, depth=3)
    for t in (0, 3, 9):
        kv = model.new_cache()
        g, logits = model.step(features[0, : t + 1], ids[0, 1: t + 2], torch.arange(1, t + 2), kv, None, 0)
        torch.testing.assert_close(outputs[0][1][0, t].float(), logits[-1], atol=1e-4, rtol=1e-4)
        for d in (1, 2):
            position = t + d + 1
            g, logits = model.step(g[-1:], ids[0, position: position + 1], torch.tensor([position]), kv, None, d)
            torch.testing.assert_close(outputs[d][1][0, t].float(), logits[-1], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(outputs[d][0][0, t].float(), g[-1], atol=1e-4, rtol=1e-4)


def test_training_lowers_the_loss_and_raises_agreement_then_fine_tunes_from_a_directory(zoo, tmp_path):
    path, _, cache = zoo["llama"]
    train = FeatureStateCache(cache.samples[:32], cache.features[:32])
    heldout = FeatureStateCache(cache.samples[32:], cache.features[32:])
    model = FeatureDraftModel.from_target(path, FeatureDraftConfig(position_specialists=1, train_depth=2), seed=0)
    before = heldout_report(model, heldout, depth=2)
    spec = FeatureTrainSpec(steps=30, batch_size=16, lr=3e-2, train_depth=2)
    result = train_feature_drafter(model, train, spec, seed=0, progress=False)
    after = heldout_report(model, heldout, depth=2)
    losses = result["losses"]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert after["agreement"][0] >= before["agreement"][0] + 0.02 and after["ce"][0] < before["ce"][0]
    assert after["positions"][0] > after["positions"][1] > 0
    # The zoo's specialist path: a generic drafter saved, loaded, fine-tuned further.
    model.save(tmp_path / "generic")
    specialist = FeatureDraftModel.from_dir(tmp_path / "generic")
    start = {k: v.clone() for k, v in specialist.own_state_dict().items()}
    again = train_feature_drafter(specialist, train, spec.model_copy(update={"steps": 5}), seed=1, progress=False)
    assert all(torch.isfinite(torch.tensor(again["losses"])))
    assert any(not torch.equal(start[k], v) for k, v in specialist.own_state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(model.target_parts.parameters(), specialist.target_parts.parameters()))


def test_partial_alignment_regresses_only_the_aligned_half(zoo):
    path, _, _ = zoo["llama"]
    half = FeatureDraftModel.from_target(path, FeatureDraftConfig(partial_alignment=0.5))
    whole = FeatureDraftModel.from_target(path, FeatureDraftConfig())
    gen = torch.Generator().manual_seed(0)
    predicted, target = torch.randn(2, 5, HIDDEN, generator=gen), torch.randn(2, 5, HIDDEN, generator=gen)
    valid = torch.ones(2, 5, dtype=torch.bool)
    free_changed, aligned_changed = target.clone(), target.clone()
    free_changed[..., HIDDEN // 2:] += 3.0
    aligned_changed[..., : HIDDEN // 2] += 3.0
    base = feature_term(half, predicted, target, valid)
    assert torch.equal(feature_term(half, predicted, free_changed, valid), base)
    assert feature_term(half, predicted, aligned_changed, valid) > base
    assert feature_term(whole, predicted, free_changed, valid) > feature_term(whole, predicted, target, valid)
