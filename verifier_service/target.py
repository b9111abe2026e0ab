"""The target model: the verifier's HF causal LM, loaded from a local directory.

`TargetModel` is the model whose output must be reproduced exactly: its weights and tokenizer
(loaded by `core.hf.ModelLoadConfig`), its vocabulary, context window and end-of-sequence ids,
and its tree forward (`core.hf.forward_tree`; with hidden states, `forward_tree_states`). It knows
nothing about acceptance, sessions or drafters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DynamicCache

from core.hf import (DEFAULT_CONTEXT, ModelLoadConfig, context_window, decoder_layers, eos_token_ids, forward_tree,
                     forward_tree_states)


class TargetModel:
    """The model whose output must be reproduced exactly."""

    def __init__(self, config: ModelLoadConfig):
        self.config = config
        self.model, self.tokenizer = config.load()
        self.device = self.model.device
        self.vocab_size: int = self.model.get_output_embeddings().weight.shape[0]
        self.max_context: int = context_window(self.model.config) or DEFAULT_CONTEXT
        self.eos_token_ids = eos_token_ids(self.model, self.tokenizer)
        self.num_layers: int = len(decoder_layers(self.model))
        self.hidden_size: int = self.model.get_input_embeddings().weight.shape[1]

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "auto", dtype: str = "float32") -> "TargetModel":
        return cls(ModelLoadConfig(path=Path(path), device=device, dtype=dtype))

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.model.config)

    def forward_tree(self, tokens: list[int] | tuple[int, ...], parents: list[int] | tuple[int, ...],
                     cache: DynamicCache) -> torch.Tensor:
        return forward_tree(self.model, tokens, parents, cache)

    def forward_tree_states(self, tokens: list[int] | tuple[int, ...], parents: list[int] | tuple[int, ...],
                            cache: DynamicCache, layers: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward_tree` with the hidden states of `layers` (resolved): (logits [n, V], states [n, layers, H])."""
        return forward_tree_states(self.model, tokens, parents, cache, layers)
