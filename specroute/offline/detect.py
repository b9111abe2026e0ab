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
4. Name each cluster by the head-of-prompt terms with the highest mean TF-IDF in it.
5. Train the online classifier (`specroute.offline.classifier`) on the cluster labels.

`save_tasks` writes a versioned artifact directory: `tasks.json` (schema, version, featuriser,
the silhouette per k, each task's name, size and top terms), `classifier.joblib`, and
`samples.jsonl` (a few prompts per task, for drafter assignment). The artifact's layout and its
reader are the router's (`router.detect`). This module knows nothing about drafters, Redis or serving.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.decomposition import TruncatedSVD
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
    tasks = _name_clusters(X, labels, int(labels.max()) + 1, feats)
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


def _name_clusters(X, labels: np.ndarray, k: int, featuriser) -> list[dict]:
    first, terms = featuriser.name_terms()
    tasks, used = [], set()
    for label in range(k):
        rows = labels == label
        top: list[str] = []
        if terms:
            mean = np.asarray(X[rows][:, first: first + len(terms)].mean(axis=0)).ravel()
            for i in np.argsort(-mean):
                term = terms[i]
                if re.fullmatch(r"[a-z][a-z0-9_]+( [a-z][a-z0-9_]+)?", term) and term not in top:
                    top.append(term)
                if len(top) == 6:
                    break
        name = "-".join(t.replace(" ", "_") for t in top[:2]) or f"task{label}"
        name = re.sub(r"[^a-z0-9_-]", "", name) or f"task{label}"
        while name in used:
            name += f"-{label}"
        used.add(name)
        tasks.append({"label": label, "name": name, "size": int(rows.sum()), "top_terms": top})
    return tasks


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


