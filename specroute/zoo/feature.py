"""Training a feature drafter (EAGLE) on the target's cached features, unrolled over draft steps (HASS, PosS).

`FeatureStateCache.build` runs the target once over every sample (prompt + continuation) and
keeps its ids and the target's last-layer features before the final norm (`core.states` layer
-1, what the drafter reads at inference) as float16. Training then costs the drafter only.

`train_feature_drafter` minimises, per draft step d (weight `step_decay` ** d, normalised over
steps), EAGLE's loss (Li et al., 2024, arXiv 2401.15077): a smooth-L1 regression of the
predicted feature onto the target's (`feature_weight`; with FSPAD's partial alignment, Gui et
al., 2024, arXiv 2408.15562, only the model's `aligned_dims()` leading dimensions), plus the
cross-entropy of the drafter's logits against the target's next-token distribution
(`ce_weight`), a soft label computed from the cached features through the frozen norm and head.
Every position of a sample trains, the prompt's and the continuation's: each is a position the
target ran and a drafter may draft from.

Unrolled training (HASS, Zhang et al., 2024, arXiv 2408.15766; PosS, Huang et al., 2025, arXiv
2506.03566): step 0 reads the true pairs (f_t, x_{t+1}) at position t + 1; step d >= 1 reads, for
the chain rooted at pair t, the drafter's own step d - 1 output in place of the target's feature,
with the token x_{t+d+1} at position t + d + 1, through `specialist_for(d)`. The outputs are not
detached: a later step's loss also trains the earlier steps that fed it. Attention is exactly the
inference tree's: step d's query of chain t sees the step-0 entries at pairs <= t and its own
chain's entries at steps 1..d, built as one KV cache (step after step, T entries each) and a mask
per step (`unrolled_mask`). `heldout_report` gives, per draft step, the top-1 agreement with the
target's argmax (an acceptance proxy per draft position) and the mean cross-entropy.

This module knows nothing about presets, files other than its own cache, or how samples were made.
"""

from __future__ import annotations

import random

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from core.hf import decoder_layers
from drafter_service.feature_model import FeatureDraftModel
from specroute.zoo.teacher import Sample, pad_batch
from specroute.zoo.training import _Optimizer


