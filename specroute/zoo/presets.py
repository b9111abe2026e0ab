"""What a zoo build makes: model architectures, training budgets, and the `tiny` and `bench` presets.

- `tiny`: seconds of training; for tests, which need real artifacts, not good ones. It has all
  six task families and a specialist per task, so tests cover the whole pipeline.
- `demo`: a few minutes of training; the README's demo, readable output on a laptop.
- `bench` (code and prose, generic drafters, as the committed engine results were measured): a
  target whose decoding step costs several drafter steps on a 2-core CPU (it is deep
  and narrow: on a CPU, per-layer overhead dominates, much as memory bandwidth does on a GPU, so
  verifying 16 tokens costs little more than 1), and drafters distilled to it.

This module knows nothing about training loops or files; `specroute.zoo.build` runs a preset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
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


class DrafterSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Directory and manifest name.")
    arch: ArchSpec
    task: str | None = Field(None, description="Task family it is specialised for; None is the generic drafter.")
    pretrain: TrainSpec = Field(description="Plain next-token training on the task's text first.")
    distill: TrainSpec = Field(description="DistillSpec alignment to the target on on-policy data.")
    divergence: str = Field("forward_kl", description="forward_kl, reverse_kl or tv.")


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


ALL_FAMILIES = ("code", "prose", "math", "translation", "extraction", "structured")


def _tiny_specialist(task: str, family: str, divergence: str) -> DrafterSpec:
    return DrafterSpec(name=f"{task}-{family}", task=task, arch=ArchSpec(family=family, hidden=32, layers=1),
                       pretrain=TrainSpec(steps=30, lr=3e-3), distill=TrainSpec(steps=30, lr=3e-3),
                       divergence=divergence)


TINY = Preset(
    name="tiny", families=ALL_FAMILIES, max_per_family=400, vocab_size=512, seq_len=64, max_positions=256,
    max_prompt_tokens=48,
    target=ArchSpec(family="llama", hidden=64, layers=2),
    target_train=TrainSpec(steps=120, batch_size=8, lr=3e-3),
    drafters=(
        DrafterSpec(name="generic-llama", arch=ArchSpec(family="llama", hidden=32, layers=1),
                    pretrain=TrainSpec(steps=40, lr=3e-3), distill=TrainSpec(steps=40, lr=3e-3)),
        DrafterSpec(name="generic-gpt2", arch=ArchSpec(family="gpt2", hidden=32, layers=1),
                    pretrain=TrainSpec(steps=40, lr=3e-3), distill=TrainSpec(steps=40, lr=3e-3)),
        # One specialist per task: both families and all three divergences are exercised.
        _tiny_specialist("code", "llama", "forward_kl"),
        _tiny_specialist("prose", "gpt2", "reverse_kl"),
        _tiny_specialist("math", "llama", "tv"),
        _tiny_specialist("translation", "gpt2", "forward_kl"),
        _tiny_specialist("extraction", "llama", "reverse_kl"),
        _tiny_specialist("structured", "gpt2", "tv"),
    ),
    on_policy=OnPolicySpec(prompts_per_task=24, max_new_tokens=24, heldout_prompts=8),
)

DEMO = Preset(
    name="demo", vocab_size=2048, seq_len=128, max_positions=512, max_prompt_tokens=96,
    target=ArchSpec(family="llama", hidden=256, layers=8),
    target_train=TrainSpec(steps=450, batch_size=8, lr=2e-3),
    drafters=(
        DrafterSpec(name="generic-llama", arch=ArchSpec(family="llama", hidden=96, layers=1),
                    pretrain=TrainSpec(steps=300, lr=3e-3), distill=TrainSpec(steps=150, batch_size=16, lr=2e-3)),
    ),
    on_policy=OnPolicySpec(prompts_per_task=192, max_new_tokens=48, heldout_prompts=16),
)

BENCH = Preset(
    name="bench", vocab_size=4096, seq_len=256, max_positions=1024, max_prompt_tokens=192,
    target=ArchSpec(family="llama", hidden=256, layers=12),
    target_train=TrainSpec(steps=700, batch_size=8, lr=1.5e-3),
    drafters=(
        DrafterSpec(name="generic-llama", arch=ArchSpec(family="llama", hidden=128, layers=2),
                    pretrain=TrainSpec(steps=600, lr=2e-3), distill=TrainSpec(steps=350, batch_size=16, lr=1e-3)),
        DrafterSpec(name="generic-gpt2", arch=ArchSpec(family="gpt2", hidden=128, layers=2),
                    pretrain=TrainSpec(steps=600, lr=2e-3), distill=TrainSpec(steps=250, batch_size=16, lr=1e-3)),
    ),
    on_policy=OnPolicySpec(prompts_per_task=480, max_new_tokens=96, heldout_prompts=32),
)

PRESETS = {p.name: p for p in (TINY, DEMO, BENCH)}
