"""Training a steered drafter (SD²) and `specroute steer`.

Berdoz, Rheinboldt and Wattenhofer, "Steering Pretrained Drafters during Speculative Decoding"
(AAAI 2026, arXiv 2511.09844; code: github.com/ETH-DISCO/SD-square). The verifier (target) is
frozen. The drafter is fine-tuned together with the steering maps (`drafter_service.steering`:
W_hml, initialised to [I, I, I], and the zero-initialised per-layer map) to minimise the
token-level KL(p_target || p_drafter) on text the target generated, at every position that
predicts a continuation token. Position t is steered by the target's states at t - e, with e
drawn uniformly from [1, k] per position (the paper's random offset, k = `max_offset`): at
inference one steering vector serves a whole draft block, whose tokens sit 1 to depth + 1
positions after the state. Positions with no state before them (t - e < 0) run unsteered, and so
do the prompt's tokens before the first root (`unsteered_prompt`): at inference the prompt is run
before any block was drafted, under no bias.

`SteeringStateCache` runs the target once over every sample and keeps its states at the three
layers ([T, 3, d_V], float16), beside the `specroute.zoo.teacher.TeacherCache` of the same
samples, so a training step costs the drafter's forward and backward only. The held-out report
is the same divergence with the offsets drawn from a fixed seed, before training (the zero
map: exactly the unsteered drafter) and after, and after with the bias left out (the fine-tuned
drafter alone: how much of the gain is steering and how much fine-tuning).

`run_steer` is the CLI's job: the target continues the user's prompts (sampled and greedy, as
the paper trains on both), the caches are built, the drafter is steered and saved as a steered
drafter directory (`drafter_service.steered_drafter`) with `steer_report.json`. This module knows
nothing about presets or how the drafter was made.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.hf import captured_states, decoder_layers, resolve_device
from core.states import InvalidStateRequestError, StateRequest
from drafter_service.base import DRAFTER_FILE, directory_kind
from drafter_service.steering import (SteeringFile, SteeringHooks, SteeringModule, default_layers, offset_biases,
                                      sample_offsets)
from specroute.zoo.divergence import forward_kl
from specroute.zoo.distill import load_prompts, load_target, split_prompts
from specroute.zoo.presets import SteerTrainSpec
from specroute.zoo.teacher import Sample, TeacherCache, logits_at, pad_batch
from specroute.zoo.training import _Optimizer, generate_on_policy

REPORT = "steer_report.json"


class SteeringStateCache:
    """Per sample: the target's states at the three steering layers, [T, 3, d_V] float16 on the cpu."""

    def __init__(self, samples: list[Sample], states: list[torch.Tensor], layers: tuple[int, int, int]):
        if len(samples) != len(states) or any(len(s.ids) != x.shape[0] for s, x in zip(samples, states)):
            raise ValueError("one row of states per token of every sample is needed")
        self.samples, self.states, self.layers = samples, states, layers

    @classmethod
    @torch.no_grad()
    def build(cls, target, samples: list[Sample], layers: tuple[int, int, int], pad_id: int, batch_size: int = 16,
              desc: str = "target states") -> "SteeringStateCache":
        resolved = StateRequest(layers=layers).resolve(len(decoder_layers(target)))
        out: list[torch.Tensor] = []
        with captured_states(target, resolved, all_rows=True) as captured:
            for i in tqdm(range(0, len(samples), batch_size), desc=desc, leave=False):
                chunk = samples[i: i + batch_size]
                ids, attention, _ = (t.to(target.device) for t in pad_batch(chunk, pad_id))
                target.base_model(input_ids=ids, attention_mask=attention)
                stacked = torch.stack([captured[layer] for layer in resolved], dim=2)  # [B, T, 3, d_V]
                out.extend(stacked[j, : len(s.ids)].to(torch.float16).cpu() for j, s in enumerate(chunk))
        return cls(samples, out, resolved)

    def batch(self, indices: list[int], device) -> torch.Tensor:
        """Right-padded states [B, T, 3, d_V] (float32; zeros past each sample's end)."""
        width = max(self.states[i].shape[0] for i in indices)
        _, three, hidden = self.states[indices[0]].shape
        batch = torch.zeros(len(indices), width, three, hidden)
        for row, i in enumerate(indices):
            batch[row, : self.states[i].shape[0]] = self.states[i].float()
        return batch.to(device)

    def save(self, path) -> None:
        torch.save({"samples": [(s.prompt, s.continuation) for s in self.samples], "states": self.states,
                    "layers": list(self.layers)}, path)

    @classmethod
    def load(cls, path) -> "SteeringStateCache":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls([Sample(list(p), list(c)) for p, c in state["samples"]], state["states"], tuple(state["layers"]))


