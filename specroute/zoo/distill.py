"""`specroute distill`: aligns a drafter to the user's own target by distillation (DistillSpec).

DistillSpec (Zhou et al., 2024) trains a drafter to minimise a divergence between the target's
and the drafter's next-token distributions on on-policy data: here, continuations of the user's
prompts sampled from the target. `run_distill`:

1. loads the target and its tokenizer from a model directory;
2. reads the prompts (JSONL with a "prompt" field per line, or plain text, one prompt per line)
   and splits them by seed into training and held-out prompts;
3. loads the student from a model directory (it must share the target's vocabulary) or builds a
   new one from a JSON architecture file ({"family": "llama", "hidden": 128, "layers": 2, ...});
4. has the target continue both sets of prompts and keeps its top-k distributions where they
   predict the continuations (`specroute.zoo.teacher`), measures the held-out divergence,
   distils, measures it again, and saves the student with the target's tokenizer plus
   `distill_report.json`.

This module knows nothing about presets or the zoo's directory layout: the target is any causal
LM directory that `AutoModelForCausalLM` loads. The training loops are `specroute.zoo.training`'s.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from transformers import AutoModelForCausalLM, AutoTokenizer

from specroute.zoo.divergence import DIVERGENCES
from specroute.zoo.presets import ArchSpec
from specroute.zoo.teacher import TeacherCache
from specroute.zoo.training import distill, generate_on_policy, heldout_divergence
from core.hf import context_window, resolve_device

REPORT = "distill_report.json"


class DistillConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    divergence: str = Field("forward_kl", description=f"Divergence to minimise: one of {sorted(DIVERGENCES)}.")
    steps: int = Field(200, ge=1, description="Distillation optimizer steps.")
    batch_size: int = Field(16, ge=1, description="Sequences per step; also the generation batch size.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, warmup and cosine decay).")
    max_new_tokens: int = Field(64, ge=1, description="Length of the target's continuation of each prompt.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of the continuations; 0 is greedy.")
    max_prompt_tokens: int = Field(192, ge=1, description="Prompts are truncated to this many tokens.")
    teacher_top_k: int = Field(64, ge=1, description="Target log-probabilities kept per position; the rest of the mass is spread evenly.")
    heldout_fraction: float = Field(0.1, gt=0, le=0.5, description="Share of prompts held out to measure the divergence.")
    device: str = Field("auto", description="Torch device; 'auto' is cuda when available, else cpu.")
    seed: int = Field(0, description="Seeds the prompt split, sampling, the new student's weights and batches.")

    @field_validator("divergence")
    @classmethod
    def _known_divergence(cls, value: str) -> str:
        if value not in DIVERGENCES:
            raise ValueError(f"unknown divergence {value!r}; known: {sorted(DIVERGENCES)}")
        return value

    def resolved_device(self) -> str:
        return resolve_device(self.device)


def load_prompts(path: Path) -> list[str]:
    """Prompts from JSONL (every non-empty line an object with "prompt") or plain text (one per line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {path} does not exist")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [_json_object(line) for line in lines]
    if lines and all(r is not None and "prompt" in r for r in records):
        prompts = [str(r["prompt"]) for r in records]
    else:
        prompts = lines
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts: expected JSONL with a \"prompt\" field per line, "
                         "or plain text with one prompt per line")
    return prompts


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def split_prompts(prompts: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded shuffle, at least one prompt on each side."""
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 prompts (some to train on, some held out), got {len(prompts)}")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    num_heldout = min(len(prompts) - 1, max(1, round(len(prompts) * heldout_fraction)))
    return [prompts[i] for i in order[num_heldout:]], [prompts[i] for i in order[:num_heldout]]


def load_target(path: Path, device: str):
    """(model, tokenizer) from a model directory; the tokenizer pads on the left, for generation."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"target {path} is not a model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_student(student: str, target, tokenizer, device: str, seed: int):
    """A model directory sharing the target's vocabulary, or a new model from a JSON ArchSpec file."""
    path = Path(student)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"student {path} is a directory but not a model directory (no config.json)")
        try:
            student_tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise ValueError(f"student {path} has no tokenizer to compare with the target's: {err}") from err
        if student_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"student {path} has another tokenizer vocabulary than the target: "
                             "a drafter must share the target's vocabulary")
        model = AutoModelForCausalLM.from_pretrained(path)
        if model.config.vocab_size != target.config.vocab_size:
            raise ValueError(f"student {path} has {model.config.vocab_size} logits per position, "
                             f"the target {target.config.vocab_size}")
        return model.to(device).eval()
    if path.is_file():
        spec = _json_object(path.read_text(encoding="utf-8"))
        if spec is None:
            raise ValueError(f"student {path} is not a JSON object describing an architecture, "
                             'e.g. {"family": "llama", "hidden": 128, "layers": 2, "heads": 4}')
        try:
            arch = ArchSpec.model_validate(spec)
        except ValidationError as err:
            raise ValueError(f"student {path} is not a valid architecture: {err}") from err
        model = arch.build(target.config.vocab_size, context_window(target.config), tokenizer.eos_token_id, seed)
        return model.to(device).eval()
    raise ValueError(f"student {student!r} is neither a model directory (with config.json) nor a JSON "
                     'architecture file such as {"family": "llama", "hidden": 128, "layers": 2, "heads": 4}')


