"""What a zoo build makes: model architectures, training budgets, and the `tiny` and `bench` presets.

- `tiny`: seconds of training; for tests, which need real artifacts, not good ones. It has all
  six task families and a specialist per task, two of them sized, and feature drafters (a generic
  one, a variant with both PosS and FSPAD, a specialist per task), so tests cover the whole pipeline.
- `demo`: a few minutes of training; the README's demo, readable output on a laptop: code and
  prose capped to a similar size, a target trained on document-aligned blocks with unlikelihood
  training (`bench/results/demo_target/`).
- `bench`: all six families; a target whose decoding step costs more than eight drafter steps
  on a 2-core CPU (it is deep and narrow: on a CPU, per-layer overhead dominates, much as memory
  bandwidth does on a GPU, so verifying 16 tokens costs little more than 1); two generic drafters
  (Llama and GPT-2, of different widths and depths) distilled on every task, and a specialist
  per task fine-tuned from the generic base (or ngram) that measures fastest on that task, kept
  as a hybrid with its task's datastore where that measures faster; and feature drafters (EAGLE-style,
  `FeatureZooSpec`): a generic one, its PosS and FSPAD variants, and a feature specialist per task, routed
  for its task where it measures faster than the task's specialist.

This module knows nothing about training loops or files; `specroute.zoo.build` runs a preset.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from drafter_service.feature_model import FeatureDraftConfig
from specroute.zoo.feature import FeatureTrainSpec


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


class FromDrafter(BaseModel):
    """A candidate that starts from an earlier drafter of the preset (its architecture and its
    weights) instead of a new model: TaskSpec's specialists are fine-tuned from a base drafter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str = Field(description="Name of an earlier, unsized model drafter of the same preset.")


class TrainSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(ge=0, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    unlikelihood: float = Field(0.0, ge=0, description="Weight of token-level unlikelihood training against "
                                                       "repeating the block's earlier tokens (pretraining only; 0: off).")
    document_blocks: bool = Field(False, description="Pretraining blocks start where a document starts, as a prompt "
                                                     "does at inference (False: anywhere in the token stream).")

    @model_serializer(mode="wrap")
    def _omit_later_fields_at_default(self, handler) -> dict:
        """Fields added after zoos were built enter a dump (and so a zoo stage's key) only when
        set: a zoo built before them keeps its keys, and is not rebuilt for a setting it never had."""
        data = handler(self)
        for name in _LATER_TRAIN_FIELDS:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data


_LATER_TRAIN_FIELDS = ("document_blocks",)


NGRAM = "ngram"


class DrafterSpec(BaseModel):
    """A drafter to build. With several candidates, the build sizes it by measurement: each
    candidate is trained briefly (the pretraining of a new model, or the weights of its base
    drafter, then `Preset.sizing.distill_steps` of distillation), each is measured through the
    engine on the task's validation prompts, and the fastest continues its distillation; the
    model-free ngram drafter can be a candidate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Directory and manifest name; a sized drafter's name gets its winner's label.")
    candidates: tuple[ArchSpec | FromDrafter | Literal["ngram"], ...] = Field(
        min_length=1, description="Architectures (or base drafters) to choose from.")
    task: str | None = Field(None, description="Task family it is specialised for; None is the generic drafter.")
    pretrain: TrainSpec | None = Field(None, description="Plain next-token training of a new model on its tasks' "
                                                         "text first (needed by ArchSpec candidates).")
    distill: TrainSpec = Field(description="DistillSpec alignment to the target on on-policy data.")
    divergence: str = Field("forward_kl", description="forward_kl, reverse_kl or tv.")
    lookup: bool = Field(False, description="Also measure the drafter as a `hybrid` (its model's trees with prompt "
                                            "lookup and its task's datastore grafted on) and keep the faster.")

    @model_validator(mode="after")
    def _lookup_needs_task(self) -> "DrafterSpec":
        if self.lookup and self.task is None:
            raise ValueError(f"drafter {self.name!r}: lookup needs a task (its datastore is the task's)")
        return self

    @model_validator(mode="after")
    def _pretrain_when_needed(self) -> "DrafterSpec":
        if self.pretrain is None and any(isinstance(c, ArchSpec) for c in self.candidates):
            raise ValueError(f"drafter {self.name!r}: a new model (an ArchSpec candidate) needs `pretrain`")
        return self

    @property
    def sized(self) -> bool:
        return len(self.candidates) > 1

    @property
    def bases(self) -> list[str]:
        return [c.base for c in self.candidates if isinstance(c, FromDrafter)]


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
    greedy_prompts_per_task: int = Field(
        0, ge=0, description="Further training prompts, continued greedily by the target: the distribution "
                             "greedy decoding serves.")
    heldout_prompts: int = Field(16, ge=1, description="Validation prompts for the held-out divergence.")


class FeatureVariantSpec(BaseModel):
    """A generic feature drafter with options of its own (PosS, FSPAD), trained like the plain one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Its directory is `feature-NAME`.")
    position_specialists: int = Field(0, ge=0, description="PosS: draft steps per specialist layer; 0: one layer.")
    feature_sampling: bool = Field(False, description="FSPAD: gate the target's feature by the emitted token.")
    partial_alignment: float = Field(0.0, ge=0.0, le=1.0, description="FSPAD: share of feature dims regressed.")

    def options(self, train_depth: int) -> FeatureDraftConfig:
        return FeatureDraftConfig(**self.model_dump(exclude={"name"}), train_depth=train_depth)


FEATURE_GENERIC = "generic"


class FeatureZooSpec(BaseModel):
    """The zoo's feature drafters (EAGLE-style, reading the target's last-layer features): a
    generic one trained on every task's on-policy samples; variants of it with other options, for
    comparison; and, TaskSpec's recipe, per task a copy of the generic one fine-tuned on that
    task's samples, measured against the task's model specialist and routed where faster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_depth: int = Field(4, ge=1, description="Draft steps trained (unrolled); also the held-out report's depth.")
    generic: FeatureTrainSpec = Field(description="Training of the generic drafter and of every variant.")
    variants: tuple[FeatureVariantSpec, ...] = Field((), description="Generic drafters with other options.")
    specialist: FeatureTrainSpec | None = Field(None, description="Per-task fine-tuning of the generic drafter; "
                                                                  "None: no feature specialists.")
    state_batch_size: int = Field(8, ge=1, description="Samples per target forward when caching its features.")
    heldout_samples: int | None = Field(None, ge=1, description="Held-out samples per task the reports read "
                                                               "(the first of the task's; None: all).")

    def generic_options(self) -> FeatureDraftConfig:
        return FeatureDraftConfig(train_depth=self.train_depth)

    @model_validator(mode="after")
    def _names_are_distinct(self) -> "FeatureZooSpec":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or FEATURE_GENERIC in names or "states" in names or any(
                n.startswith("trial-") for n in names):
            raise ValueError(f"feature variants need distinct names other than {FEATURE_GENERIC!r}, 'states' and "
                             f"'trial-*': {names}")
        return self


class SteerTrainSpec(BaseModel):
    """How a steered drafter (SD², `specroute.zoo.steer`) trains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Sequences per step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of the drafter and the steering maps (AdamW, "
                                              "warmup and cosine decay).")
    max_offset: int = Field(8, ge=1, description="k: position t is steered by the state of t - e, e in [1, k].")
    freeze_drafter: bool = Field(False, description="Train the steering maps only (the paper's ablation).")


class SteeringZooSpec(BaseModel):
    """Steered versions (SD²) of generic model drafters: each steered from its distilled form and,
    with `from_pretrained`, from its pretrained base before distillation (kept as `NAME-pretrained`,
    the paper's comparison). Trained on every task's on-policy samples (sampled and greedy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drafters: tuple[str, ...] = Field(min_length=1, description="The preset's generic (unsized, new-model) drafters "
                                                                "to steer.")
    from_pretrained: bool = Field(False, description="Also steer each one's pretrained base.")
    train: SteerTrainSpec
    layers: tuple[int, int, int] | None = Field(None, description="The target's low, middle and high layers; None: "
                                                                  "spread over its depth.")
    samples_per_task: int | None = Field(None, ge=1, description="Training samples per task read (None: all).")
    heldout_samples: int | None = Field(None, ge=1, description="Held-out samples per task the reports read.")
    state_batch_size: int = Field(16, ge=1, description="Samples per target forward when caching its states.")


class StopTrainSpec(BaseModel):
    """How a stop model (learned stopping, `specroute.zoo.stop`) trains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: Literal["mlp", "hard"] = Field("mlp", description="mlp: the drafter's hidden state; hard: entropy and "
                                                               "top-10 probabilities of q.")
    labels: Literal["soft", "hard"] = Field("soft", description="soft: any child accepted; hard: the first child.")
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="Generations held out for AUROC and calibration.")
    seed: int = 0


