"""The zoo build's steering stages (SD²): the target's states at three layers, the pretrained bases, and the
steered drafters.

Stages (`steering_plan`), after the feature stages and before `costs`:

- `steer-states`: the training and held-out teacher caches of every task (the first `samples_per_task` and
  `heldout_samples` of each), with the target's states at the three steering layers on the same samples
  (`specroute.zoo.steer.SteeringStateCache`), saved once into `.steer/train.pt` and `.steer/heldout.pt` (the
  held-out cache from the teacher's validation split).
- `pretrained-NAME` (with `from_pretrained`): the generic drafter NAME as it was before distillation, made
  again by its drafter stage's own pretraining (same data, seeds and steps), saved as `NAME-pretrained`.
  Its held-out divergence is recorded beside the drafter stage's record of the same model, so a
  reproduction that differs shows.
- `steer-NAME` and `steer-NAME-pretrained`: that drafter steered (`specroute.zoo.steer.steer_from_caches`),
  saved as `steered-NAME` / `steered-NAME-pretrained`, with its held-out KL before and after.

This module knows what each stage does and which files it writes; `specroute.zoo.build` knows the order of
stages, their keys and how a drafter is pretrained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.hf import decoder_layers
from core.states import StateRequest
from drafter_service.steering import STEERED_KIND, default_layers
from specroute.zoo.presets import SteeringZooSpec
from specroute.zoo.steer import SteeringStateCache, steer_from_caches
from specroute.zoo.teacher import TeacherCache

STEER_DIR = ".steer"
RECIPE = 2
"""The training recipe's version, among a steer stage's inputs, so a zoo steered by an earlier recipe is
steered again (2: the prompt before the first root unsteered in training, as at inference)."""
STATES_STAGE = "steer-states"
SPLITS = {"train": "train", "heldout": "validation"}  # cache name -> the teacher file's split


def pretrained_name(drafter: str) -> str:
    return f"{drafter}-pretrained"


def pretrained_stage(drafter: str) -> str:
    return f"pretrained-{drafter}"


def steered_name(start: str) -> str:
    """The directory and manifest name of the drafter steered from directory `start`."""
    return f"steered-{start}"


def steer_stage(start: str) -> str:
    return f"steer-{start}"


def starts(spec: SteeringZooSpec) -> list[tuple[str, str, str]]:
    """(generic drafter, start directory, "distilled" | "pretrained") per steered drafter, in build order."""
    out = []
    for name in spec.drafters:
        out.append((name, name, "distilled"))
        if spec.from_pretrained:
            out.append((name, pretrained_name(name), "pretrained"))
    return out


def steering_plan(spec: SteeringZooSpec | None) -> list[str]:
    """The steering stages of a build, in order (none without `spec`)."""
    if spec is None:
        return []
    pretrained = [pretrained_stage(n) for n in spec.drafters] if spec.from_pretrained else []
    return [STATES_STAGE, *pretrained, *(steer_stage(start) for _, start, _ in starts(spec))]


def _first_per_task(cache: TeacherCache, n: int | None) -> TeacherCache:
    return TeacherCache(cache.samples[:n], cache.top_logprobs[:n], cache.top_ids[:n], cache.vocab_size)


def build_states(target, teacher_file: Path, families: tuple[str, ...], spec: SteeringZooSpec, pad_id: int,
                 out: Path) -> dict:
    """The `steer-states` stage."""
    num_layers = len(decoder_layers(target))
    layers = StateRequest(layers=spec.layers or default_layers(num_layers)).resolve(num_layers)
    stored = torch.load(teacher_file, weights_only=True)
    (Path(out) / STEER_DIR).mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, split in SPLITS.items():
        per_task = spec.samples_per_task if name == "train" else spec.heldout_samples
        teacher = TeacherCache.merge([_first_per_task(TeacherCache.from_state(stored[f"{task}/{split}"]), per_task)
                                      for task in families])
        states = SteeringStateCache.build(target, teacher.samples, layers, pad_id, spec.state_batch_size,
                                          desc=f"steering states {name}")
        torch.save({"teacher": teacher.state(), "states": states.states, "layers": list(layers)}, Path(out) / STEER_DIR / f"{name}.pt")
        counts[name] = len(teacher)
    return {"layers": list(layers), "samples": counts}


def load_caches(out: Path) -> dict[str, tuple[TeacherCache, SteeringStateCache]]:
    caches = {}
    for name in SPLITS:
        stored = torch.load(Path(out) / STEER_DIR / f"{name}.pt", weights_only=True)
        teacher = TeacherCache.from_state(stored["teacher"])
        caches[name] = (teacher, SteeringStateCache(teacher.samples, stored["states"], tuple(stored["layers"])))
    return caches


def steer_stage_run(out: Path, drafter: str, start: str, origin: str, spec: SteeringZooSpec, seed: int,
                    device: str) -> dict:
    """A `steer-*` stage: the drafter in directory `start` steered on every task's samples."""
    out = Path(out)
    caches = load_caches(out)
    layers = caches["train"][1].layers
    model = AutoModelForCausalLM.from_pretrained(out / start).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(out / start)
    target_hidden = caches["train"][1].states[0].shape[-1]
    name = steered_name(start)
    steered, report = steer_from_caches(model, target_hidden, layers, caches, spec.train,
                                        tokenizer.pad_token_id or 0, seed, desc=name)
    steered.save(out / name, tokenizer, layers, spec.train.max_offset, base=start)
    family = "gpt2" if model.config.model_type == "gpt2" else "llama"
    return {"name": name, "path": name, "kind": STEERED_KIND, "family": family, "drafter": drafter, "start": origin,
            "base": start, **report}
