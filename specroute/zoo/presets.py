"""What a zoo build makes: model architectures, training budgets, and the `tiny` and `bench` presets.

- `tiny`: seconds of training; for tests, which need real artifacts, not good ones. It has all
  six task families and a specialist per task, two of them sized, so tests cover the whole
  pipeline.
- `demo`: a few minutes of training; the README's demo, readable output on a laptop.
- `bench`: all six families; a target whose decoding step costs more than eight drafter steps
  on a 2-core CPU (it is deep and narrow: on a CPU, per-layer overhead dominates, much as memory
  bandwidth does on a GPU, so verifying 16 tokens costs little more than 1); a generic drafter
  and a specialist per task, each specialist's family alternating and its size (or ngram)
  chosen by measurement.

This module knows nothing about training loops or files; `specroute.zoo.build` runs a preset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


class ArchSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Literal["llama", "gpt2"] = Field(description="Model family (HF architecture).")
    hidden: int = Field(ge=16, description="Hidden size.")
    layers: int = Field(ge=1, description="Number of transformer blocks.")
    heads: int = Field(4, ge=1, description="Attention heads.")

    def build(self, vocab_size: int, max_positions: int, eos_id: int, seed: int):
        import torch
        torch.manual_seed(seed)
        if self.family == "llama":
            config = LlamaConfig(vocab_size=vocab_size, hidden_size=self.hidden, intermediate_size=int(self.hidden * 2.75),
                                 num_hidden_layers=self.layers, num_attention_heads=self.heads,
                                 num_key_value_heads=max(1, self.heads // 2), max_position_embeddings=max_positions,
                                 bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                                 tie_word_embeddings=True)
            return LlamaForCausalLM(config)
        config = GPT2Config(vocab_size=vocab_size, n_embd=self.hidden, n_layer=self.layers, n_head=self.heads,
                            n_positions=max_positions, bos_token_id=eos_id, eos_token_id=eos_id,
                            pad_token_id=eos_id, tie_word_embeddings=True)
        return GPT2LMHeadModel(config)


class TrainSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(ge=0, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")


NGRAM = "ngram"


class DrafterSpec(BaseModel):
    """A drafter to build. With several candidates, the build sizes it by measurement: each
    candidate is trained briefly (the pretraining, then `Preset.sizing.distill_steps` of
    distillation), each is measured through the engine on the task's validation prompts, and the
    fastest continues its distillation; the model-free ngram drafter can be a candidate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Directory and manifest name; a sized drafter's name gets its winner's label.")
    candidates: tuple[ArchSpec | Literal["ngram"], ...] = Field(min_length=1, description="Architectures to choose from.")
    task: str | None = Field(None, description="Task family it is specialised for; None is the generic drafter.")
    pretrain: TrainSpec = Field(description="Plain next-token training on the task's text first.")
    distill: TrainSpec = Field(description="DistillSpec alignment to the target on on-policy data.")
    divergence: str = Field("forward_kl", description="forward_kl, reverse_kl or tv.")

    @property
    def sized(self) -> bool:
        return len(self.candidates) > 1


def label(candidate: ArchSpec | str) -> str:
    """'llama-128x2' for an architecture, 'ngram' for the model-free drafter."""
    return candidate if isinstance(candidate, str) else f"{candidate.family}-{candidate.hidden}x{candidate.layers}"


class SizingSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    distill_steps: int = Field(ge=1, description="Distillation steps of each candidate before it is measured.")
    prompts: int = Field(ge=1, description="Validation prompts of the task each candidate generates from.")
    max_new_tokens: int = Field(ge=1, description="Tokens generated per prompt.")


class OnPolicySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompts_per_task: int = Field(ge=1, description="Training prompts continued by the target, per task.")
    max_new_tokens: int = Field(ge=1, description="Continuation length.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of the continuations.")
    heldout_prompts: int = Field(16, ge=1, description="Validation prompts for the held-out divergence.")


