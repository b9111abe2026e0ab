"""The feature drafter's network: one decoder layer over the target's features (EAGLE), and its directory.

EAGLE (Li et al., 2024, arXiv 2401.15077) drafts at the feature level. The input pair at position
t is (f_t, x_{t+1}): the target's feature after token t (its last decoder layer's output before
the final norm, `core.states` layer -1) and the embedding of the next token. Then

    h   = fc(concat(embed(x_{t+1}), f_t))          fc: Linear(2H -> H)
    g_t = layer(h)                                 one decoder layer of the target's family and width
    logits = lm_head(final_norm(g_t))              g_t predicts f_{t+1}

The target's embedding (for GPT-2-style families, token plus position embeddings: the first
layer's input), final norm and LM head are frozen and loaded from the target's directory; only
fc, the decoder layer(s) and the FSPAD gate are the drafter's own weights. The pair (f_t, x_{t+1})
sits at position t + 1, the position of the token it carries.

Options (`FeatureDraftConfig`):

- `position_specialists` n (PosS, Huang et al., 2025, arXiv 2506.03566): 0 is one layer for every
  draft step (EAGLE). n >= 1 gives L = ceil(train_depth / n) layers; draft step d (0: the context
  pairs and the root; a tree node at depth d >= 1 is run at step d) uses layer min(d // n, L - 1).
  fc and the embedding are shared, and every specialist reads and writes the same KV cache slot
  (HF `layer_idx` 0): a node's ancestors may have been run by another specialist.
- `feature_sampling` (FSPAD, Gui et al., 2024, arXiv 2408.15562): the paper ties the target's
  feature to the token the target emitted by "sampling" the feature with that token's embedding
  before the drafter sees it; it leaves the exact operator open to us in the form used here. We use
  a token-conditioned per-dimension gate, applied inside `forward`:

      f'_t = f_t * (1 + tanh(W_s e(x_{t+1})))      W_s: Linear(H -> H, no bias), initialised to zero

  so a new model starts exactly as EAGLE (f' = f) and learns which feature dimensions the emitted
  token keeps or amplifies. A linear additive tie (f + W e) would be absorbed by fc, hence the gate.
  The drafter's own predicted features go through the same gate at deeper steps.
- `partial_alignment` s (FSPAD's partial alignment distillation): the feature regression of
  training covers the first ceil(s * H) dimensions only; the rest are left free for the logit
  loss. 0 is EAGLE's default, the whole feature (`aligned_dims`).
- `train_depth`: the draft steps trained (unrolled); it also fixes the number of PosS specialists.

The directory (`save`): `specroute_drafter.json` (kind, target path, options, family, sizes),
`feature_model.safetensors` (the drafter's own weights only) and the target's tokenizer files.
This module knows nothing about sessions, verdicts, trees or training data.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache

from core.hf import DTYPES, decoder_layers
from drafter_service.base import DRAFTER_FILE

CONFIG_FILE = DRAFTER_FILE
WEIGHTS_FILE = "feature_model.safetensors"
_FROZEN = "target_parts."


class FeatureDraftConfig(BaseModel):
    """The feature drafter's options (EAGLE defaults: no specialists, no FSPAD)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position_specialists: int = Field(0, ge=0, description="PosS: draft steps per specialist layer; 0: one layer.")
    feature_sampling: bool = Field(False, description="FSPAD: gate the target feature by the emitted token.")
    partial_alignment: float = Field(0.0, ge=0.0, le=1.0, description="FSPAD: share of feature dims regressed.")
    train_depth: int = Field(4, ge=1, description="Draft steps trained (unrolled).")


class FeatureDrafterFile(FeatureDraftConfig):
    """The whole `specroute_drafter.json`: the options plus what the target must match."""

    kind: Literal["feature"] = "feature"
    target: str
    family: str
    hidden: int
    vocab_size: int
    num_layers_of_target: int
    feature_layer: int = -1


def _final_norm(base) -> torch.nn.Module:
    for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"cannot find the final norm of {type(base).__name__}")


