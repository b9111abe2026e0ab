"""Sampling parameters and the processed distribution p they define.

`SamplingParams` is validated once, where a request enters. `processed_probs` turns raw logits
into the distribution tokens are actually drawn from (temperature, then top-k, then top-p), the
same function for the target's p and a drafter's q, so both sides agree on what "sampling"
means. Temperature 0 is greedy: the distribution is a point mass on the argmax.

Every value validation accepts works. A temperature below `GREEDY_BELOW` (1e-5, the threshold
vLLM uses for the same reason) is greedy: dividing logits by less would overflow float32. A
top_p below float32's smallest normal number keeps the most likely token alone, as any top_p
that small does.

The seed's domain is `core.seed`'s: any int64 or uint64 value, stored modulo 2^64.

This module knows nothing about trees, caches or models.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.seed import SEED_MAX, SEED_MIN, derived_seed, normalize_seed  # noqa: F401 (re-exported)

GREEDY_BELOW = 1e-5
"""Temperatures below this are greedy decoding."""


class SamplingParams(BaseModel):
    """How tokens are chosen. A temperature of 0 (or below GREEDY_BELOW) means greedy decoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                               description=f"0 (or below {GREEDY_BELOW}) is greedy; more samples from softmax(logits / T).")
    top_k: int = Field(0, ge=0, le=2**31 - 1, description="Keep the k most likely tokens; 0 keeps all.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False,
                         description="Keep the smallest set of tokens with mass >= top_p.")
    seed: int | None = Field(None, description="Seeds every random choice of a request; same seed, same output. "
                             "Any int64 or uint64 value; stored modulo 2^64.")

    @field_validator("seed")
    @classmethod
    def _seed_in_domain(cls, seed: int | None) -> int | None:
        return None if seed is None else normalize_seed(seed)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW



def checked_sampling(**values) -> SamplingParams:
    """SamplingParams(**values), or ValueError naming the first bad field: `top_p: ... (got 1.5)`."""
    try:
        return SamplingParams(**values)
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{first['loc'][0]}: {first['msg']} (got {first['input']!r})") from None


def processed_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Distribution to sample from, per row.

    logits: [..., V] -> probs: [..., V] (float32). Greedy gives a one-hot row at the argmax.
    """
    logits = logits.float()
    if params.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    scaled = logits / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # Keep a token while the mass of the tokens before it is still short of top_p, so the
        # most likely token is always kept.
        # float32 cannot hold a top_p below its smallest normal; any such top_p keeps one token.
        drop_sorted = mass_before >= max(params.top_p, torch.finfo(torch.float32).tiny)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs
