"""Automatic task detection: clusters past prompts into tasks, names them, and saves the result.

TaskSpec's first step: tasks are found in traffic, not labelled by hand.

1. Featurise every prompt (`router.features`, TF-IDF of head, tail and whole by default); at most
   `max_prompts` of them, a seeded sample, are clustered.
2. Reduce sparse features to `svd_dims` dimensions (latent semantic analysis: TruncatedSVD, then
   L2 normalisation).
3. Cluster hierarchically (Ward, 1963) and cut the dendrogram where, within the range of k, the
   jump between successive merge heights is largest (a fusion-level stopping rule in the spirit
   of Mojena, 1977): tasks are the groups that stay apart longest. The silhouette of every cut
   (Rousseeuw, 1987) is kept as a diagnostic; it keeps rising as tasks split into their
   templates (word problems about prices vs. distances), so it does not choose k here.
4. Name each cluster by its most distinctive words: in a larger share of its prompts than of
   the others, leaving out stop words and code keywords (`_name_clusters`).
5. Train the online classifier (`specroute.offline.classifier`) on the cluster labels.

`save_tasks` writes a versioned artifact directory: `tasks.json` (schema, version, featuriser,
the silhouette per k, each task's name, size and top terms), `classifier.joblib`, and
`samples.jsonl` (a few prompts per task, for drafter assignment). The artifact's layout and its
reader are the router's (`router.detect`). This module knows nothing about drafters, Redis or serving.
"""

from __future__ import annotations

import hashlib
import json
import keyword
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize

from router.classifier import TaskClassifier
from router.detect import CLASSIFIER_FILE, SAMPLES_FILE, SCHEMA, TASKS_FILE
from router.features import create_featuriser
from specroute.offline.classifier import fit_classifier


@dataclass
class Detection:
    tasks: list[dict]  # per label: name, size, top_terms
    labels: np.ndarray  # the cluster of every prompt
    silhouette: dict[int, float]
    classifier: TaskClassifier
    meta: dict  # featuriser, seed, counts, the merge gap per k, version
    prompts: list[str]  # the prompts clustered (a sample when there were more than max_prompts)

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.tasks]


