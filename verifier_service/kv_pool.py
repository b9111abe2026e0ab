"""One KV store for many sessions: token slots in a tensor per layer, and the attention mask over them.

PagedAttention (Kwon et al., SOSP 2023, the vLLM paper) keeps every sequence's keys and values in
fixed-size blocks of one shared pool, so sequences of any length batch together and nothing is
copied when one grows or shrinks. This module applies the same idea at the granularity of single
token slots, with the mask doing the paging:
- each layer's keys and values live in one tensor [1, kv_heads, capacity, head_dim];
- a session owns a set of slots (its committed tokens, in any order, anywhere in the pool);
- a batched forward packs every session's new tokens into one row (batch 1), writes their keys
  and values into freshly allocated slots, and lets each new token attend, through an additive
  mask, to its own session's slots and its tree ancestors only, at explicit positions (RoPE is
  applied before the write, so a key's slot never matters, only its position id).
So prefix lengths may be ragged, a session's cache is never copied or gathered per step, and
rejected tree nodes are dropped by freeing their slots. Slots are handed out lowest first to keep
the used extent (and so the attention width) compact.

`StepCache` is what the HF model sees for one forward: it implements `update(keys, values,
layer)`, the one call HF attention layers (Llama, Mistral, Qwen, ...) make on their cache.

A request the pool cannot hold raises `PoolFullError`, a `core.errors.ServiceError` with code
RESOURCE_EXHAUSTED. This module knows nothing about sessions, trees or acceptance: it stores keys
and builds masks.
"""

from __future__ import annotations

import heapq

import torch

from core.errors import Code, ServiceError
from core.tree_mask import additive_mask


class PoolFullError(ServiceError):
    """The pool has no free slots left for a request (its `max_tokens` bound): RESOURCE_EXHAUSTED."""

    def __init__(self, message: str):
        super().__init__(Code.RESOURCE_EXHAUSTED, message)

    def __reduce__(self):  # keeps the subclass when pickled (Ray)
        return type(self), (self.message,)


class KVPool:
    def __init__(self, max_tokens: int, initial_tokens: int = 1024, device: torch.device | str = "cpu"):
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.capacity = min(initial_tokens, max_tokens)
        self.keys: list[torch.Tensor] = []  # allocated on the first write, when shapes are known
        self.values: list[torch.Tensor] = []
        self._free = list(range(self.capacity))  # a heap: lowest slot first
        self._in_use = torch.zeros(self.capacity, dtype=torch.bool)

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    @property
    def extent(self) -> int:
        """1 + the highest slot in use (0 when empty): how wide attention over the pool is."""
        used = torch.nonzero(self._in_use)
        return int(used[-1]) + 1 if len(used) else 0

    def allocate(self, n: int) -> list[int]:
        """n free slots, lowest first; grows the pool (doubling, up to max_tokens) when needed."""
        while len(self._free) < n and self.capacity < self.max_tokens:
            self._grow(min(self.max_tokens, max(2 * self.capacity, self.used + n)))
        if len(self._free) < n:
            raise PoolFullError(f"the KV pool holds {self.max_tokens} tokens and {self.used} are in use; "
                                f"{n} more do not fit")
        slots = [heapq.heappop(self._free) for _ in range(n)]
        self._in_use[slots] = True
        return slots

    def free(self, slots: list[int]) -> None:
        for slot in slots:
            heapq.heappush(self._free, slot)
        if slots:
            self._in_use[slots] = False

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        for tensors in (self.keys, self.values):
            for i, t in enumerate(tensors):
                tensors[i] = torch.cat([t, t.new_zeros(*t.shape[:2], extra, t.shape[3])], dim=2)
        for slot in range(self.capacity, capacity):
            heapq.heappush(self._free, slot)
        self._in_use = torch.cat([self._in_use, torch.zeros(extra, dtype=torch.bool)])
        self.capacity = capacity

    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s (keys, values) tensors, allocated like `like` [1, kv_heads, n, head_dim]."""
        while len(self.keys) <= index:
            shape = (1, like.shape[1], self.capacity, like.shape[3])
            self.keys.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
            self.values.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
        return self.keys[index], self.values[index]


class StepCache:
    """The cache one batched forward sees: new keys/values go to `slots`, attention spans the pool
    up to `extent`."""

    def __init__(self, pool: KVPool, slots: list[int], extent: int):
        self.pool, self.extent = pool, extent
        self.index = torch.tensor(slots, dtype=torch.long, device=pool.device)

    @torch.inference_mode()
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.pool.layer(layer_idx, key_states)
        keys.index_copy_(2, self.index, key_states)
        values.index_copy_(2, self.index, value_states)
        return keys[:, :, :self.extent], values[:, :, :self.extent]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.extent


def pool_mask(rows: list[tuple[list[int], list[int], torch.Tensor]], extent: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask [1, 1, N, extent] of one batched forward.

    rows: per packed sequence, in order: (its cached slots, the slots of its new tokens, the new
    tokens' ancestor matrix [n, n] bool, each row a token's ancestors and itself). A new token may
    attend to its sequence's cached slots and to its ancestors' slots, nothing else.
    """
    total = sum(len(new) for _, new, _ in rows)
    allowed = torch.zeros(total, extent, dtype=torch.bool)
    start = 0
    for cached, new, ancestors in rows:
        block = allowed[start:start + len(new)]  # a view: filled in place
        if cached:
            block.index_fill_(1, torch.tensor(cached, dtype=torch.long), True)
        block.index_copy_(1, torch.tensor(new, dtype=torch.long), ancestors)
        start += len(new)
    return additive_mask(allowed, dtype)
