"""The online prompt classifier: which detected task a prompt belongs to, with a confidence.

A multinomial logistic regression's weights on the featuriser's vectors and one calibration
temperature T: the confidence is `softmax(logits / T)`. Training it (the regression and the
temperature scaling) is offline, in `specroute.offline.classifier`; this class only predicts.

`predict` is the serving path and stays well under a millisecond: the featuriser's `sparse_row`
(when it has one) and one small dense product, `softmax((W[:, cols] @ values + b) / T)`, with no
scikit-learn call. `predict_many` goes through scikit-learn and gives the same numbers (tested).
This module knows nothing about training, drafters or Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax


@dataclass(frozen=True)
class Prediction:
    task: str
    confidence: float


class TaskClassifier:
    """Predicts a prompt's task from a fitted featuriser, weights [tasks, features], bias [tasks] and T."""

    def __init__(self, featuriser, weights: np.ndarray, bias: np.ndarray, temperature: float, tasks: list[str]):
        self.featuriser = featuriser
        self.weights = weights  # [tasks, features]
        self.bias = bias  # [tasks]
        self.temperature = temperature
        self.tasks = tasks  # tasks[label] is the name of cluster `label`

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature, axis=-1)

    def predict_many(self, prompts: list[str]) -> list[Prediction]:
        features = self.featuriser.transform(prompts)
        probabilities = self._probabilities(np.asarray(features @ self.weights.T) + self.bias)
        best = probabilities.argmax(axis=1)
        return [Prediction(self.tasks[i], float(row[i])) for i, row in zip(best, probabilities)]

    def predict(self, prompt: str) -> Prediction:
        if hasattr(self.featuriser, "sparse_row"):
            columns, values = self.featuriser.sparse_row(prompt)
            logits = self.weights[:, columns] @ values + self.bias
        else:
            logits = self.weights @ np.asarray(self.featuriser.transform([prompt]))[0] + self.bias
        probabilities = self._probabilities(logits)
        best = int(probabilities.argmax())
        return Prediction(self.tasks[best], float(probabilities[best]))
