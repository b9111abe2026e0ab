"""The online classifier: accurate on held-out prompts, calibrated confidences, long prompts clipped."""

import statistics

import pytest

from router.features import HEAD_CHARS, TAIL_CHARS, clip


def test_accuracy_on_heldout_prompts(detection, corpus):
    """Each detected task stands for the family most of its training prompts came from."""
    train = corpus["train"]
    votes = {}
    for label, ex in zip(detection.labels, train):
        votes.setdefault(detection.names[label], []).append(ex.task)
    family_of = {name: max(set(v), key=v.count) for name, v in votes.items()}
    test = corpus["test"]
    predicted = detection.classifier.predict_many([ex.prompt for ex in test])
    accuracy = statistics.mean(family_of[p.task] == ex.task for p, ex in zip(predicted, test))
    assert accuracy >= 0.95, accuracy


def test_confidences_are_probabilities_and_high_on_clear_prompts(detection, corpus):
    predicted = detection.classifier.predict_many([ex.prompt for ex in corpus["test"]])
    assert all(0 < p.confidence <= 1 for p in predicted)
    assert statistics.median(p.confidence for p in predicted) > 0.8
    gibberish = detection.classifier.predict("zq xv")
    assert gibberish.confidence < statistics.median(p.confidence for p in predicted)


def test_single_and_batch_prediction_agree(detection, corpus):
    prompts = [ex.prompt for ex in corpus["test"][:20]]
    batch, single = detection.classifier.predict_many(prompts), [detection.classifier.predict(p) for p in prompts]
    assert [p.task for p in batch] == [p.task for p in single]


def test_long_prompts_are_clipped_to_head_and_tail():
    text = "a" * HEAD_CHARS + "b" * 5000 + "c" * TAIL_CHARS
    clipped = clip(text)
    assert clipped == "a" * HEAD_CHARS + "\n" + "c" * TAIL_CHARS
    assert clip("short") == "short"


def test_the_serving_path_equals_the_scikit_learn_path(detection, corpus):
    """`predict` skips scikit-learn (sparse_row and one product) and must agree with it."""
    import numpy as np
    feats = detection.classifier.featuriser
    for ex in corpus["test"][:40] + corpus["train"][:5]:
        columns, values = feats.sparse_row(ex.prompt)
        row = feats.transform([ex.prompt]).toarray()[0]
        dense = np.zeros_like(row, dtype=np.float64)
        dense[columns] = values
        assert np.allclose(dense, row, atol=1e-6)
        fast, slow = detection.classifier.predict(ex.prompt), detection.classifier.predict_many([ex.prompt])[0]
        assert fast.task == slow.task and abs(fast.confidence - slow.confidence) < 1e-5


def test_temperature_scaling_fits_the_temperature_that_minimises_log_loss():
    import numpy as np
    from specroute.offline.classifier import fit_temperature
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 2000)
    true_logits = rng.normal(size=(2000, 3))
    true_logits[np.arange(2000), labels] += 2.0
    # Labels drawn from softmax(true_logits) would give T = 1; logits scaled up 3x need T near 3.
    labels = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    assert abs(fit_temperature(3 * true_logits, labels) - 3.0) < 0.5
    assert abs(fit_temperature(true_logits, labels) - 1.0) < 0.2
    assert fit_temperature(true_logits / 3, labels) == pytest.approx(1.0, abs=1e-3)  # never sharpens