class StoppingZooSpec(BaseModel):
    """Stop models for the preset's model drafters (generic and specialists, hybrids' model parts):
    each logged on its task's training prompts (a generic one: every task's), trained, its rule and
    threshold swept on validation prompts, and adopted (the drafter's manifest entry names it) where
    it measured faster than the adaptive budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drafters: tuple[str, ...] | None = Field(None, description="Drafter names; None: every model drafter.")
    log_prompts_per_task: int = Field(8, ge=1)
    validation_prompts_per_task: int = Field(4, ge=1, description="A generic drafter's sweep reads this many of "
                                                                  "every task's; a specialist's, twice as many of "
                                                                  "its own task's.")
    max_new_tokens: int = Field(64, ge=2)
    max_prompt_tokens: int = Field(192, ge=8)
    train: StopTrainSpec = Field(default_factory=StopTrainSpec)
    hard_for: tuple[str, ...] = Field((), description="Drafters that also get the hard variant (the benchmark "
                                                      "compares both on them).")
    thresholds: dict[str, tuple[float, ...]] = Field(
        default_factory=lambda: {"frontier": (0.3, 0.4, 0.5, 0.6), "survival": (0.2, 0.3, 0.4, 0.5)},
        description="The thresholds swept per rule.")


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
    quality_prompts: int = Field(2, ge=1, description="Test prompts per task on which the build measures the "
                                                      "target's text quality (`specroute.zoo.quality`).")
    features: FeatureZooSpec | None = Field(None, description="Feature drafters (EAGLE-style) to build; None: none.")
    steering: SteeringZooSpec | None = Field(None, description="Steered drafters (SD²) to build; None: none.")
    stopping: StoppingZooSpec | None = Field(None, description="Stop models to train; None: none.")
    stage_seconds: dict[str, float] | None = Field(
        None, description="Each stage's expected seconds on a 2-core CPU (by stage name: corpus, target, "
                          "drafter-NAME, ...): the build's estimate of the time left, scaled by the pace of the "
                          "stages done so far. None: the build estimates nothing.")

    @model_validator(mode="after")
    def _sizing_when_needed(self) -> "Preset":
        if any(d.sized or d.lookup for d in self.drafters) and self.sizing is None:
            raise ValueError("a drafter has several candidates or a lookup to measure, so the preset needs `sizing`")
        if self.features is not None and self.features.specialist is not None and self.sizing is None:
            raise ValueError("feature specialists are measured against the task's specialist, so the preset "
                             "needs `sizing`")
        return self

    @model_validator(mode="after")
    def _feature_names_are_free(self) -> "Preset":
        if self.features is not None:
            clash = {v.name for v in self.features.variants} & set(self.families)
            if clash:
                raise ValueError(f"feature variants {sorted(clash)} are named like tasks, whose specialists' "
                                 f"directories those names would take")
        return self

    @model_validator(mode="after")
    def _steered_drafters_are_generic_models(self) -> "Preset":
        if self.steering is not None:
            specs = {d.name: d for d in self.drafters}
            for name in self.steering.drafters:
                spec = specs.get(name)
                if spec is None or spec.task or spec.sized or not isinstance(spec.candidates[0], ArchSpec):
                    raise ValueError(f"steering {name!r}: it must be one of the preset's generic, unsized "
                                     "new-model drafters")
        return self

    @model_validator(mode="after")
    def _bases_and_candidates_resolve(self) -> "Preset":
        built: dict[str, DrafterSpec] = {}
        for spec in self.drafters:
            for base in spec.bases:
                known = built.get(base)
                if known is None or known.sized or not isinstance(known.candidates[0], ArchSpec):
                    raise ValueError(f"drafter {spec.name!r}: base {base!r} must be an earlier, unsized model drafter")
            labels = [self.label(c) for c in spec.candidates]
            if len(set(labels)) != len(labels):
                raise ValueError(f"drafter {spec.name!r}: two candidates have the same architecture {labels}")
            built[spec.name] = spec
        return self

    def arch(self, candidate: ArchSpec | FromDrafter) -> ArchSpec:
        """The architecture a model candidate has: its own, or its base drafter's."""
        if isinstance(candidate, ArchSpec):
            return candidate
        return next(d for d in self.drafters if d.name == candidate.base).candidates[0]

    def label(self, candidate: ArchSpec | FromDrafter | str) -> str:
        """'llama-128x2' for a model (new or fine-tuned from a base), 'ngram' for the model-free drafter."""
        if isinstance(candidate, str):
            return candidate
        arch = self.arch(candidate)
        return f"{arch.family}-{arch.hidden}x{arch.layers}"