class FeatureStateCache:
    """Per sample: its ids and the target's last-layer pre-norm features [T, H] (float16, cpu)."""

    def __init__(self, samples: list[Sample], features: list[torch.Tensor]):
        if len(samples) != len(features) or any(len(s.ids) != f.shape[0] for s, f in zip(samples, features)):
            raise ValueError("one feature row per token of every sample is needed")
        self.samples = samples
        self.features = features

    def __len__(self) -> int:
        return len(self.samples)

    @classmethod
    @torch.no_grad()
    def build(cls, target_model, samples: list[Sample], batch_size: int = 8, progress: bool = True,
              desc: str = "target features") -> "FeatureStateCache":
        samples = [s for s in samples if len(s.ids) >= 2]
        if not samples:
            raise ValueError("no sample has two tokens to train a feature drafter on")
        captured: list[torch.Tensor] = []

        def keep(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = decoder_layers(target_model)[-1].register_forward_hook(keep)
        features: list[torch.Tensor] = []
        try:
            for i in tqdm(range(0, len(samples), batch_size), desc=desc, leave=False, disable=not progress):
                chunk = samples[i: i + batch_size]
                ids, attention, _ = (t.to(target_model.device) for t in pad_batch(chunk, 0))
                captured.clear()
                target_model.base_model(input_ids=ids, attention_mask=attention)
                rows = captured[-1]  # [B, T, H]
                features.extend(rows[j, : len(s.ids)].to(torch.float16).cpu() for j, s in enumerate(chunk))
        finally:
            handle.remove()
        return cls(samples, features)

    def save(self, path) -> None:
        torch.save({"samples": [(s.prompt, s.continuation) for s in self.samples], "features": self.features}, path)

    @classmethod
    def load(cls, path) -> "FeatureStateCache":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls([Sample(list(p), list(c)) for p, c in state["samples"]], state["features"])

    def batch(self, indices: list[int], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded features [B, T, H] (float32), ids [B, T], lengths [B]."""
        lengths = torch.tensor([len(self.samples[i].ids) for i in indices])
        width, hidden = int(lengths.max()), self.features[indices[0]].shape[-1]
        features = torch.zeros(len(indices), width, hidden)
        ids = torch.zeros(len(indices), width, dtype=torch.long)
        for row, i in enumerate(indices):
            features[row, : lengths[row]] = self.features[i].float()
            ids[row, : lengths[row]] = torch.tensor(self.samples[i].ids)
        return features.to(device), ids.to(device), lengths.to(device)


class FeatureTrainSpec(BaseModel):
    """How a feature drafter trains (EAGLE's loss weights, HASS/PosS unrolling)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    train_depth: int | None = Field(None, ge=1, description="Unrolled draft steps; None: the model's train_depth.")
    feature_weight: float = Field(1.0, ge=0, description="Smooth-L1 feature regression weight.")
    ce_weight: float = Field(0.1, ge=0, description="Cross-entropy weight against the target's distribution.")
    step_decay: float = Field(0.8, gt=0, description="Draft step d weighs step_decay ** d.")
    max_tokens: int = Field(512, ge=2, description="Samples are cut to their first max_tokens ids.")


def unrolled_mask(pairs: int, step: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive [1, 1, n, (step + 1) n] mask of step `step`'s n queries over the keys of steps 0..step.

    Query t (the chain rooted at pair t) sees step-0 keys 0..t and, at each step j in 1..step, key t.
    """
    allowed = torch.zeros(pairs, (step + 1) * pairs, dtype=torch.bool, device=device)
    allowed[:, :pairs] = torch.ones(pairs, pairs, dtype=torch.bool, device=device).tril()
    rows = torch.arange(pairs, device=device)
    for j in range(1, step + 1):
        allowed[rows, j * pairs + rows] = True
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def unrolled_forward(model: FeatureDraftModel, features: torch.Tensor, ids: torch.Tensor,
                     depth: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Steps 0..depth-1 over features [B, T, H] and ids [B, T]: per step (g, logits) [B, T - 1, .].

    Row t of step d is the chain rooted at pair t, at position t + d + 1, predicting feature
    t + d + 1; rows whose position lies past the sequence carry a clamped token and no meaning.
    """
    pairs = ids.shape[1] - 1
    rows = torch.arange(pairs, device=ids.device)
    cache = model.new_cache()
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    previous = features[:, :-1]
    for d in range(depth):
        where = (rows + d + 1).clamp(max=pairs)  # position, and index of the token carried
        positions = where[None].expand(ids.shape[0], pairs)
        mask = unrolled_mask(pairs, d, model.dtype, ids.device)
        g, logits = model(previous, ids[:, where], positions, cache, mask, d)
        outputs.append((g, logits))
        previous = g
    return outputs


def feature_term(model: FeatureDraftModel, predicted: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 over the aligned dimensions (FSPAD partial alignment: the first `aligned_dims()`), valid rows."""
    k = model.aligned_dims()
    loss = torch.nn.functional.smooth_l1_loss(predicted[..., :k].float(), target[..., :k].float(), reduction="none")
    return loss.mean(-1)[valid].mean()


def _step_terms(model: FeatureDraftModel, outputs, features: torch.Tensor, lengths: torch.Tensor):
    """Per step d: (feature term, soft cross-entropy, top-1 agreement, valid count)."""
    pairs = features.shape[1] - 1
    with torch.no_grad():
        target_logp = torch.log_softmax(model.logits(features.to(model.dtype)).float(), -1)  # [B, T, V]
    rows = torch.arange(pairs, device=features.device)
    terms = []
    for d, (g, logits) in enumerate(outputs):
        label = (rows + d + 1).clamp(max=pairs)
        valid = (rows + d + 1)[None] <= (lengths[:, None] - 1)  # [B, pairs]
        if not valid.any():
            break
        feat = feature_term(model, g, features[:, label], valid)
        target = target_logp[:, label][valid]  # [N, V]
        drafted = torch.log_softmax(logits.float()[valid], -1)
        ce = -(target.exp() * drafted).sum(-1).mean()
        agree = (drafted.argmax(-1) == target.argmax(-1)).float().sum()
        terms.append((feat, ce, agree, int(valid.sum())))
    return terms


def train_feature_drafter(model: FeatureDraftModel, cache: FeatureStateCache, spec: FeatureTrainSpec, seed: int,
                          progress: bool = True, desc: str = "feature drafter") -> dict:
    """Trains the model's own weights in place (a new model, or one loaded from a directory to fine-tune).

    Returns {"losses": the loss per step, "final_loss": the mean of the last tenth of them}.
    """
    depth = spec.train_depth or model.config.train_depth
    rng = random.Random(seed)
    opt = _Optimizer(model, spec.lr, spec.steps)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bar = tqdm(range(spec.steps), desc=desc, leave=False, disable=not progress)
        for _ in bar:
            indices = rng.sample(range(len(cache)), min(spec.batch_size, len(cache)))
            features, ids, lengths = cache.batch(indices, model.device)
            features, ids, lengths = features[:, : spec.max_tokens], ids[:, : spec.max_tokens], lengths.clamp(
                max=spec.max_tokens)
            terms = _step_terms(model, unrolled_forward(model, features, ids, depth), features, lengths)
            weights = [spec.step_decay ** d for d in range(len(terms))]
            loss = sum(w * (spec.feature_weight * feat + spec.ce_weight * ce)
                       for w, (feat, ce, _, _) in zip(weights, terms)) / sum(weights)
            opt.step(loss, bar)
    model.eval()
    tail = opt.losses[-max(1, len(opt.losses) // 10):]
    return {"losses": opt.losses, "final_loss": sum(tail) / len(tail)}


@torch.no_grad()
def heldout_report(model: FeatureDraftModel, cache: FeatureStateCache, depth: int, batch_size: int = 8) -> dict:
    """Per draft step: top-1 agreement with the target's argmax and mean cross-entropy, over held-out samples.

    Returns {"agreement": [step 0, ...], "ce": [...], "positions": [...]}.
    """
    agree, ce, count = [0.0] * depth, [0.0] * depth, [0] * depth
    model.eval()
    for i in range(0, len(cache), batch_size):
        features, ids, lengths = cache.batch(list(range(i, min(len(cache), i + batch_size))), model.device)
        for d, (_, step_ce, step_agree, n) in enumerate(
                _step_terms(model, unrolled_forward(model, features, ids, depth), features, lengths)):
            agree[d] += float(step_agree)
            ce[d] += float(step_ce) * n
            count[d] += n
    return {"agreement": [a / max(1, n) for a, n in zip(agree, count)],
            "ce": [c / max(1, n) for c, n in zip(ce, count)], "positions": count}
