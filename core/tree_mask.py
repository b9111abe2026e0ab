"""Tree attention: which nodes a tree node may see, and at which position it sits.

SpecInfer (Miao et al., 2024) and EAGLE (Li et al., 2024) verify a whole token tree in one
forward pass: node i attends to the committed prefix and to its own ancestors (itself
included), nothing else, at position prefix_len + depth(i). A mask row is its parent's row plus
itself, so all rows build in one pass over the nodes in order.

`AncestorRows` keeps one pre-built matrix and slices it instead of building each tree's matrix
anew, as DynaSD (Lu et al., 2024, "Improving Multi-candidate Speculative Decoding") pre-builds the
mask of its largest tree and slices it per round. Dynamic trees (EAGLE-2) change shape every round,
so the pre-built tree is the last one seen, starting as the longest chain: a row depends only on
the parents up to its own node, so the rows of the longest common prefix of parents are reused as
they are and only the rest are rebuilt (a chain, or a drafter's candidate set that grows level by
level, rebuilds nothing it already has). Whether it saves time is measured by `bench mask`.

This module knows nothing about models or acceptance; the same functions serve the verifier and
the model drafter (which runs its own tree forwards).
"""

from __future__ import annotations

import torch

from core.contracts import NO_PARENT


def ancestor_matrix(parents: list[int] | tuple[int, ...]) -> torch.Tensor:
    """[n, n] bool: entry (i, j) is True when node j is node i or one of its ancestors."""
    n = len(parents)
    rows = torch.zeros(n, n, dtype=torch.bool)
    for i, parent in enumerate(parents):
        if parent != NO_PARENT:
            rows[i] = rows[parent]
        rows[i, i] = True
    return rows


class AncestorRows:
    """A pre-built ancestor matrix, sliced to each tree it is given.

    It starts as the matrix of the longest chain of `capacity` nodes and grows (keeping its rows)
    when a tree has more. `rows(parents)` returns the same values as `ancestor_matrix(parents)`,
    as a view into the buffer: read it (or copy it) before the next call, which may overwrite it.
    Not thread-safe: one owner (a session, a drafter session) at a time.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._rows = torch.ones(capacity, capacity, dtype=torch.bool).tril()  # the longest chain
        self._parents: list[int] = [NO_PARENT, *range(capacity - 1)]

    def rows(self, parents: list[int] | tuple[int, ...]) -> torch.Tensor:
        """[n, n] bool view: entry (i, j) is True when node j is node i or one of its ancestors."""
        n = len(parents)
        if n > self.capacity:
            self._grow(max(n, 2 * self.capacity))
        known, same = self._parents, 0
        limit = min(n, len(known))
        while same < limit and parents[same] == known[same]:
            same += 1
        if same < n:  # rows from `same` on are rebuilt; those past n no longer match and are dropped
            self._rebuild(parents, same)
            self._parents = [*known[:same], *parents[same:n]]
        return self._rows[:n, :n]

    def _grow(self, capacity: int) -> None:
        """Room for `capacity` nodes; the rows built so far stay (they see no node past themselves)."""
        rows = torch.zeros(capacity, capacity, dtype=torch.bool)
        rows[:self.capacity, :self.capacity] = self._rows
        self._rows, self.capacity = rows, capacity

    def _rebuild(self, parents: list[int] | tuple[int, ...], start: int) -> None:
        """Rows start.. of `parents`, from the rows before them: one node at a time, or one depth
        level at a time (a level's parents are all in the levels above it) when the levels are wide."""
        rows, n = self._rows, len(parents)
        levels: dict[int, list[int]] = {}
        if n - start >= 2 * _WIDE_LEVEL:
            depths = tree_depths(parents)
            for i in range(start, n):
                levels.setdefault(depths[i], []).append(i)
        if NO_PARENT in parents[max(start, 1):] or len(levels) * _WIDE_LEVEL > n - start:
            levels = {}
        if not levels:
            for i in range(start, n):
                parent = parents[i]
                if parent == NO_PARENT:
                    rows[i].zero_()
                else:
                    rows[i] = rows[parent]
                rows[i, i] = True
            return
        if start == 0:
            rows[0].zero_()
            rows[0, 0] = True
            levels.pop(0, None)
        for depth in sorted(levels):
            nodes = torch.tensor(levels[depth])
            rows[nodes] = rows[torch.tensor([parents[i] for i in levels[depth]])]
            rows[nodes, nodes] = True


_WIDE_LEVEL = 3
"""Nodes per depth level (on average) above which `AncestorRows` rebuilds a level at a time."""


def tree_depths(parents: list[int] | tuple[int, ...]) -> list[int]:
    """depth(root) == 0; depth(i) == depth(parent(i)) + 1."""
    depths: list[int] = []
    for parent in parents:
        depths.append(0 if parent == NO_PARENT else depths[parent] + 1)
    return depths


def is_chain(parents: list[int] | tuple[int, ...]) -> bool:
    """True when node i's parent is node i - 1 for all i: the causal mask is then the tree mask."""
    return all(parent == i - 1 for i, parent in enumerate(parents) if i > 0)


def tree_attention_mask(parents: list[int] | tuple[int, ...], prefix_len: int,
                        dtype: torch.dtype = torch.float32, ancestors: AncestorRows | None = None) -> torch.Tensor:
    """Additive mask for the tree's forward pass.

    Returns [1, 1, n, prefix_len + n]: 0 where a node may attend, the dtype's minimum elsewhere
    (HF models add it to attention scores). `ancestors`: the caller's pre-built rows to slice
    instead of building the tree's ancestor matrix (the same values either way).
    """
    n = len(parents)
    allowed = torch.ones(n, prefix_len + n, dtype=torch.bool)
    allowed[:, prefix_len:] = ancestor_matrix(parents) if ancestors is None else ancestors.rows(parents)
    return additive_mask(allowed, dtype)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """allowed: [q, kv] bool -> [1, 1, q, kv]: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def tree_position_ids(parents: list[int] | tuple[int, ...], prefix_len: int) -> torch.Tensor:
    """[1, n] positions: prefix_len + depth."""
    return torch.tensor([[prefix_len + d for d in tree_depths(parents)]], dtype=torch.long)