def detect_tasks(prompts: list[str], featuriser: str = "tfidf", featuriser_options: dict | None = None,
                 k_min: int = 2, k_max: int = 12, seed: int = 0, svd_dims: int = 20,
                 max_prompts: int = 5000) -> Detection:
    prompts = [p for p in prompts if p.strip()]
    if not 2 <= k_min <= k_max:
        raise ValueError(f"need 2 <= k_min <= k_max, got {k_min}, {k_max}")
    if len(prompts) < 2 * k_min:
        raise ValueError(f"need at least {2 * k_min} non-empty prompts to detect tasks, got {len(prompts)}")
    if len(prompts) > max_prompts:
        prompts = [prompts[i] for i in sorted(np.random.default_rng(seed).choice(len(prompts), max_prompts,
                                                                               replace=False))]
    feats = create_featuriser(featuriser, **(featuriser_options or {}))
    X = feats.fit_transform(prompts)
    Z = _reduce(X, svd_dims, seed)
    k_max = min(k_max, len(prompts) // 2)
    tree = linkage(Z, method="ward")
    heights = tree[:, 2]  # ascending; the last merge joins 2 clusters into 1
    gaps, silhouette = {}, {}
    for k in range(k_min, k_max + 1):
        gaps[k] = float(heights[-(k - 1)] / max(heights[-k], 1e-12))  # joining k into k-1 vs. making k
        labels = fcluster(tree, k, criterion="maxclust") - 1
        if len(set(labels.tolist())) > 1:
            silhouette[k] = float(silhouette_score(Z, labels, sample_size=min(len(Z), 3000), random_state=seed))
    best_k = max(gaps, key=gaps.get)
    labels = fcluster(tree, best_k, criterion="maxclust") - 1
    tasks = _name_clusters(prompts, labels, int(labels.max()) + 1)
    classifier = fit_classifier(feats, X, labels, [t["name"] for t in tasks], seed)
    digest = hashlib.sha256("\n".join(prompts).encode() + f"{featuriser}{seed}{k_min}{k_max}".encode()).hexdigest()[:8]
    meta = {"featuriser": featuriser, "featuriser_options": featuriser_options or {}, "seed": seed,
            "num_prompts": len(prompts), "k_range": [k_min, k_max], "svd_dims": svd_dims,
            "merge_gap": {str(k): v for k, v in gaps.items()},
            "version": f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{digest}"}
    return Detection(tasks, labels, silhouette, classifier, meta, prompts)


def _reduce(X, dims: int, seed: int) -> np.ndarray:
    if not sp.issparse(X):
        return normalize(np.asarray(X, dtype=np.float32))
    dims = max(1, min(dims, X.shape[1] - 1, X.shape[0] - 1))
    return normalize(TruncatedSVD(dims, random_state=seed).fit_transform(X))


# Words that name no task: English stop words, Python's keywords and the words every Python
# definition repeats. A name is drawn from what sets a cluster apart, not from what all prompts share.
NAME_STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | frozenset(w.lower() for w in keyword.kwlist) | frozenset(
    {"self", "cls", "args", "kwargs", "none", "true", "false", "def", "return", "returns", "str", "int", "obj"})
NAME_WORD = r"\b[A-Za-z]{3,}\b"  # words of three or more ASCII letters; identifiers with digits or _ are not names
NAME_TERMS = 2  # words joined into a task's name
MIN_SHARE = 0.05  # a name word appears in at least this share of the cluster's prompts


def _name_clusters(prompts: list[str], labels: np.ndarray, k: int) -> list[dict]:
    """Names each cluster by its most distinctive words (`_distinctive_words`), the first
    NAME_TERMS joined by '-'. Names are unique: a name another cluster already has gets the
    cluster's next distinctive word, then its label. Deterministic for the same clustering."""
    words = _distinctive_words(prompts, labels, k)
    tasks, used = [], set()
    for label in range(k):
        name = _unique_name(words[label], used, label)
        used.add(name)
        tasks.append({"label": label, "name": name, "size": int((labels == label).sum()),
                      "top_terms": words[label][:6]})
    return tasks


def _distinctive_words(prompts: list[str], labels: np.ndarray, k: int) -> list[list[str]]:
    """Per cluster, its words most distinctive first: the share of its prompts that contain the
    word minus the share of the other prompts that do, among words in at least MIN_SHARE of its
    prompts, leaving out stop words and code keywords (`NAME_STOP_WORDS`). A person reads a name
    made of them as what the cluster's prompts are about, which the clustering's own features
    (punctuation, character n-grams, or an embedding's dimensions) need not say."""
    vectoriser = CountVectorizer(token_pattern=NAME_WORD, stop_words=sorted(NAME_STOP_WORDS), binary=True)
    try:
        present = vectoriser.fit_transform(prompts).tocsc()
    except ValueError:  # no word at all: the names fall back to the labels
        return [[] for _ in range(k)]
    vocabulary = vectoriser.get_feature_names_out()
    out = []
    for label in range(k):
        rows = labels == label
        inside = np.asarray(present[rows].mean(axis=0)).ravel()
        outside = np.asarray(present[~rows].mean(axis=0)).ravel() if (~rows).any() else np.zeros_like(inside)
        score = np.where(inside >= MIN_SHARE, inside - outside, -np.inf)
        order = np.argsort(-score, kind="stable")
        out.append([str(vocabulary[i]) for i in order if score[i] > 0])
    return out


def _unique_name(words: list[str], used: set[str], label: int) -> str:
    name = "-".join(words[:NAME_TERMS]) or f"task{label}"
    for extra in words[NAME_TERMS:]:  # taken: add the cluster's next distinctive word
        if name not in used:
            break
        name = f"{name}-{extra}"
    while name in used:
        name += f"-{label}"
    return name


def save_tasks(detection: Detection, out: Path, samples_per_task: int = 32) -> Path:
    """Writes the artifact directory; returns its tasks.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = detection.prompts
    record = {"schema": SCHEMA, **detection.meta, "k": len(detection.tasks),
              "silhouette": {str(k): v for k, v in detection.silhouette.items()}, "tasks": detection.tasks}
    joblib.dump(detection.classifier, out / CLASSIFIER_FILE)
    with open(out / SAMPLES_FILE, "w") as f:
        for task in detection.tasks:
            chosen = [p for p, label in zip(prompts, detection.labels) if label == task["label"]][:samples_per_task]
            for p in chosen:
                f.write(json.dumps({"task": task["name"], "prompt": p}) + "\n")
    (out / TASKS_FILE).write_text(json.dumps(record, indent=2))
    return out / TASKS_FILE


