"""The distillation teacher: the target's top-k log-probabilities at the positions that predict
each continuation, rebuilt into proper distributions; the drafter's logits at those positions."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from specroute.zoo.teacher import Sample, TeacherCache, logits_at, pad_batch

SAMPLES = [Sample([5, 6, 7], [8, 9]), Sample([10], [11, 12, 13, 0]), Sample([3, 4, 5, 6, 7, 8], [9])]


@pytest.fixture(scope="module", params=["target", "gpt2_drafter"])
def model(request, tiny_zoo):
    return AutoModelForCausalLM.from_pretrained(getattr(tiny_zoo, request.param)).eval()


def _exact_logprobs(model, samples):
    rows = []
    with torch.no_grad():
        for s in samples:
            logits = model(input_ids=torch.tensor([s.ids])).logits[0]
            rows.append(torch.log_softmax(logits[list(s.predicting_positions())], -1))
    return torch.cat(rows)


def test_predicting_positions_are_those_before_each_continuation_token():
    assert list(SAMPLES[0].predicting_positions()) == [2, 3]
    ids, attention, predicting = pad_batch(SAMPLES, pad_id=0)
    assert ids.shape == attention.shape == predicting.shape == (3, 7)
    assert predicting.sum() == 2 + 4 + 1
    assert attention[1].tolist() == [1] * 5 + [0] * 2
    assert predicting[1].tolist() == [True] * 4 + [False] * 3


def test_logits_at_equal_the_full_forward(model):
    ids, attention, predicting = pad_batch(SAMPLES, pad_id=0)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).logits[predicting]
        assert torch.allclose(logits_at(model, ids, attention, predicting), full, atol=1e-5)


def test_topk_entries_are_exact_and_rows_are_distributions(model):
    cache = TeacherCache.build(model, SAMPLES, pad_id=0, top_k=8, batch_size=2)
    dense = cache.dense(list(range(len(SAMPLES))))
    exact = _exact_logprobs(model, SAMPLES)
    assert dense.shape == exact.shape
    assert torch.allclose(dense.exp().sum(-1), torch.ones(len(dense)), atol=1e-3)
    top = exact.topk(8, -1)
    assert torch.allclose(dense.gather(-1, top.indices).exp(), top.values.exp(), atol=1e-4)  # float16 storage
    # Every other token gets an even share of the leftover mass.
    vocab = dense.shape[-1]
    rarest = exact.argmin(-1, keepdim=True)
    share = ((1 - top.values.exp().sum(-1, keepdim=True)) / (vocab - 8)).log()
    assert torch.allclose(dense.gather(-1, rarest).exp(), share.exp(), atol=1e-5)


def test_with_the_whole_vocabulary_the_cache_is_exact(model):
    vocab = model.get_output_embeddings().weight.shape[0]
    cache = TeacherCache.build(model, SAMPLES, pad_id=0, top_k=vocab)
    # Log-probabilities are stored as float16: compare the probabilities they stand for.
    assert torch.allclose(cache.dense([0, 1, 2]).exp(), _exact_logprobs(model, SAMPLES).exp(), atol=1e-4)


def test_state_round_trip_merge_and_subsets(model, tmp_path):
    cache = TeacherCache.build(model, SAMPLES, pad_id=0, top_k=4)
    torch.save(cache.state(), tmp_path / "t.pt")
    loaded = TeacherCache.from_state(torch.load(tmp_path / "t.pt", weights_only=True))
    assert loaded.samples == cache.samples
    assert torch.equal(loaded.dense([2, 0]), cache.dense([2, 0]))
    merged = TeacherCache.merge([cache, loaded])
    assert len(merged) == 6
    assert torch.equal(merged.dense([4]), cache.dense([1]))


def test_samples_without_a_continuation_are_dropped_and_none_left_is_an_error(model):
    assert len(TeacherCache.build(model, SAMPLES + [Sample([1, 2], [])], pad_id=0, top_k=4)) == 3
    with pytest.raises(ValueError, match="no sample has a continuation"):
        TeacherCache.build(model, [Sample([1, 2], [])], pad_id=0)