def _check_context(name: str, model, config: DistillConfig) -> None:
    needed, available = config.max_prompt_tokens + config.max_new_tokens, context_window(model.config)
    if available is not None and needed > available:
        raise ValueError(f"{name} holds {available} positions, but max_prompt_tokens + max_new_tokens = {needed}: "
                         "lower one of them")


def run_distill(target: Path, prompts: Path, student: str, out: Path, config: DistillConfig) -> dict:
    """Distills `student` to `target` on the target's continuations of `prompts`; saves it to `out`."""
    start = time.perf_counter()
    device = config.resolved_device()
    prompt_list = load_prompts(prompts)
    train_prompts, heldout_prompts = split_prompts(prompt_list, config.heldout_fraction, config.seed)
    teacher, tokenizer = load_target(target, device)
    model = load_student(student, teacher, tokenizer, device, config.seed)
    _check_context("the target", teacher, config)
    _check_context("the student", model, config)

    saved_padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id
    caches = {}
    for split, chunk, seed in (("train", train_prompts, config.seed), ("held-out", heldout_prompts, config.seed + 1)):
        samples = generate_on_policy(teacher, tokenizer, chunk, config.max_new_tokens, config.temperature,
                                     config.batch_size, config.max_prompt_tokens, seed, desc=f"on-policy {split}")
        caches[split] = TeacherCache.build(teacher, samples, pad, config.teacher_top_k, config.batch_size,
                                           desc=f"teacher {split}")
    tokenizer.padding_side = saved_padding_side

    before = heldout_divergence(model, caches["held-out"], pad, config.divergence, config.batch_size)
    losses = distill(model, caches["train"], config.steps, config.batch_size, config.lr, config.divergence, pad,
                     config.seed)
    after = heldout_divergence(model, caches["held-out"], pad, config.divergence, config.batch_size)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        "target": str(target), "prompts": str(prompts), "student": str(student),
        "config": config.model_dump(mode="json"), "device": device,
        "num_prompts": len(prompt_list), "num_train_prompts": len(train_prompts),
        "num_heldout_prompts": len(heldout_prompts),
        "num_distilled_positions": sum(len(s.continuation) for s in caches["train"].samples),
        "student_params": sum(p.numel() for p in model.parameters()),
        "final_loss": losses[-1],
        "heldout_divergence_before": before, "heldout_divergence_after": after,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2))
    print(f"[distill] held-out {config.divergence}: {before:.4f} -> {after:.4f} "
          f"({len(train_prompts)} train / {len(heldout_prompts)} held-out prompts, {report['seconds']} s); "
          f"student saved to {out}")
    return report
