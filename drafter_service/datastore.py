"""A task's datastore: token text the target tends to produce, indexed by n-gram, for drafting.

Retrieval-based speculative decoding (REST, He et al., 2024, "REST: Retrieval-Based Speculative
Decoding") drafts from a datastore instead of a model: the last few committed tokens are looked
up in a corpus, and the tokens that followed their occurrences there become draft candidates,
most frequent first. A task-specialised datastore is small and precise: a code task's holds code,
a math task's worked solutions. The zoo builds one per task from the task's training text and
the target's own continuations of training prompts (`specroute.zoo.build`).

The index is a sorted array per n-gram length: every n-gram of the text, packed exactly into one
integer (n * bits(vocab) <= 63), argsorted once; a lookup is two binary searches. It takes
O(n_max * tokens) memory and builds in about a second per million tokens; the file holds the
tokens only.

This module knows nothing about models, trees or the verifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_KEY_BITS = 63


class Datastore:
    """Token documents, each ended by `eos`, and the index of their n-grams (min_ngram..max_ngram)."""

    def __init__(self, tokens: np.ndarray, eos: int, min_ngram: int = 2, max_ngram: int = 4):
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("a datastore needs a non-empty 1-d token array")
        if tokens.min() < 0:
            raise ValueError("token ids must be >= 0")
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram ({min_ngram}) <= max_ngram ({max_ngram})")
        self.bits = max(1, int(tokens.max()).bit_length(), int(eos).bit_length())
        if max_ngram * self.bits > MAX_KEY_BITS:
            raise ValueError(f"{max_ngram}-grams of {self.bits}-bit token ids do not fit one 63-bit key")
        self.tokens, self.eos = tokens, int(eos)
        self.min_ngram, self.max_ngram = min_ngram, max_ngram
        # n -> (sorted keys, the end position (exclusive) of each n-gram, in key order)
        self._index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n in range(min_ngram, max_ngram + 1):
            count = len(tokens) - n + 1
            if count <= 0:
                continue
            keys = np.zeros(count, dtype=np.int64)
            for j in range(n):
                keys = (keys << self.bits) | tokens[j: j + count]
            order = np.argsort(keys, kind="stable")
            self._index[n] = (keys[order], order + n)

    @classmethod
    def from_documents(cls, documents: list[list[int]], eos: int, **kwargs) -> "Datastore":
        tokens = [t for doc in documents for t in (*doc, eos)]
        return cls(np.array(tokens, dtype=np.int64), eos, **kwargs)

    def save(self, path: Path) -> None:
        """Writes the tokens and settings (`.npz`); the index is rebuilt on load."""
        np.savez_compressed(Path(path), tokens=self.tokens.astype(np.int32), eos=self.eos,
                            ngram=np.array([self.min_ngram, self.max_ngram]))

    @classmethod
    def load(cls, path: Path) -> "Datastore":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"datastore {path} does not exist")
        with np.load(path) as data:
            min_ngram, max_ngram = (int(v) for v in data["ngram"])
            return cls(data["tokens"], int(data["eos"]), min_ngram, max_ngram)

    def __len__(self) -> int:
        return len(self.tokens)

    def continuations(self, context: list[int], depth: int, max_matches: int = 64) -> list[tuple[int, ...]]:
        """What followed the longest suffix of `context` (max_ngram down to min_ngram tokens)
        that occurs in the store: up to `max_matches` occurrences, spread evenly over all of
        them, each with up to `depth` following tokens (a document's end token ends it)."""
        for n in range(min(self.max_ngram, len(context)), self.min_ngram - 1, -1):
            if n not in self._index or any(t < 0 or t >> self.bits for t in context[-n:]):
                continue
            key = 0
            for token in context[-n:]:
                key = (key << self.bits) | token
            keys, ends = self._index[n]
            lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
            if hi == lo:
                continue
            found = ends[lo:hi]
            if len(found) > max_matches:
                found = found[np.linspace(0, len(found) - 1, max_matches).astype(np.int64)]
            out = []
            for end in found.tolist():
                following = self.tokens[end: end + depth].tolist()
                if self.eos in following:
                    following = following[: following.index(self.eos) + 1]
                if following:
                    out.append(tuple(following))
            if out:
                return out
        return []

    def ranked_prefixes(self, context: list[int], depth: int, max_matches: int = 64) -> list[tuple[int, ...]]:
        """Every prefix of the continuations, most frequent first (then shorter first): the best
        nodes of a draft tree, each after its parent, since a prefix is never rarer than its
        extensions."""
        counts: dict[tuple[int, ...], int] = {}
        for following in self.continuations(context, depth, max_matches):
            for length in range(1, len(following) + 1):
                prefix = following[:length]
                counts[prefix] = counts.get(prefix, 0) + 1
        return sorted(counts, key=lambda p: (-counts[p], len(p), p))
