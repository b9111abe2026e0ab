"""The `ngram` drafter: prompt lookup decoding (Saxena, 2023, "Prompt Lookup Decoding").

Text often repeats itself: code edits, summaries and retrieval answers copy spans of the prompt
or of what was already generated. This drafter looks up the last few committed tokens (the
suffix, ending at the root) in the context seen so far and proposes the tokens that followed
earlier occurrences. Several distinct continuations become the branches of one token trie under
the root, preferring longer n-gram matches, then more recent ones.

An index from every n-gram (min_ngram..max_ngram tokens) to the positions where it ends is
kept up to date as tokens are committed, so a proposal costs time in the number of matches, not
in the length of the context.

This module knows nothing about models, the verifier or sampling. Its candidates are copied
tokens, not draws from a distribution, so every tree it builds is `deterministic`: the verifier
treats each candidate as a point mass.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drafter_service.base import DraftLimit, DraftSession, Drafter, register_drafter
from core.contracts import NO_PARENT, DraftTree, Verdict
from core.sampling import SamplingParams

MAX_OCCURRENCES_PER_NGRAM = 256
"""Occurrences of one n-gram looked at per proposal, most recent first. A very frequent n-gram
(a lone space token, a run of one token) could otherwise make every proposal scan the context."""


class NgramConfig(BaseModel):
    """Settings of the `ngram` drafter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_ngram: int = Field(3, ge=1, description="Longest suffix of the context to look up; tried first.")
    min_ngram: int = Field(1, ge=1, description="Shortest suffix to look up when longer ones have no match.")
    num_branches: int = Field(4, ge=1, description="Most distinct continuations to merge into one tree.")
    max_depth: int = Field(8, ge=1, description="Most tokens drafted along one continuation, below the root.")

    @model_validator(mode="after")
    def _check_ngram_range(self) -> "NgramConfig":
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"min_ngram ({self.min_ngram}) must be <= max_ngram ({self.max_ngram})")
        return self


class NgramSession(DraftSession):
    """One generation's context and its n-gram index."""

    def __init__(self, prompt_ids: list[int], sampling: SamplingParams, config: NgramConfig):
        super().__init__(prompt_ids, sampling)
        self.config = config
        # n-gram -> every end position e (exclusive: the n-gram is context[e - n:e]), ascending.
        self._ends_by_ngram: dict[tuple[int, ...], list[int]] = {}
        self._index_from(0)

    def observe(self, verdict: Verdict) -> None:
        num_indexed = len(self.context)
        super().observe(verdict)
        self._index_from(num_indexed)

    def propose(self, limit: DraftLimit) -> DraftTree:
        root = self.context[-1]
        if not limit.allows_drafting:
            return DraftTree.root_only(root)
        trie = Trie(root, limit.max_nodes)
        self.graft(trie, min(self.config.max_depth, limit.max_depth))
        return trie.to_tree()

    def graft(self, trie: "Trie", depth: int) -> None:
        """Adds up to `num_branches` distinct continuations, best first, to `trie` (rooted at the
        context's last token), until it is full."""
        num_branches = 0
        seen: set[tuple[int, ...]] = set()
        for continuation in self.continuations(depth):
            if continuation in seen:
                continue
            seen.add(continuation)
            # A continuation that is a prefix of an earlier one adds no node and uses no branch.
            if trie.insert(continuation):
                num_branches += 1
            if num_branches == self.config.num_branches or trie.is_full:
                break

    def continuations(self, depth: int) -> Iterator[tuple[int, ...]]:
        """Tokens that followed earlier occurrences of the context's suffix, best first:
        longer n-grams before shorter, more recent occurrences before older."""
        context_len = len(self.context)
        for n in range(min(self.config.max_ngram, context_len), self.config.min_ngram - 1, -1):
            ends = self._ends_by_ngram.get(tuple(self.context[-n:]), [])
            # The last entry is the suffix itself (end == context_len): nothing follows it.
            for end in reversed(ends[-MAX_OCCURRENCES_PER_NGRAM - 1:-1]):
                yield tuple(self.context[end:end + depth])

    def _index_from(self, num_indexed: int) -> None:
        """Index every n-gram that ends after the first `num_indexed` tokens."""
        for end in range(num_indexed + 1, len(self.context) + 1):
            for n in range(self.config.min_ngram, min(self.config.max_ngram, end) + 1):
                self._ends_by_ngram.setdefault(tuple(self.context[end - n:end]), []).append(end)


class Trie:
    """Continuations merged under the root, node by node, up to max_nodes nodes (root included).

    Nodes are appended as they are created, so parents come before children, and a node is only
    created under an existing one, so the tree stays connected when the cap cuts a branch short.
    """

    def __init__(self, root: int, max_nodes: int):
        self.tokens = [root]
        self.parents = [NO_PARENT]
        self.max_nodes = max_nodes
        self._child: dict[tuple[int, int], int] = {}  # (parent node, token) -> child node

    @classmethod
    def from_tree(cls, tree: DraftTree, max_nodes: int) -> "Trie":
        """A trie holding `tree`'s nodes at their indices, to graft continuations onto. Siblings
        with one token are merged in a trie, so the tree must have none (a drafted tree has none)."""
        trie = cls(tree.tokens[0], max_nodes)
        for i in range(1, tree.num_nodes):
            key = (tree.parents[i], tree.tokens[i])
            if key in trie._child:
                raise ValueError(f"node {i} repeats a sibling's token {tree.tokens[i]}")
            trie._child[key] = i
            trie.tokens.append(tree.tokens[i])
            trie.parents.append(tree.parents[i])
        return trie

    @property
    def is_full(self) -> bool:
        return len(self.tokens) >= self.max_nodes

    def insert(self, continuation: tuple[int, ...]) -> bool:
        """Adds the continuation's missing nodes, as far as the cap allows; True if any were added."""
        node, added = 0, False
        for token in continuation:
            child = self._child.get((node, token))
            if child is None:
                if self.is_full:
                    break
                child = len(self.tokens)
                self.tokens.append(token)
                self.parents.append(node)
                self._child[(node, token)] = child
                added = True
            node = child
        return added

    def to_tree(self, deterministic: bool = True) -> DraftTree:
        return DraftTree(tuple(self.tokens), tuple(self.parents), deterministic=deterministic)


@register_drafter("ngram")
class NgramDrafter(Drafter):
    """Prompt lookup decoding; holds only its settings, so one instance serves every request."""

    Config = NgramConfig

    def __init__(self, config: NgramConfig):
        self.config = config

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> NgramSession:
        return NgramSession(prompt_ids, sampling, self.config)