class SteeredModel(torch.nn.Module):
    """A drafter and its steering maps, as one module to train and save."""

    def __init__(self, drafter, steering: SteeringModule, hooks: SteeringHooks):
        super().__init__()
        self.drafter, self.steering = drafter, steering
        self.hooks = hooks

    @classmethod
    def around(cls, drafter, target_hidden: int) -> "SteeredModel":
        """A new (zero) steering for `drafter`: the drafter's output is unchanged until trained."""
        hooks = SteeringHooks(drafter)
        steering = SteeringModule(target_hidden, hooks.n_layers, hooks.d_ff).to(drafter.device)
        return cls(drafter, steering, hooks)

    def logits(self, ids, attention, predicting, states: torch.Tensor, offsets: torch.Tensor,
               steered: bool = True) -> torch.Tensor:
        """The drafter's logits at the predicting positions [N, V], position t steered by states[t - offsets[t]]
        (`steered=False`: the same drafter with no bias, to tell steering from fine-tuning)."""
        biases = unsteered_prompt(offset_biases(self.steering(states), offsets), predicting) if steered else None
        with self.hooks.steer(biases):
            return logits_at(self.drafter, ids, attention, predicting)

    def save(self, out: Path, tokenizer, layers: tuple[int, int, int], max_offset: int, base: str | None) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.drafter.save_pretrained(out)
        tokenizer.save_pretrained(out)
        self.steering.save(out)
        record = SteeringFile(layers=layers, target_hidden=self.steering.target_hidden, max_offset=max_offset,
                              base=base)
        (out / DRAFTER_FILE).write_text(record.model_dump_json(indent=2))


def unsteered_prompt(biases: torch.Tensor, predicting: torch.Tensor) -> torch.Tensor:
    """The biases [B, T, n_layers, d_ff] with those of each row's positions before its first predicting
    position (the prompt before the first root; predicting [B, T]) set to zero."""
    drafted = predicting.long().cumsum(dim=1) > 0
    return biases * drafted.unsqueeze(-1).unsqueeze(-1).to(biases.dtype)


def _kl_on(model: SteeredModel, teacher: TeacherCache, states: SteeringStateCache, indices: list[int], pad_id: int,
           max_offset: int, generator: torch.Generator, steered: bool = True) -> torch.Tensor:
    device = model.drafter.device
    ids, attention, predicting = (t.to(device) for t in pad_batch([teacher.samples[i] for i in indices], pad_id))
    offsets = sample_offsets(ids.shape[1], max_offset, generator, batch=len(indices)).to(device)
    logits = model.logits(ids, attention, predicting, states.batch(indices, device), offsets, steered)
    return forward_kl(teacher.dense(indices).to(device), logits).mean()


def _check_aligned(teacher: TeacherCache, states: SteeringStateCache) -> None:
    if [s.ids for s in teacher.samples] != [s.ids for s in states.samples]:
        raise ValueError("the teacher cache and the state cache must hold the same samples, in the same order")


def train_steering(model: SteeredModel, teacher: TeacherCache, states: SteeringStateCache, spec: SteerTrainSpec,
                   pad_id: int, seed: int, desc: str = "steer") -> list[float]:
    """Minimises KL(target || steered drafter) with random offsets; returns the loss per step."""
    _check_aligned(teacher, states)
    for p in model.drafter.parameters():
        p.requires_grad_(not spec.freeze_drafter)
    trained = model.steering if spec.freeze_drafter else model
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = _Optimizer(trained, spec.lr, spec.steps)
    model.train()
    bar = tqdm(range(spec.steps), desc=desc, leave=False)
    for _ in bar:
        batch = rng.sample(range(len(teacher)), min(spec.batch_size, len(teacher)))
        opt.step(_kl_on(model, teacher, states, batch, pad_id, spec.max_offset, generator), bar)
    model.eval()
    for p in model.drafter.parameters():
        p.requires_grad_(True)
    return opt.losses


@torch.no_grad()
def heldout_kl(model: SteeredModel, teacher: TeacherCache, states: SteeringStateCache, pad_id: int,
               max_offset: int, batch_size: int = 16, seed: int = 0, steered: bool = True) -> float:
    """Mean per-position KL(target || steered drafter) on held-out samples, offsets drawn from `seed`
    (`steered=False`: the drafter's own, with no bias)."""
    _check_aligned(teacher, states)
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i in range(0, len(teacher), batch_size):
        indices = list(range(i, min(len(teacher), i + batch_size)))
        positions = sum(len(teacher.samples[j].continuation) for j in indices)
        total += float(_kl_on(model, teacher, states, indices, pad_id, max_offset, generator, steered)) * positions
        count += positions
    return total / max(1, count)


def steer_from_caches(drafter, target_hidden: int, layers: tuple[int, int, int], caches: dict, spec: SteerTrainSpec,
                      pad_id: int, seed: int, desc: str = "steer") -> tuple[SteeredModel, dict]:
    """Steers `drafter` on caches {"train": (TeacherCache, SteeringStateCache), "heldout": (...)}; the model
    and its report (held-out KL before and after, the loss)."""
    model = SteeredModel.around(drafter, target_hidden)
    before = heldout_kl(model, *caches["heldout"], pad_id, spec.max_offset)
    losses = train_steering(model, *caches["train"], spec, pad_id, seed, desc=desc)
    after = heldout_kl(model, *caches["heldout"], pad_id, spec.max_offset)
    unsteered = heldout_kl(model, *caches["heldout"], pad_id, spec.max_offset, steered=False)
    return model, {"layers": list(layers), "train": spec.model_dump(), "final_loss": losses[-1],
                   "heldout_kl_before": before, "heldout_kl_after": after, "heldout_kl_after_unsteered": unsteered,
                   "train_positions": sum(len(s.continuation) for s in caches["train"][0].samples),
                   "heldout_positions": sum(len(s.continuation) for s in caches["heldout"][0].samples)}


