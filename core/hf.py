"""HF causal LMs as both services use them: loading from a local directory, and one tree forward.

`ModelLoadConfig` loads weights and tokenizer with the real loaders (`AutoModelForCausalLM`,
`AutoTokenizer`), so a real checkpoint directory works unchanged. `forward_tree` runs one
forward over a set of tree nodes on top of a KV cache, with the tree attention of
`core.tree_mask`. The verifier's target and the model drafters use the same two.
`forward_tree_states` is the same forward that also returns hidden states of chosen layers (layer
numbering as in `core.states`: 0 the embeddings, k the output of decoder layer k before the
final norm), read by hooks on the decoder layers, so any HF decoder-only family works.
`HeadInputs` reads a model's last hidden state (after the final norm: what its output embedding
sees) at its last forward on the calling thread, by a hook on the output embedding.

This module knows nothing about acceptance, sessions or which service runs the model.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from core.tree_mask import is_chain, tree_attention_mask, tree_position_ids

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """'auto' picks cuda when present, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ModelLoadConfig(BaseModel):
    """Where a model lives and how to place it; shared by the target and model drafters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path = Field(description="A local directory written by save_pretrained (config, weights, tokenizer).")
    device: str = Field("auto", description="'auto' (cuda when present, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = Field("float32", description="One of float32, bfloat16, float16.")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, path: Path) -> Path:
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a model directory: it has no config.json")
        return path

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return dtype

    def load(self):
        """(model, tokenizer), the model in eval mode on the configured device."""
        device = resolve_device(self.device)
        model = AutoModelForCausalLM.from_pretrained(self.path, dtype=DTYPES[self.dtype]).to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        return model, tokenizer


DEFAULT_CONTEXT = 2048
"""Positions assumed when a model's config does not say."""


def context_window(config) -> int | None:
    """Positions a model holds, from its HF config (Llama-style or GPT-2-style names); None if unsaid."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def eos_token_ids(model, tokenizer) -> frozenset[int]:
    """Every id that ends a generation, from the generation config and the tokenizer."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


@torch.inference_mode()
def forward_tree(model, tokens: list[int] | tuple[int, ...], parents: list[int] | tuple[int, ...],
                 cache: DynamicCache) -> torch.Tensor:
    """One forward of an HF causal LM over tree nodes on top of `cache` (the committed prefix).

    Appends one cache entry per node; returns logits [n, V] (float32, on the cpu).
    """
    prefix_len = cache.get_seq_length()
    input_ids = torch.tensor([list(tokens)], dtype=torch.long, device=model.device)  # [1, n]
    positions = tree_position_ids(parents, prefix_len).to(model.device)  # [1, n]
    # A chain's tree mask is the causal mask, which the model builds faster itself.
    mask = None if is_chain(parents) else tree_attention_mask(parents, prefix_len, model.dtype).to(model.device)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                past_key_values=cache, use_cache=True)
    return out.logits[0].float().cpu()  # [n, V]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of an HF causal LM (Llama-style `model.layers`, GPT-2-style `transformer.h`)."""
    base = model.base_model
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


@contextmanager
def captured_states(model, layers: tuple[int, ...], all_rows: bool = False) -> Iterator[dict[int, torch.Tensor]]:
    """While open, every forward of `model` records the hidden states of `layers` (indices in 0..L,
    resolved) of its first batch row: {layer: [tokens, hidden]}, overwritten by each forward
    (`all_rows`: of every batch row, {layer: [batch, tokens, hidden]})."""
    blocks = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def keep(index):
        def hook(module, args, kwargs, output=None):
            value = output if output is not None else (args[0] if args else kwargs["hidden_states"])
            value = value[0] if isinstance(value, tuple) else value
            captured[index] = value if all_rows else value[0]
        return hook

    handles = []
    for index in set(layers):
        if index == 0:
            handles.append(blocks[0].register_forward_pre_hook(keep(0), with_kwargs=True))
        else:
            handles.append(blocks[index - 1].register_forward_hook(keep(index), with_kwargs=True))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def stack_states(captured: dict[int, torch.Tensor], layers: tuple[int, ...]) -> torch.Tensor:
    """The captured states as [tokens, len(layers), hidden], in `layers` order."""
    return torch.stack([captured[i] for i in layers], dim=1)


@torch.inference_mode()
def forward_tree_states(model, tokens: list[int] | tuple[int, ...], parents: list[int] | tuple[int, ...],
                        cache: DynamicCache, layers: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward_tree` that also returns the hidden states of `layers` (indices in 0..L, already resolved):
    (logits [n, V] float32 on the cpu, states [n, len(layers), hidden] in the model's dtype, on its device)."""
    with captured_states(model, layers) as captured:
        logits = forward_tree(model, tokens, parents, cache)
    return logits, stack_states(captured, layers)


class HeadInputs:
    """The input of `module` (a model's output embedding: its last hidden state, after the final
    norm) at its last call on the calling thread. Per thread, so sessions sharing one model in a
    threaded server never read each other's. Installed once per model; `remove` takes it off."""

    def __init__(self, module: torch.nn.Module):
        self._local = threading.local()
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self._local.last = args[0]

    def last(self) -> torch.Tensor:
        """[n, H] float32 on the cpu: the rows of the last call on this thread (batch row 0)."""
        last = getattr(self._local, "last", None)
        if last is None:
            raise RuntimeError("no forward has run on this thread since the hook was installed")
        return last.reshape(-1, last.shape[-1]).float().cpu()

    def remove(self) -> None:
        self._handle.remove()