ALL_FAMILIES = ("code", "prose", "math", "translation", "extraction", "structured")


def _tiny_specialist(task: str, divergence: str, *candidates: ArchSpec | FromDrafter | str,
                     name: str | None = None, lookup: bool = False) -> DrafterSpec:
    name = name or (task if len(candidates) > 1 else f"{task}-{candidates[0].family}")
    return DrafterSpec(name=name, task=task, candidates=candidates, pretrain=TrainSpec(steps=30, lr=3e-3),
                       distill=TrainSpec(steps=30, lr=3e-3), divergence=divergence, lookup=lookup)


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
        # A specialist per task: both families and all three divergences are exercised, two are
        # sized by measurement (a generic base against a new deeper model; a base against ngram),
        # some are fine-tuned from a generic base while others are new models, and two measure
        # a hybrid with their task's datastore.
        _tiny_specialist("code", "forward_kl", FromDrafter(base="generic-llama"), _tiny("llama", layers=2), lookup=True),
        _tiny_specialist("prose", "reverse_kl", FromDrafter(base="generic-gpt2"), name="prose-gpt2"),
        _tiny_specialist("math", "tv", _tiny("llama"), lookup=True),
        _tiny_specialist("translation", "forward_kl", _tiny("gpt2")),
        _tiny_specialist("extraction", "reverse_kl", FromDrafter(base="generic-llama"), NGRAM),
        _tiny_specialist("structured", "tv", _tiny("gpt2")),
    ),
    on_policy=OnPolicySpec(prompts_per_task=24, greedy_prompts_per_task=8, max_new_tokens=24, heldout_prompts=8),
    sizing=SizingSpec(distill_steps=10, prompts=2, max_new_tokens=12),
    # Feature drafters: the generic one, one variant with both PosS and FSPAD (so tests cover every
    # option), and a specialist per task fine-tuned from the generic one.
    features=FeatureZooSpec(
        train_depth=2, generic=FeatureTrainSpec(steps=20, batch_size=4, lr=3e-3),
        variants=(FeatureVariantSpec(name="poss-fspad", position_specialists=1, feature_sampling=True,
                                     partial_alignment=0.5),),
        specialist=FeatureTrainSpec(steps=5, batch_size=4, lr=3e-3)),
    # One small steered drafter (SD²), from the distilled generic Llama.
    # k = 7: the default trees' depth 6, plus one.
    steering=SteeringZooSpec(drafters=("generic-llama",), train=SteerTrainSpec(steps=10, batch_size=4, lr=3e-3,
                                                                                max_offset=7),
                             samples_per_task=8, heldout_samples=4),
    # One small stop model (mlp and hard) for the generic Llama drafter, one threshold per rule.
    stopping=StoppingZooSpec(drafters=("generic-llama",), log_prompts_per_task=2, validation_prompts_per_task=1,
                             max_new_tokens=16, train=StopTrainSpec(epochs=5), hard_for=("generic-llama",),
                             thresholds={"frontier": (0.4,), "survival": (0.3,)}),
)