class SteerConfig(BaseModel):
    """`specroute steer`'s settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: SteerTrainSpec = Field(default_factory=SteerTrainSpec)
    layers: tuple[int, int, int] | None = Field(None, description="The target's low, middle and high layers "
                                                "(`core.states` numbering); None: spread over its depth.")
    max_new_tokens: int = Field(64, ge=1, description="Length of the target's continuation of each prompt.")
    temperatures: tuple[float, ...] = Field((1.0, 0.0), min_length=1, description="The target continues every "
                                            "prompt once at each temperature (0: greedy).")
    max_prompt_tokens: int = Field(192, ge=1)
    teacher_top_k: int = Field(64, ge=1, description="Target log-probabilities kept per position.")
    heldout_fraction: float = Field(0.1, gt=0, le=0.5, description="Share of prompts held out for the report.")
    device: str = Field("auto", description="Torch device; 'auto' is cuda when available, else cpu.")
    seed: int = Field(0)


def _caches(target, tokenizer, prompts: list[str], layers, config: SteerConfig, seed: int, split: str):
    samples = []
    for i, temperature in enumerate(config.temperatures):
        samples += generate_on_policy(target, tokenizer, prompts, config.max_new_tokens, temperature,
                                      config.train.batch_size, config.max_prompt_tokens, seed + i,
                                      desc=f"on-policy {split} T={temperature:g}")
    pad = tokenizer.pad_token_id
    teacher = TeacherCache.build(target, samples, pad, config.teacher_top_k, config.train.batch_size,
                                 desc=f"teacher {split}")
    return teacher, SteeringStateCache.build(target, teacher.samples, layers, pad, config.train.batch_size,
                                             desc=f"states {split}")


def run_steer(target: Path, drafter: Path, prompts: Path, out: Path, config: SteerConfig) -> dict:
    """Steers the model drafter in `drafter` to `target` on the target's continuations of `prompts`;
    writes a steered drafter directory to `out` with its report."""
    start = time.perf_counter()
    drafter = Path(drafter)
    if not (drafter / "config.json").is_file():
        raise ValueError(f"drafter {drafter} is not a model directory (no config.json)")
    if directory_kind(drafter) is not None:
        raise ValueError(f"drafter {drafter} is a {directory_kind(drafter)} drafter; steering starts from a plain "
                         "model drafter directory")
    out = Path(out)
    if out.resolve() == drafter.resolve():
        raise ValueError("--out must not be the drafter's own directory")
    device = resolve_device(config.device)
    target_model, tokenizer = load_target(target, device)
    draft_tokenizer = AutoTokenizer.from_pretrained(drafter)
    if draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"drafter {drafter} has another tokenizer vocabulary than the target {target}")
    model = AutoModelForCausalLM.from_pretrained(drafter).to(device).eval()
    num_layers = len(decoder_layers(target_model))
    try:
        layers = StateRequest(layers=config.layers or default_layers(num_layers)).resolve(num_layers)
    except InvalidStateRequestError as err:
        raise ValueError(f"--layers: {err.message}") from None
    train_prompts, heldout_prompts = split_prompts(load_prompts(prompts), config.heldout_fraction, config.seed)
    saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    caches = {"train": _caches(target_model, tokenizer, train_prompts, layers, config, config.seed, "train"),
              "heldout": _caches(target_model, tokenizer, heldout_prompts, layers, config, config.seed + 100,
                                 "held-out")}
    tokenizer.padding_side = saved_side
    steered, report = steer_from_caches(model, target_model.config.hidden_size, layers, caches, config.train,
                                        tokenizer.pad_token_id, config.seed, desc=f"steer {drafter.name}")
    steered.save(out, tokenizer, layers, config.train.max_offset, base=str(drafter))
    report = {"target": str(target), "drafter": str(drafter), "prompts": str(prompts),
              "config": config.model_dump(mode="json"), "device": device,
              "num_train_prompts": len(train_prompts), "num_heldout_prompts": len(heldout_prompts),
              **report, "seconds": round(time.perf_counter() - start, 1)}
    (out / REPORT).write_text(json.dumps(report, indent=2))
    print(f"[steer] held-out KL(target || drafter): {report['heldout_kl_before']:.4f} -> "
          f"{report['heldout_kl_after']:.4f} ({len(train_prompts)} train / {len(heldout_prompts)} held-out prompts, "
          f"{report['seconds']} s); steered drafter saved to {out}")
    return report