class Preset(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    seed: int = 0
    families: tuple[str, ...] = ("code", "prose")
    max_per_family: int | None = Field(None, description="Cap on examples per family (None: all).")
    vocab_size: int = Field(ge=300)
    seq_len: int = Field(ge=16, description="Training block length.")
    max_positions: int = Field(ge=64, description="Context window of every model.")
    max_prompt_tokens: int = Field(ge=8, description="Prompts are truncated to this for on-policy data.")
    target: ArchSpec
    target_train: TrainSpec
    drafters: tuple[DrafterSpec, ...]
    on_policy: OnPolicySpec
    teacher_top_k: int = Field(64, ge=1, description="Target log-probabilities kept per distilled position.")
    sizing: SizingSpec | None = Field(None, description="How candidates of a sized drafter are compared.")
    max_step_cost_ratio: float | None = Field(
        None, gt=0, description="A model drafter's decoding step may cost at most this share of the target's "
                                "(measured); sizing skips candidates above it.")

    @model_validator(mode="after")
    def _sizing_when_needed(self) -> "Preset":
        if any(d.sized for d in self.drafters) and self.sizing is None:
            raise ValueError("a drafter has several candidates, so the preset needs `sizing`")
        return self


ALL_FAMILIES = ("code", "prose", "math", "translation", "extraction", "structured")


def _tiny_specialist(task: str, divergence: str, *candidates: ArchSpec | str) -> DrafterSpec:
    name = task if len(candidates) > 1 else f"{task}-{candidates[0].family}"
    return DrafterSpec(name=name, task=task, candidates=candidates, pretrain=TrainSpec(steps=30, lr=3e-3),
                       distill=TrainSpec(steps=30, lr=3e-3), divergence=divergence)


def _tiny(family: str, layers: int = 1) -> ArchSpec:
    return ArchSpec(family=family, hidden=32, layers=layers)


TINY = Preset(
    name="tiny", families=ALL_FAMILIES, max_per_family=400, vocab_size=512, seq_len=64, max_positions=256,
    max_prompt_tokens=48,
    target=ArchSpec(family="llama", hidden=64, layers=2),
    target_train=TrainSpec(steps=120, batch_size=8, lr=3e-3),
    drafters=(
        DrafterSpec(name="generic-llama", candidates=(_tiny("llama"),),
                    pretrain=TrainSpec(steps=40, lr=3e-3), distill=TrainSpec(steps=40, lr=3e-3)),
        DrafterSpec(name="generic-gpt2", candidates=(_tiny("gpt2"),),
                    pretrain=TrainSpec(steps=40, lr=3e-3), distill=TrainSpec(steps=40, lr=3e-3)),
        # A specialist per task: both families and all three divergences are exercised, and two
        # are sized by measurement (two depths; a model against ngram).
        _tiny_specialist("code", "forward_kl", _tiny("llama"), _tiny("llama", layers=2)),
        _tiny_specialist("prose", "reverse_kl", _tiny("gpt2")),
        _tiny_specialist("math", "tv", _tiny("llama")),
        _tiny_specialist("translation", "forward_kl", _tiny("gpt2")),
        _tiny_specialist("extraction", "reverse_kl", _tiny("llama"), NGRAM),
        _tiny_specialist("structured", "tv", _tiny("gpt2")),
    ),
    on_policy=OnPolicySpec(prompts_per_task=24, max_new_tokens=24, heldout_prompts=8),
    sizing=SizingSpec(distill_steps=10, prompts=2, max_new_tokens=12),
)

DEMO = Preset(
    name="demo", vocab_size=2048, seq_len=128, max_positions=512, max_prompt_tokens=96,
    target=ArchSpec(family="llama", hidden=256, layers=8),
    target_train=TrainSpec(steps=450, batch_size=8, lr=2e-3),
    drafters=(
        DrafterSpec(name="generic-llama", candidates=(ArchSpec(family="llama", hidden=96, layers=1),),
                    pretrain=TrainSpec(steps=300, lr=3e-3), distill=TrainSpec(steps=150, batch_size=16, lr=2e-3)),
    ),
    on_policy=OnPolicySpec(prompts_per_task=192, max_new_tokens=48, heldout_prompts=16),
)


def _bench_specialist(task: str, *candidates: ArchSpec | str) -> DrafterSpec:
    return DrafterSpec(name=task, task=task, candidates=candidates, pretrain=TrainSpec(steps=300, lr=2e-3),
                       distill=TrainSpec(steps=300, batch_size=16, lr=1e-3))


def _arch(family: str, hidden: int, layers: int) -> ArchSpec:
    return ArchSpec(family=family, hidden=hidden, layers=layers)


BENCH = Preset(
    name="bench", families=ALL_FAMILIES, vocab_size=4096, seq_len=256, max_positions=1024, max_prompt_tokens=192,
    # 16 layers: with 12, a 2-layer Llama drafter's step measured 0.09-0.15 of the target's on the
    # 2-core machine, too close to the 1/8 bound; depth is what a CPU decoding step pays for.
    target=ArchSpec(family="llama", hidden=256, layers=16),
    target_train=TrainSpec(steps=700, batch_size=8, lr=1.5e-3),
    drafters=(
        DrafterSpec(name="generic-llama", candidates=(_arch("llama", 128, 2),),
                    pretrain=TrainSpec(steps=600, lr=2e-3), distill=TrainSpec(steps=400, batch_size=16, lr=1e-3)),
        # Specialists alternate the two families; each task's depth and width (or ngram) is
        # measured, among a smaller and a larger candidate.
        _bench_specialist("code", _arch("llama", 128, 2), _arch("llama", 192, 2)),
        _bench_specialist("prose", _arch("gpt2", 128, 2), _arch("gpt2", 192, 2)),
        _bench_specialist("math", _arch("llama", 96, 1), _arch("llama", 128, 2)),
        _bench_specialist("translation", _arch("gpt2", 96, 1), _arch("gpt2", 128, 2)),
        _bench_specialist("extraction", _arch("llama", 128, 2), NGRAM),
        _bench_specialist("structured", _arch("gpt2", 96, 1), _arch("gpt2", 128, 2)),
    ),
    on_policy=OnPolicySpec(prompts_per_task=256, max_new_tokens=96, heldout_prompts=32),
    sizing=SizingSpec(distill_steps=100, prompts=8, max_new_tokens=48),
    max_step_cost_ratio=1 / 8,
)

PRESETS = {p.name: p for p in (TINY, DEMO, BENCH)}
