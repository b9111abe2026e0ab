"""Training loops: pretraining a causal LM, generating on-policy data, distilling a drafter.

- `pretrain`: next-token cross-entropy on packed blocks of a token stream.
- `generate_on_policy`: continuations of task prompts sampled from a model (DistillSpec's
  on-policy data: from the drafter or the target).
- `distill`: trains a drafter to minimise a divergence (`specroute.zoo.divergence`) between the
  target's and its own next-token distributions on those sequences, the target's logits computed
  on the fly (Zhou et al., 2024).

Each loop shows a progress bar and uses AdamW with warmup and cosine decay. This module knows
nothing about presets, files or which task the data came from.
"""

from __future__ import annotations

import math
import random

import torch
from tqdm.auto import tqdm

from specroute.zoo.divergence import DIVERGENCES


def _schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Optimizer:
    """AdamW with warmup and cosine decay, gradient clipping, and the loss history."""

    def __init__(self, model, lr: float, steps: int):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
        self.sched = _schedule(self.opt, steps, warmup=max(1, steps // 20))
        self.losses: list[float] = []

    def step(self, loss: torch.Tensor, bar) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        bar.set_postfix(loss=f"{self.losses[-1]:.3f}")


def pretrain(model, tokens: list[int], steps: int, batch_size: int, seq_len: int, lr: float, seed: int,
             desc: str = "pretrain") -> list[float]:
    """Next-token training on random blocks of `tokens`; returns the loss per step."""
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"need more than {seq_len + 1} tokens to train on, got {len(tokens)}")
    data = torch.tensor(tokens, dtype=torch.long)
    rng = random.Random(seed)
    opt = _Optimizer(model, lr, steps)
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        starts = [rng.randrange(0, len(data) - seq_len - 1) for _ in range(batch_size)]
        batch = torch.stack([data[s: s + seq_len] for s in starts]).to(model.device)  # [B, T]
        opt.step(model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss, bar)
    model.eval()
    return opt.losses


@torch.no_grad()
def generate_on_policy(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                       batch_size: int, max_prompt_tokens: int, seed: int, desc: str = "on-policy data") -> list[list[int]]:
    """Prompt + sampled continuation ids, one list per prompt (padding removed)."""
    torch.manual_seed(seed)
    sequences = []
    for i in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        chunk = prompts[i: i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=max_prompt_tokens).to(model.device)
        out = model.generate(**enc, do_sample=temperature > 0, temperature=temperature or None,
                             top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        width = enc["input_ids"].shape[1]
        for row, mask in zip(out.tolist(), enc["attention_mask"]):
            prompt = row[int((mask == 0).sum()): width]
            continuation = row[width:]
            # Finished rows are padded with the end-of-text token: keep the first one only.
            if tokenizer.pad_token_id in continuation:
                continuation = continuation[: continuation.index(tokenizer.pad_token_id) + 1]
            sequences.append(prompt + continuation)
    return sequences


def _pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T] and a mask [B, T] of real positions."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


def _divergence_on(student, teacher, sequences: list[list[int]], pad_id: int, divergence: str) -> torch.Tensor:
    ids, mask = _pad(sequences, pad_id)
    ids, mask = ids.to(student.device), mask.to(student.device)
    with torch.no_grad():
        target_logits = teacher(input_ids=ids, attention_mask=mask.long()).logits  # [B, T, V]
    drafter_logits = student(input_ids=ids, attention_mask=mask.long()).logits  # [B, T, V]
    per_position = DIVERGENCES[divergence](target_logits, drafter_logits)  # [B, T]
    return (per_position * mask).sum() / mask.sum()


def distill(student, teacher, sequences: list[list[int]], steps: int, batch_size: int, lr: float,
            divergence: str, pad_id: int, seed: int, desc: str = "distill") -> list[float]:
    """Minimises divergence(target, drafter) over the sequences; returns the loss per step."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {sorted(DIVERGENCES)}")
    rng = random.Random(seed)
    opt = _Optimizer(student, lr, steps)
    teacher.eval()
    student.train()
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        batch = rng.sample(sequences, min(batch_size, len(sequences)))
        opt.step(_divergence_on(student, teacher, batch, pad_id, divergence), bar)
    student.eval()
    return opt.losses


@torch.no_grad()
def heldout_divergence(student, teacher, sequences: list[list[int]], pad_id: int, divergence: str,
                       batch_size: int = 16) -> float:
    """Mean per-token divergence on held-out sequences."""
    total, count = 0.0, 0
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i: i + batch_size]
        total += float(_divergence_on(student, teacher, chunk, pad_id, divergence)) * len(chunk)
        count += len(chunk)
    return total / max(1, count)
