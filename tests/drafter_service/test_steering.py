"""SD² steering maps: zero at start, the bias where the paper puts it, offsets over [1, k]."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from drafter_service.steering import (SteeringHooks, SteeringModule, default_layers, offset_biases,
                                      sample_offsets)
from specroute.zoo.steer import SteeredModel
from specroute.zoo.teacher import Sample, logits_at, pad_batch

TARGET_HIDDEN = 24


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(params=["llama", "gpt2"])
def drafter(request, tiny_zoo):
    return _load(tiny_zoo.llama_drafter if request.param == "llama" else tiny_zoo.gpt2_drafter)


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    samples = [Sample(torch.randint(1, vocab, (5,), generator=g).tolist(),
                      torch.randint(1, vocab, (n,), generator=g).tolist()) for n in (7, 4)]
    return pad_batch(samples, 0)


def test_a_new_steering_leaves_the_drafter_unchanged(drafter, tiny_zoo):
    ids, attention, predicting = _batch(tiny_zoo.vocab_size)
    with torch.no_grad():
        plain = logits_at(drafter, ids, attention, predicting)
        steered = SteeredModel.around(drafter, TARGET_HIDDEN)
        states = torch.randn(*ids.shape, 3, TARGET_HIDDEN)
        offsets = sample_offsets(ids.shape[1], 4, batch=ids.shape[0])
        assert torch.equal(steered.logits(ids, attention, predicting, states, offsets), plain)


def test_w_hml_starts_as_the_sum_of_the_three_states():
    module = SteeringModule(TARGET_HIDDEN, n_layers=2, d_ff=8)
    states = torch.randn(5, 3, TARGET_HIDDEN)
    assert torch.allclose(module.hml(states.flatten(-2)), states.sum(-2), atol=1e-6)
    assert module(states).shape == (5, 2, 8) and not module(states).any()


def test_the_bias_enters_each_layer_before_the_activation(drafter):
    """Llama: down((W_u a + b) * act(W_g a)); GPT-2: c_proj(act(c_fc(a) + b)), layer by layer."""
    hooks = SteeringHooks(drafter)
    bias = torch.randn(hooks.n_layers, hooks.d_ff)
    seen = {}
    layers = drafter.model.layers if hasattr(drafter, "model") else drafter.transformer.h
    handles = [layer.mlp.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0], out)))
               for i, layer in enumerate(layers)]
    try:
        with torch.no_grad(), hooks.steer(bias):
            drafter(input_ids=torch.tensor([[3, 5, 7, 9]]))
    finally:
        for h in handles:
            h.remove()
        hooks.remove()
    for i, layer in enumerate(layers):
        a, out = seen[i]
        mlp = layer.mlp
        with torch.no_grad():
            if hasattr(mlp, "up_proj"):
                expected = mlp.down_proj((mlp.up_proj(a) + bias[i]) * mlp.act_fn(mlp.gate_proj(a)))
            else:
                expected = mlp.c_proj(mlp.act(mlp.c_fc(a) + bias[i]))
        assert torch.allclose(out, expected, atol=1e-5), f"layer {i}"
        assert not torch.allclose(out, mlp(a), atol=1e-3), "the bias must change the layer's output"


def test_the_bias_is_per_thread(tiny_zoo):
    """Sessions sharing one model in a threaded server never see each other's bias."""
    model = _load(tiny_zoo.llama_drafter)
    hooks = SteeringHooks(model)
    ids = torch.tensor([[3, 5, 7]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        seen = {}
        with hooks.steer(torch.ones(hooks.n_layers, hooks.d_ff)):
            thread = threading.Thread(target=lambda: seen.__setitem__("other", model(input_ids=ids).logits))
            thread.start()
            thread.join()
            steered = model(input_ids=ids).logits
    assert torch.equal(seen["other"], plain) and not torch.allclose(steered, plain)


def test_offsets_cover_one_to_k_and_pick_the_earlier_state():
    offsets = sample_offsets(4000, 8, torch.Generator().manual_seed(0))
    assert set(offsets.unique().tolist()) == set(range(1, 9))
    biases = torch.arange(1, 7, dtype=torch.float32).view(1, 6, 1, 1).expand(1, 6, 2, 3)  # position t's: t + 1
    chosen = offset_biases(biases, torch.tensor([[1, 1, 3, 2, 1, 5]]))
    # position t takes the bias computed at t - e: none, 0, none, 1, 3, 0 (none where t - e < 0)
    assert chosen[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0, 2.0, 4.0, 1.0]


def test_default_layers_spread_over_the_target():
    assert default_layers(32) == (3, 16, 29)
    assert default_layers(16) == (2, 8, 13)
    assert default_layers(2) == (0, 1, 2)
    with pytest.raises(ValueError, match="three distinct"):
        default_layers(1)


def test_a_saved_steering_must_fit_the_drafter(tmp_path):
    SteeringModule(TARGET_HIDDEN, 2, 8).save(tmp_path)
    assert SteeringModule.load(tmp_path, TARGET_HIDDEN, 2, 8).d_ff == 8
    with pytest.raises(ValueError, match="shapes"):
        SteeringModule.load(tmp_path, TARGET_HIDDEN, 2, 16)
