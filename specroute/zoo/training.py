"""Training loops: pretraining a causal LM, generating on-policy data, distilling a drafter.

- `pretrain`: next-token cross-entropy on packed blocks of a token stream.
- `generate_on_policy`: continuations of task prompts sampled from a model (DistillSpec's
  on-policy data: from the drafter or the target).
- `distill`: trains a drafter to minimise a divergence (`specroute.zoo.divergence`) between the
  target's and its own next-token distributions where they predict those continuations (Zhou et
  al., 2024); the target's side comes from a `specroute.zoo.teacher.TeacherCache`.

`pretrain` checkpoints and resumes mid-run. Each loop shows a progress bar (with the time left)
and uses AdamW with warmup and cosine decay. This module knows
nothing about presets, files or which task the data came from.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from specroute.zoo.divergence import DIVERGENCES
from specroute.zoo.teacher import Sample, TeacherCache, logits_at, pad_batch


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
             desc: str = "pretrain", checkpoint: Path | None = None, checkpoint_every: int = 50,
             until: int | None = None, unlikelihood: float = 0.0,
             block_starts: Sequence[int] | None = None) -> list[float]:
    """Next-token training on random blocks of `tokens`; returns the loss per step.

    `block_starts`: the positions a block may start at (`document_starts`: where a document
    begins, as a prompt does at inference); None: anywhere.

    `unlikelihood` > 0 adds token-level unlikelihood training (Welleck et al., 2019, "Neural Text
    Generation with Unlikelihood Training"): at each position, -log(1 - p(c)) for every token c
    seen earlier in the block other than the next one, weighted by `unlikelihood`, against the
    repetition that maximum likelihood alone leaves in greedy output.

    With `checkpoint`, the whole training state (weights, optimizer, schedule, the batch sampler's
    and torch's random state, the losses) is written there every `checkpoint_every` steps, and a
    run that finds one resumes from it: an interrupted run continues where its last checkpoint
    was, with the same batches and the same weights as a run never interrupted (on the same
    machine and thread count: floating-point reductions are not bitwise across either). `until`
    stops after that many steps, with a checkpoint, as an interruption would.
    """
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"need more than {seq_len + 1} tokens to train on, got {len(tokens)}")
    data = torch.tensor(tokens, dtype=torch.long)
    last = len(data) - seq_len - 1
    starts_from = [s for s in block_starts if s < last] if block_starts is not None else None
    if starts_from == []:
        raise ValueError(f"no block start leaves {seq_len + 1} tokens to train on")
    rng = random.Random(seed)
    opt = _Optimizer(model, lr, steps)
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        start = _load_checkpoint(Path(checkpoint), model, opt, rng)
    model.train()
    end = steps if until is None else min(steps, until)
    bar = tqdm(range(start, end), desc=desc, initial=start, total=steps)
    for step in bar:
        starts = ([rng.randrange(0, last) for _ in range(batch_size)] if starts_from is None
                  else [starts_from[rng.randrange(len(starts_from))] for _ in range(batch_size)])
        batch = torch.stack([data[s: s + seq_len] for s in starts]).to(model.device)  # [B, T]
        opt.step(_lm_loss(model, batch, unlikelihood), bar)
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == end):
            _save_checkpoint(Path(checkpoint), step + 1, model, opt, rng)
    model.eval()
    return opt.losses


def document_starts(tokens: Sequence[int], end_of_text: int) -> list[int]:
    """Where each document of a token stream begins: 0 and every position after an end-of-text token."""
    return [0] + [i + 1 for i, t in enumerate(tokens) if t == end_of_text and i + 1 < len(tokens)]


def _lm_loss(model, batch: torch.Tensor, unlikelihood: float) -> torch.Tensor:
    """Next-token cross-entropy over batch [B, T], plus the weighted unlikelihood term."""
    if unlikelihood == 0:
        return model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
    logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits[:, :-1].float()  # [B, T-1, V]
    targets = batch[:, 1:]
    mle = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    # Candidates at position t: the tokens batch[:, :t + 1] (the context so far), but not the target.
    seen = torch.nn.functional.one_hot(batch[:, :-1], logits.shape[-1]).cumsum(dim=1) > 0  # [B, T-1, V]
    seen.scatter_(-1, targets.unsqueeze(-1), False)
    one_minus_p = (1 - torch.softmax(logits, dim=-1)).clamp_min(1e-5)
    ul = -(torch.log(one_minus_p) * seen).sum(-1).mean()
    return mle + unlikelihood * ul


def _save_checkpoint(path: Path, step: int, model, opt: "_Optimizer", rng: random.Random) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.opt.state_dict(),
             "schedule": opt.sched.state_dict(), "losses": opt.losses, "rng": rng.getstate(),
             "torch_rng": torch.get_rng_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # atomic: an interruption leaves the last whole checkpoint


def _load_checkpoint(path: Path, model, opt: "_Optimizer", rng: random.Random) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    model.load_state_dict(state["model"])
    opt.opt.load_state_dict(state["optimizer"])
    opt.sched.load_state_dict(state["schedule"])
    opt.losses[:] = state["losses"]
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


@torch.no_grad()
def generate_on_policy(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                       batch_size: int, max_prompt_tokens: int, seed: int, desc: str = "on-policy data") -> list[Sample]:
    """One sample per prompt: its ids and the sampled continuation (padding removed)."""
    torch.manual_seed(seed)
    samples = []
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
            samples.append(Sample(prompt, continuation))
    return samples


def _divergence_on(student, teacher: TeacherCache, indices: list[int], pad_id: int, divergence: str) -> torch.Tensor:
    """Mean per-position divergence(target, drafter) over the samples' predicting positions."""
    ids, attention, predicting = (t.to(student.device) for t in pad_batch([teacher.samples[i] for i in indices], pad_id))
    target_logprobs = teacher.dense(indices).to(student.device)  # [N, V]
    drafter_logits = logits_at(student, ids, attention, predicting)  # [N, V]
    return DIVERGENCES[divergence](target_logprobs, drafter_logits).mean()


def distill(student, teacher: TeacherCache, steps: int, batch_size: int, lr: float, divergence: str, pad_id: int,
            seed: int, desc: str = "distill") -> list[float]:
    """Minimises divergence(target, drafter) over the teacher's samples; returns the loss per step."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {sorted(DIVERGENCES)}")
    rng = random.Random(seed)
    opt = _Optimizer(student, lr, steps)
    student.train()
    bar = tqdm(range(steps), desc=desc, leave=False)
    for _ in bar:
        batch = rng.sample(range(len(teacher)), min(batch_size, len(teacher)))
        opt.step(_divergence_on(student, teacher, batch, pad_id, divergence), bar)
    student.eval()
    return opt.losses


@torch.no_grad()
def heldout_divergence(student, teacher: TeacherCache, pad_id: int, divergence: str, batch_size: int = 16) -> float:
    """Mean per-position divergence on held-out samples."""
    total, count = 0.0, 0
    for i in range(0, len(teacher), batch_size):
        indices = list(range(i, min(len(teacher), i + batch_size)))
        positions = sum(len(teacher.samples[j].continuation) for j in indices)
        total += float(_divergence_on(student, teacher, indices, pad_id, divergence)) * positions
        count += positions
    return total / max(1, count)
