"""The target's next-token distributions on distillation data, computed once (DistillSpec's teacher).

An on-policy `Sample` is a prompt and the continuation the target (or a drafter) generated for it.
DistillSpec (Zhou et al., 2024) matches the drafter to the target at the positions that predict
the continuation, so those are the only positions kept.

`TeacherCache.build` runs the target over every sample once and keeps, per position, the top-k
log-probabilities and their token ids. A distillation step then costs the drafter's forward and
backward only, not a target forward as well: the target is many times the drafter's size, and
distillation visits every sample many times. `dense()` rebuilds full log-probabilities for a batch,
spreading the leftover mass (what the top-k miss) evenly over the other tokens: exact for the
top-k, an approximation in the tail, and a proper distribution, so every divergence of
`specroute.zoo.divergence` stays finite.

This module knows nothing about presets, files other than its own, or how samples were made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

DEFAULT_TOP_K = 64


@dataclass(frozen=True)
class Sample:
    """Prompt ids and the continuation ids generated after them."""

    prompt: list[int]
    continuation: list[int]

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.continuation

    def predicting_positions(self) -> range:
        """Positions whose next-token distribution predicts a continuation token."""
        return range(len(self.prompt) - 1, len(self.prompt) + len(self.continuation) - 1)


def pad_batch(samples: list[Sample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T], their attention mask [B, T], and the predicting positions [B, T]."""
    width = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    predicting = torch.zeros((len(samples), width), dtype=torch.bool)
    for i, s in enumerate(samples):
        ids[i, : len(s.ids)] = torch.tensor(s.ids)
        attention[i, : len(s.ids)] = 1
        positions = s.predicting_positions()
        predicting[i, positions.start: positions.stop] = True
    return ids, attention, predicting


def logits_at(model, ids: torch.Tensor, attention: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The model's logits at `positions` only, [N, V]: the LM head runs on N rows, not B x T."""
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state  # [B, T, H]
    return model.get_output_embeddings()(hidden[positions])


class TeacherCache:
    """Top-k target log-probabilities at every predicting position of every sample."""

    def __init__(self, samples: list[Sample], top_logprobs: list[torch.Tensor], top_ids: list[torch.Tensor],
                 vocab_size: int):
        if not (len(samples) == len(top_logprobs) == len(top_ids)):
            raise ValueError("one set of top-k log-probabilities per sample is needed")
        self.samples = samples
        self.top_logprobs = top_logprobs  # per sample: [positions, k] float16
        self.top_ids = top_ids  # per sample: [positions, k] int
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return len(self.samples)

    @classmethod
    @torch.no_grad()
    def build(cls, target, samples: list[Sample], pad_id: int, top_k: int = DEFAULT_TOP_K, batch_size: int = 16,
              desc: str = "teacher") -> "TeacherCache":
        samples = [s for s in samples if s.continuation]
        if not samples:
            raise ValueError("no sample has a continuation to distil on")
        vocab = target.get_output_embeddings().weight.shape[0]
        k = min(top_k, vocab)
        logprobs, ids_out = [], []
        for i in tqdm(range(0, len(samples), batch_size), desc=desc, leave=False):
            chunk = samples[i: i + batch_size]
            ids, attention, predicting = (t.to(target.device) for t in pad_batch(chunk, pad_id))
            logp = torch.log_softmax(logits_at(target, ids, attention, predicting).float(), -1)
            values, indices = logp.topk(k, dim=-1)
            sizes = [len(s.continuation) for s in chunk]
            logprobs.extend(v.to(torch.float16).cpu() for v in values.split(sizes))
            ids_out.extend(x.to(torch.int32).cpu() for x in indices.split(sizes))
        return cls(samples, logprobs, ids_out, vocab)

    def dense(self, indices: list[int]) -> torch.Tensor:
        """Log-probabilities [N, V] at the predicting positions of these samples, in order."""
        values = torch.cat([self.top_logprobs[i] for i in indices]).float()  # [N, k]
        ids = torch.cat([self.top_ids[i] for i in indices]).long()
        k = values.shape[-1]
        leftover = (1 - values.exp().sum(-1, keepdim=True)).clamp_min(1e-8)  # [N, 1]
        spread = leftover.log() - math.log(max(1, self.vocab_size - k))
        out = spread.expand(values.shape[0], self.vocab_size).clone()
        out.scatter_(-1, ids, values)
        return out

    def state(self) -> dict:
        """Plain lists and tensors, for `torch.save` (and `torch.load(weights_only=True)`)."""
        return {"samples": [(s.prompt, s.continuation) for s in self.samples], "top_logprobs": self.top_logprobs,
                "top_ids": self.top_ids, "vocab_size": self.vocab_size}

    @classmethod
    def from_state(cls, state: dict) -> "TeacherCache":
        return cls([Sample(list(p), list(c)) for p, c in state["samples"]], state["top_logprobs"], state["top_ids"],
                   state["vocab_size"])

    @classmethod
    def merge(cls, caches: list["TeacherCache"]) -> "TeacherCache":
        """One cache over the samples of several (e.g. every task's)."""
        if not caches or len({c.vocab_size for c in caches}) != 1:
            raise ValueError("merge needs at least one cache, all over the same vocabulary")
        return cls([s for c in caches for s in c.samples], [t for c in caches for t in c.top_logprobs],
                   [t for c in caches for t in c.top_ids], caches[0].vocab_size)
