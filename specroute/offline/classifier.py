"""Training the online prompt classifier (`router.classifier.TaskClassifier`) on detected tasks.

A multinomial logistic regression on the featuriser's vectors, trained on the cluster labels of
task detection. Its probabilities are calibrated by temperature scaling (Guo et al., 2017): one
temperature T, fitted to minimise the log loss of out-of-fold logits (3-fold cross-validation),
divides the logits before the softmax (T >= 1: see `fit_temperature`). A calibrated confidence is
what lets the router send unsure prompts to the generic drafter at a meaningful threshold.

This module knows nothing about clustering, drafters or serving; predicting is the classifier's own.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from router.classifier import TaskClassifier


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_temperature: float = 50.0) -> float:
    """The T in [1, max_temperature] minimising the mean negative log-likelihood of softmax(logits / T).

    T >= 1: calibration may soften the model, never sharpen it. On clusters that separate
    perfectly the log loss keeps falling as T falls, and a T near 0 would give every prompt,
    even one unlike any task, a confidence of 1.
    """
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, labels].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(0.0, np.log(max_temperature)), method="bounded").x))


def fit_classifier(featuriser, features, labels: np.ndarray, tasks: list[str], seed: int = 0,
                   C: float = 1.0) -> TaskClassifier:
    """`featuriser` is fitted already and `features` are its vectors of the training prompts;
    `tasks[label]` names cluster `label`."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(tasks))
    if (counts > 0).sum() < 2 or len(counts) != len(tasks) or counts.min() < 2:
        raise ValueError("the classifier needs at least two tasks with at least two prompts each")
    model = LogisticRegression(C=C, max_iter=2000)
    folds = StratifiedKFold(n_splits=int(min(3, counts.min())), shuffle=True, random_state=seed)
    logits = cross_val_predict(model, features, labels, cv=folds, method="decision_function")
    model.fit(features, labels)
    weights, bias = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(tasks) == 2:  # scikit-learn keeps one logit for two classes: the other is 0
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
        weights, bias = np.vstack([np.zeros_like(weights), weights]), np.concatenate([[0.0], bias])
    return TaskClassifier(featuriser, weights, bias, fit_temperature(logits, labels), tasks)
