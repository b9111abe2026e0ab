"""Prompt featurisers: text -> vectors, for task detection and the online classifier.

- `tfidf` (the default): TF-IDF (scikit-learn, sublinear term frequencies) over three views of a
  prompt: its head and its tail (the first and last `edge_chars` characters, as word 1-2-grams
  and character 3-5-grams), and the whole prompt, clipped (word 1-2-grams, down-weighted). A
  task shows most in how its prompts begin and end (an instruction, "Context:", a signature, a
  trailing question) while the middle carries the topic, which tasks share: the prose and
  extraction prompts of the zoo quote the same documentation. Terms in fewer than `min_df` of
  the prompts are dropped, so rare topical words do not split tasks.
- `embedding` (a plug-in): a sentence-embedding model from a local directory, used only where
  `sentence-transformers` and the model are installed; nothing is downloaded.

Featurisers register by name in `FEATURISERS` and offer `fit`, `transform` and `fit_transform`;
the TF-IDF one also has `sparse_row`, the same features of one prompt without scikit-learn's per-call
overhead (the classifier's serving path). The cost does not grow with the prompt: the whole view
is clipped to its head and tail.
This module knows nothing about clusters, classifiers or drafters.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

HEAD_CHARS = 768
TAIL_CHARS = 256
WORDS = r"(?u)\b\w+\b|[^\w\s]"


def clip(text: str, head: int = HEAD_CHARS, tail: int = TAIL_CHARS) -> str:
    """The first `head` and last `tail` characters of a long text."""
    return text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]


def _head(text: str, chars: int) -> str:
    return text[:chars].lower()


def _tail(text: str, chars: int) -> str:
    return text[-chars:].lower()


def _whole(text: str) -> str:
    return clip(text).lower()


class PromptTfidf:
    """TF-IDF of a prompt's head, tail and (down-weighted) whole text, as one sparse matrix."""

    def __init__(self, edge_chars: int = 96, min_df: float = 0.01, whole_weight: float = 0.5):
        self.edge_chars, self.min_df, self.whole_weight = edge_chars, min_df, whole_weight
        head, tail = partial(_head, chars=edge_chars), partial(_tail, chars=edge_chars)
        self.blocks: list[tuple[str, TfidfVectorizer, float]] = [
            ("head words", self._words(head), 1.0),
            ("head chars", self._chars(head), 1.0),
            ("tail words", self._words(tail), 1.0),
            ("tail chars", self._chars(tail), 1.0),
            ("whole words", self._words(_whole), whole_weight),
        ]

    def _words(self, view) -> TfidfVectorizer:
        return TfidfVectorizer(analyzer="word", token_pattern=WORDS, ngram_range=(1, 2), sublinear_tf=True,
                               min_df=self.min_df, preprocessor=view, dtype=np.float32)

    def _chars(self, view) -> TfidfVectorizer:
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=self.min_df,
                               preprocessor=view, dtype=np.float32)

    def fit(self, texts: list[str], y=None) -> "PromptTfidf":
        for _, vectoriser, _ in self.blocks:
            vectoriser.fit(texts)
        return self

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([weight * v.transform(texts) for _, v, weight in self.blocks], format="csr")

    def fit_transform(self, texts: list[str], y=None) -> sp.csr_matrix:
        return self.fit(texts).transform(texts)

    def sparse_row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, values) of `transform([text])`'s one row, computed directly.

        The serving path: scikit-learn's `transform` validates its input on every call, which
        costs more than the featurisation of one prompt. This repeats the same arithmetic (term
        counts, 1 + log tf, times idf, L2 norm per block, times the block weight) with the fitted
        vocabularies; a test checks it against `transform`.
        """
        if self._compiled is None:
            self._compiled = [(v.build_analyzer(), v.vocabulary_, v.idf_.astype(np.float64), weight)
                              for _, v, weight in self.blocks]
        columns, values, offset = [], [], 0
        for analyzer, vocabulary, idf, weight in self._compiled:
            counts: dict[int, int] = {}
            for term in analyzer(text):
                j = vocabulary.get(term)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if counts:
                idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                val = (1.0 + np.log(tf)) * idf[idx]
                val *= weight / np.sqrt(val @ val)
                columns.append(idx + offset)
                values.append(val)
            offset += len(vocabulary)
        if not columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(columns), np.concatenate(values)

    _compiled = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_compiled"}


class EmbeddingFeaturiser:
    """Sentence embeddings from a local sentence-transformers model directory (a plug-in)."""

    def __init__(self, model_dir: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ValueError("the embedding featuriser needs `pip install sentence-transformers`") from err
        if not Path(model_dir).is_dir():
            raise ValueError(f"embedding model directory {model_dir} does not exist (nothing is downloaded)")
        self.model_dir = model_dir
        self._model = SentenceTransformer(model_dir, device="cpu")

    def fit(self, texts, y=None):
        return self

    def transform(self, texts):
        return self._model.encode([clip(t) for t in texts], normalize_embeddings=True)

    def fit_transform(self, texts, y=None):
        return self.transform(texts)


FEATURISERS: dict[str, Callable[..., object]] = {"tfidf": PromptTfidf, "embedding": EmbeddingFeaturiser}


def create_featuriser(name: str = "tfidf", **options):
    if name not in FEATURISERS:
        raise ValueError(f"unknown featuriser {name!r}; known: {sorted(FEATURISERS)}")
    return FEATURISERS[name](**options)
