"""Tree attention: which nodes a tree node may see, and at which position it sits.

SpecInfer (Miao et al., 2024) and EAGLE (Li et al., 2024) verify a whole token tree in one
forward pass: node i attends to the committed prefix and to its own ancestors (itself
included), nothing else, at position prefix_len + depth(i). A mask row is its parent's row plus
itself, so all rows build in one pass over the nodes in order.

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
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask for the tree's forward pass.

    Returns [1, 1, n, prefix_len + n]: 0 where a node may attend, the dtype's minimum elsewhere
    (HF models add it to attention scores).
    """
    n = len(parents)
    allowed = torch.ones(n, prefix_len + n, dtype=torch.bool)
    allowed[:, prefix_len:] = ancestor_matrix(parents)
    return additive_mask(allowed, dtype)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """allowed: [q, kv] bool -> [1, 1, q, kv]: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def tree_position_ids(parents: list[int] | tuple[int, ...], prefix_len: int) -> torch.Tensor:
    """[1, n] positions: prefix_len + depth."""
    return torch.tensor([[prefix_len + d for d in tree_depths(parents)]], dtype=torch.long)
