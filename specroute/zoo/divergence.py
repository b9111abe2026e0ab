"""Divergences between the target's and a drafter's token distributions (DistillSpec).

DistillSpec (Zhou et al., 2024) aligns a drafter to its target by minimising a divergence
between their next-token distributions; which one works best depends on the task and the
decoding mode. Total variation is tied to acceptance directly: a drafted token is accepted with
probability 1 - TV(p, q) (Leviathan et al., 2023).

Pure functions over logits: [..., V] -> [...] (per position). No model, no data.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def forward_kl(target_logits: torch.Tensor, drafter_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q): mass-covering."""
    log_p = F.log_softmax(target_logits.float(), -1)
    log_q = F.log_softmax(drafter_logits.float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def reverse_kl(target_logits: torch.Tensor, drafter_logits: torch.Tensor) -> torch.Tensor:
    """KL(q || p): mode-seeking."""
    return forward_kl(drafter_logits, target_logits)


def total_variation(target_logits: torch.Tensor, drafter_logits: torch.Tensor) -> torch.Tensor:
    """TV(p, q) = 1/2 sum |p - q| = 1 - expected acceptance of one drafted token."""
    p = F.softmax(target_logits.float(), -1)
    q = F.softmax(drafter_logits.float(), -1)
    return 0.5 * (p - q).abs().sum(-1)


DIVERGENCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "tv": total_variation,
}