DEMO = Preset(
    # Code outnumbers prose many times over in the full corpus, so a target trained for minutes
    # on all of it wrote code after prose prompts: both families are capped to a similar size.
    name="demo", max_per_family=700, vocab_size=2048, seq_len=192, max_positions=512, max_prompt_tokens=96,
    target=ArchSpec(family="llama", hidden=256, layers=8),
    # Document-aligned blocks: a prompt starts a document, and blocks taken anywhere taught the
    # target that a sentence end is often the end of the text (prose paragraphs end at one), so
    # greedy decoding ended prose prompts at once. Unlikelihood training against loops, as in bench.
    target_train=TrainSpec(steps=420, batch_size=6, lr=2e-3, unlikelihood=2.0, document_blocks=True),
    drafters=(
        DrafterSpec(name="generic-llama", candidates=(ArchSpec(family="llama", hidden=96, layers=1),),
                    pretrain=TrainSpec(steps=300, lr=3e-3), distill=TrainSpec(steps=150, batch_size=16, lr=2e-3)),
    ),
    on_policy=OnPolicySpec(prompts_per_task=192, max_new_tokens=48, heldout_prompts=16),
    quality_prompts=8,
    stage_seconds={"corpus": 5, "tokenizer": 1, "target": 190, "quality": 20, "on_policy": 15, "teacher": 6,
                   "drafter-generic-llama": 20, "costs": 2},
)


def _arch(family: str, hidden: int, layers: int) -> ArchSpec:
    return ArchSpec(family=family, hidden=hidden, layers=layers)


def _bench_specialist(task: str, *extra: str) -> DrafterSpec:
    """TaskSpec's recipe: a specialist is one of the generic bases fine-tuned on its task's
    on-policy data; which base (family, width and depth), or ngram, is measured per task, and
    then whether lookups in the task's datastore (a hybrid) make it faster."""
    bases = (FromDrafter(base="generic-llama"), FromDrafter(base="generic-gpt2"))
    return DrafterSpec(name=task, task=task, candidates=(*bases, *extra),
                       distill=TrainSpec(steps=500, batch_size=16, lr=1e-3), lookup=True)


