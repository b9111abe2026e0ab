"""Rolling a KV cache back to the accepted path of a tree.

A tree forward appends one cache entry per node after the committed prefix. Once the accepted
path is known, its entries move to consecutive positions right after the prefix and the rest is
dropped. Only the tree's tail is copied, never the prefix, and no accepted token is recomputed.

Works on HF `DynamicCache` objects (`cache.layers[i].keys/values`: [batch, kv_heads, seq,
head_dim]). This module knows nothing about trees beyond the list of kept node offsets.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


@torch.inference_mode()  # cache tensors are inference tensors: edit them in the same mode
def keep_tree_nodes(cache: DynamicCache, prefix_len: int, kept_nodes: list[int]) -> None:
    """Keep prefix entries plus the tree entries at prefix_len + kept_nodes, in that order.

    kept_nodes: tree indices in increasing order (a root-to-leaf path), e.g. [0, 2, 5].
    """
    new_len = prefix_len + len(kept_nodes)
    contiguous = kept_nodes == list(range(len(kept_nodes)))
    index = torch.tensor([prefix_len + i for i in kept_nodes], dtype=torch.long)
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys.numel() == 0:
            continue
        if not contiguous:
            index = index.to(layer.keys.device)
            # Gathered on the right-hand side first, so overlapping source and target are safe.
            layer.keys[:, :, prefix_len:new_len] = layer.keys.index_select(2, index)
            layer.values[:, :, prefix_len:new_len] = layer.values.index_select(2, index)
        layer.keys = layer.keys[:, :, :new_len]
        layer.values = layer.values[:, :, :new_len]


def truncate(cache: DynamicCache, length: int) -> None:
    """Drop every entry at or after `length`."""
    for layer in cache.layers:
        if layer.is_initialized and layer.keys.numel() > 0:
            layer.keys = layer.keys[:, :, :length]
            layer.values = layer.values[:, :, :length]