class FeatureDraftModel(torch.nn.Module):
    """fc + one decoder layer per specialist (+ the FSPAD gate) over the target's frozen embedding, norm, head."""

    def __init__(self, target, options: FeatureDraftConfig, target_dir: Path):
        super().__init__()
        config = target.config
        self.config = options
        self.target_dir = Path(target_dir)
        self.family: str = config.model_type
        self.hidden_size: int = config.hidden_size
        self.vocab_size: int = target.get_output_embeddings().weight.shape[0]
        self.num_layers_of_target: int = len(decoder_layers(target))
        base = target.base_model
        parts = {"embed": target.get_input_embeddings(), "norm": _final_norm(base),
                 "head": target.get_output_embeddings()}
        if isinstance(getattr(base, "wpe", None), torch.nn.Module):
            parts["positions"] = base.wpe  # GPT-2 style: absolute position embeddings join the token's
        if isinstance(getattr(base, "rotary_emb", None), torch.nn.Module):
            parts["rotary"] = base.rotary_emb  # Llama style: rotary cos/sin from position ids
        self.target_parts = torch.nn.ModuleDict(parts)
        self.target_parts.requires_grad_(False)
        layer_class = type(decoder_layers(target)[0])
        n = options.position_specialists
        count = 1 if n == 0 else math.ceil(options.train_depth / n)
        self.fc = torch.nn.Linear(2 * self.hidden_size, self.hidden_size, bias=False)
        self.layers = torch.nn.ModuleList([layer_class(config, layer_idx=0) for _ in range(count)])
        self.sampler = None
        if options.feature_sampling:
            self.sampler = torch.nn.Linear(self.hidden_size, self.hidden_size, bias=False)
            torch.nn.init.zeros_(self.sampler.weight)

    # -- building and files ------------------------------------------------------------------

    @staticmethod
    def _load_target(target_dir: Path, dtype: str):
        if not (Path(target_dir) / "config.json").is_file():
            raise ValueError(f"the feature drafter's target {target_dir} is missing: it has no config.json")
        return AutoModelForCausalLM.from_pretrained(target_dir, dtype=DTYPES[dtype])

    @classmethod
    def from_target(cls, target_dir: str | Path, options: FeatureDraftConfig | None = None, seed: int = 0,
                    device: str = "cpu", dtype: str = "float32") -> "FeatureDraftModel":
        """A new drafter for the target in `target_dir`, its own weights randomly initialised from `seed`."""
        target = cls._load_target(Path(target_dir), dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(target, options or FeatureDraftConfig(), Path(target_dir))
        return model.to(device=device, dtype=DTYPES[dtype]).eval()

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu", dtype: str = "float32") -> "FeatureDraftModel":
        """The drafter saved in `path`, over its target (checked against the recorded sizes)."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"{path} is not a feature drafter directory: it has no {CONFIG_FILE}")
        record = FeatureDrafterFile.model_validate_json((path / CONFIG_FILE).read_text())
        target_dir = Path(record.target) if os.path.isabs(record.target) else (path / record.target).resolve()
        if not (target_dir / "config.json").is_file():
            raise ValueError(f"feature drafter {path}: its target {target_dir} is missing (no config.json)")
        config = AutoConfig.from_pretrained(target_dir)
        found = {"family": config.model_type, "hidden": config.hidden_size, "vocab_size": config.vocab_size}
        for name, value in found.items():
            if getattr(record, name) != value:
                raise ValueError(f"feature drafter {path} was trained for a target with {name} "
                                 f"{getattr(record, name)}, but its target {target_dir} has {value}")
        target = cls._load_target(target_dir, dtype)
        if len(decoder_layers(target)) != record.num_layers_of_target:
            raise ValueError(f"feature drafter {path} was trained for a target of {record.num_layers_of_target} "
                             f"layers, but its target {target_dir} has {len(decoder_layers(target))}")
        options = FeatureDraftConfig(**record.model_dump(include=set(FeatureDraftConfig.model_fields)))
        model = cls(target, options, target_dir)
        model.load_state_dict(load_file(path / WEIGHTS_FILE), strict=False)
        return model.to(device=device, dtype=DTYPES[dtype]).eval()

    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """The drafter's own weights (fc, specialist layers, FSPAD gate): no frozen target part."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_FROZEN)}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        missing = set(self.own_state_dict()) - set(state)
        unexpected = set(state) - set(self.own_state_dict())
        if missing or unexpected:
            raise ValueError(f"feature drafter weights do not fit: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        return super().load_state_dict(state, strict=False, assign=assign)

    def save(self, out_dir: str | Path) -> None:
        """Writes the directory: config, own weights, the target's tokenizer files."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            target = os.path.relpath(self.target_dir.resolve(), out_dir.resolve())
        except ValueError:  # another drive: no relative path
            target = str(self.target_dir.resolve())
        record = FeatureDrafterFile(**self.config.model_dump(), target=target, family=self.family,
                                    hidden=self.hidden_size, vocab_size=self.vocab_size,
                                    num_layers_of_target=self.num_layers_of_target)
        (out_dir / CONFIG_FILE).write_text(record.model_dump_json(indent=2))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.own_state_dict().items()}, out_dir / WEIGHTS_FILE)
        AutoTokenizer.from_pretrained(self.target_dir).save_pretrained(out_dir)

    # -- the network -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    def aligned_dims(self) -> int:
        """How many leading feature dimensions training regresses (FSPAD partial alignment)."""
        share = self.config.partial_alignment
        return self.hidden_size if share == 0 else max(1, math.ceil(share * self.hidden_size))

    def specialist_for(self, step: int) -> int:
        """The layer draft step `step` runs: 0 without PosS, else min(step // n, L - 1)."""
        n = self.config.position_specialists
        return 0 if n == 0 else min(step // n, len(self.layers) - 1)

    def new_cache(self) -> DynamicCache:
        """An empty KV cache: one slot, shared by every specialist."""
        return DynamicCache()

    def embed(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The target's input embedding of tokens [B, n] at positions [B, n]."""
        e = self.target_parts["embed"](tokens)
        if "positions" in self.target_parts:
            e = e + self.target_parts["positions"](position_ids)
        return e

    def logits(self, g: torch.Tensor) -> torch.Tensor:
        """The target's head over predicted features (through its final norm)."""
        return self.target_parts["head"](self.target_parts["norm"](g))

    def forward(self, features: torch.Tensor, tokens: torch.Tensor, position_ids: torch.Tensor,
                cache: DynamicCache, attention_mask: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pairs [B, n] through fc and `specialist_for(step)` on top of `cache` (appends n entries).

        attention_mask: additive [1 or B, 1, n, cache_len + n]. Returns (g [B, n, H], logits [B, n, V]) in the
        model's dtype, differentiable.
        """
        features = features.to(self.dtype)
        e = self.embed(tokens, position_ids)
        if self.sampler is not None:
            features = features * (1 + torch.tanh(self.sampler(e)))
        h = self.fc(torch.cat([e, features], dim=-1))
        layer = self.layers[self.specialist_for(step)]
        kwargs = {}
        if "rotary" in self.target_parts:
            kwargs["position_embeddings"] = self.target_parts["rotary"](h, position_ids)
        mask = attention_mask.to(self.dtype).clamp_min(torch.finfo(self.dtype).min)
        out = layer(h, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=True, **kwargs)
        g = out[0] if isinstance(out, tuple) else out
        return g, self.logits(g)

    @torch.inference_mode()
    def step(self, features: torch.Tensor, tokens: torch.Tensor, position_ids: torch.Tensor, cache: DynamicCache,
             attention_mask: torch.Tensor | None, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n pairs (features [n, H], tokens [n], position_ids [n]) on top of `cache`; appends n entries.

        attention_mask None: causal over the n new rows on top of the whole cache; else additive
        [1, 1, n, cache_len + n] (`core.tree_mask.additive_mask`). Returns (g [n, H], logits [n, V]), float32 cpu.
        """
        n = tokens.shape[0]
        if attention_mask is None:
            past = cache.get_seq_length()
            allowed = torch.ones(n, past + n, dtype=torch.bool, device=self.device)
            allowed[:, past:] = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
            attention_mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            attention_mask = attention_mask.masked_fill(~allowed, torch.finfo(self.dtype).min)[None, None]
        g, logits = self(features.to(self.device)[None], tokens.to(self.device)[None],
                         position_ids.to(self.device)[None], cache, attention_mask.to(self.device), step)
        return g[0].float().cpu(), logits[0].float().cpu()