BENCH = Preset(
    name="bench", families=ALL_FAMILIES, vocab_size=4096, seq_len=256, max_positions=1024, max_prompt_tokens=192,
    # 16 layers: with 12, a 2-layer Llama drafter's step came too close to the 1/8 cost bound on a
    # small CPU host; depth is what a CPU decoding step pays for.
    target=ArchSpec(family="llama", hidden=256, layers=16),
    target_train=TrainSpec(steps=2400, batch_size=8, lr=1.5e-3, unlikelihood=1.0),
    drafters=(
        # Two generic bases of different families, widths and depths, distilled on every task's
        # data; generic-llama is the single-drafter baseline. Small drafters: at this scale tau
        # follows the distillation data more than the drafter's size (a wider, deeper drafter
        # distilled on the same data gained little tau and trained several times slower).
        DrafterSpec(name="generic-llama", candidates=(_arch("llama", 64, 1),),
                    pretrain=TrainSpec(steps=600, lr=2e-3), distill=TrainSpec(steps=1000, batch_size=16, lr=1e-3)),
        DrafterSpec(name="generic-gpt2", candidates=(_arch("gpt2", 96, 2),),
                    pretrain=TrainSpec(steps=600, lr=2e-3), distill=TrainSpec(steps=1000, batch_size=16, lr=1e-3)),
        *(_bench_specialist(task) for task in ("code", "prose", "math", "translation")),
        _bench_specialist("extraction", NGRAM),
        _bench_specialist("structured"),
    ),
    # Sampled continuations for sampled decoding, greedy ones on further prompts for greedy
    # decoding: greedy data raised every drafter's greedy tau when it was explored.
    on_policy=OnPolicySpec(prompts_per_task=160, greedy_prompts_per_task=256, max_new_tokens=96, heldout_prompts=32),
    sizing=SizingSpec(distill_steps=100, prompts=8, max_new_tokens=48),
    max_step_cost_ratio=1 / 8,
    quality_prompts=8,
    # Feature drafters for the benchmark's comparison: EAGLE, PosS, FSPAD and both, trained alike on
    # every task, and a feature specialist per task. Their step counts are what fits the half hour
    # these stages may add to a build on a 2-core CPU (the expected seconds below).
    features=FeatureZooSpec(
        # Depth 3 (unrolled steps): a step of depth 4 cost about 1.5x one of depth 3 on a 2-core CPU, and
        # within the half hour the feature stages may add, depth 3 sees 1.6x the data.
        train_depth=3, generic=FeatureTrainSpec(steps=250, batch_size=16, lr=2e-3),
        variants=(FeatureVariantSpec(name="poss", position_specialists=2),
                  FeatureVariantSpec(name="fspad", feature_sampling=True, partial_alignment=0.5),
                  FeatureVariantSpec(name="poss-fspad", position_specialists=2, feature_sampling=True,
                                     partial_alignment=0.5)),
        specialist=FeatureTrainSpec(steps=60, batch_size=16, lr=1e-3),
        state_batch_size=16, heldout_samples=8),
    # Steered drafters (SD²) of both generic drafters, from their distilled and their pretrained forms;
    # k = 9: `bench steering`'s trees are 8 deep, so their deepest nodes read the state 9 positions back.
    steering=SteeringZooSpec(drafters=("generic-llama", "generic-gpt2"), from_pretrained=True,
                             train=SteerTrainSpec(steps=400, batch_size=16, lr=1e-3, max_offset=9),
                             samples_per_task=200, heldout_samples=16),
    # A stop model per model drafter, adopted where faster; both generic drafters also get the hard
    # variant, which `bench stopping` compares.
    stopping=StoppingZooSpec(log_prompts_per_task=6, validation_prompts_per_task=2, max_new_tokens=64,
                             train=StopTrainSpec(epochs=40), hard_for=("generic-llama", "generic-gpt2")),
    # What each stage took when this preset was last built (the target adopted from `bench target`,
    # so its own training is not counted; quality not recorded then), and the feature stages' estimates.
    stage_seconds={
        "corpus": 5, "tokenizer": 1, "target": 3, "on_policy": 994, "teacher": 259, "datastores": 619,
        "drafter-generic-llama": 708, "drafter-generic-gpt2": 565, "drafter-code": 57, "lookup-code": 9,
        "drafter-prose": 55, "lookup-prose": 13, "drafter-math": 40, "lookup-math": 8, "drafter-translation": 26,
        "lookup-translation": 5, "drafter-extraction": 52, "lookup-extraction": 7, "drafter-structured": 77,
        "lookup-structured": 9,
        "feature-states": 130, "feature-generic": 230, "feature-poss": 200, "feature-fspad": 290,
        "feature-poss-fspad": 260,
        **{f"feature-{task}": 60 for task in ALL_FAMILIES}, **{f"feature-trial-{task}": 30 for task in ALL_FAMILIES},
        "costs": 50,
        "steer-states": 90, "pretrained-generic-llama": 250, "pretrained-generic-gpt2": 200,
        **{f"steer-{name}{start}": 180 for name in ("generic-llama", "generic-gpt2") for start in ("", "-pretrained")}},
)

PRESETS = {p.name: p for p in (TINY, DEMO, BENCH)}
