"""`specroute zoo build`: runs a preset's stages into a directory and writes its manifest.

Stages, each skipped when its marker says it is done (so a build resumes where it stopped):
corpus -> tokenizer -> target (pretrained on the mixture) -> on-policy data (target
continuations of training prompts) -> one stage per drafter (pretrained, then distilled to the
target, with the held-out divergence measured before and after) -> manifest.json.

Every model directory holds its weights and the tokenizer, so `AutoModelForCausalLM` and
`AutoTokenizer` load it directly. This module knows the order of stages, not how any is done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specroute.zoo import corpus as corpus_mod
from specroute.zoo.manifest import MANIFEST
from specroute.zoo.presets import PRESETS, DrafterSpec, Preset
from specroute.zoo.tokenizer import train_tokenizer
from specroute.zoo.training import distill, generate_on_policy, heldout_divergence, pretrain



class ZooBuilder:
    def __init__(self, preset: Preset, out: Path, device: str = "cpu", log=print):
        self.preset = preset
        self.out = Path(out)
        self.device = device
        self.log = log
        self.stage_dir = self.out / ".stages"

    # --- stage bookkeeping --------------------------------------------------------------------

    def _done(self, stage: str) -> dict | None:
        marker = self.stage_dir / f"{stage}.json"
        return json.loads(marker.read_text()) if marker.is_file() else None

    def _run(self, stage: str, fn) -> dict:
        done = self._done(stage)
        if done is not None:
            self.log(f"[zoo] {stage}: done already, skipped")
            return done
        start = time.perf_counter()
        self.log(f"[zoo] {stage} ...")
        info = fn()
        info["seconds"] = round(time.perf_counter() - start, 1)
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        (self.stage_dir / f"{stage}.json").write_text(json.dumps(info, indent=2))
        self.log(f"[zoo] {stage}: {info['seconds']} s")
        return info

    # --- stages -------------------------------------------------------------------------------

    def build(self) -> dict:
        p = self.preset
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_preset()
        self._run("corpus", self._corpus)
        self._run("tokenizer", self._tokenizer)
        self._run("target", self._target)
        self._run("on_policy", self._on_policy)
        drafters = [self._run(f"drafter-{spec.name}", lambda spec=spec: self._drafter(spec)) for spec in p.drafters]
        manifest = self._manifest(drafters)
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return manifest

    def _check_preset(self) -> None:
        """Finished stages are reused only by a build of the very same preset."""
        record = self.stage_dir / "preset.json"
        current = self.preset.model_dump(mode="json")
        if record.is_file():
            built = json.loads(record.read_text())
            if built != current:
                raise ValueError(f"{self.out} was built with another preset ({built.get('name')!r}, or different "
                                 "settings): build into a new directory, or delete it to rebuild")
            return
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(current, indent=2))

    def _splits(self) -> dict[str, list[corpus_mod.Example]]:
        return {s: corpus_mod.load_split(self.out / "corpus" / f"{s}.jsonl") for s in corpus_mod.SPLITS}

    def _corpus(self) -> dict:
        splits = corpus_mod.build_corpus(list(self.preset.families), self.preset.seed, self.preset.max_per_family)
        files = corpus_mod.save_corpus(splits, self.out / "corpus")
        return {"files": files, "counts": {s: len(v) for s, v in splits.items()}}

    def _tokenizer(self) -> dict:
        texts = [ex.prompt + ex.continuation for ex in self._splits()["train"]]
        tok = train_tokenizer(texts, self.preset.vocab_size, self.out / "tokenizer")
        return {"vocab_size": len(tok)}

    def _load_tokenizer(self):
        return AutoTokenizer.from_pretrained(self.out / "tokenizer")

    def _stream(self, examples: list[corpus_mod.Example]) -> list[int]:
        tok = self._load_tokenizer()
        ids: list[int] = []
        for ex in examples:
            ids.extend(tok.encode(ex.prompt + ex.continuation) + [tok.eos_token_id])
        return ids

    def _new_model(self, arch, seed: int):
        tok = self._load_tokenizer()
        return arch.build(len(tok), self.preset.max_positions, tok.eos_token_id, seed).to(self.device)

    def _save(self, model, name: str) -> Path:
        path = self.out / name
        model.save_pretrained(path)
        self._load_tokenizer().save_pretrained(path)
        return path

    def _target(self) -> dict:
        p = self.preset
        model = self._new_model(p.target, p.seed)
        tokens = self._stream(self._splits()["train"])
        losses = pretrain(model, tokens, p.target_train.steps, p.target_train.batch_size, p.seq_len,
                          p.target_train.lr, p.seed, desc="target")
        self._save(model, "target")
        return {"params": _params(model), "train_tokens": len(tokens), "final_loss": _tail_mean(losses)}

    def _load(self, name: str):
        return AutoModelForCausalLM.from_pretrained(self.out / name).to(self.device).eval()

    def _on_policy(self) -> dict:
        p = self.preset
        target, tok = self._load("target"), self._load_tokenizer()
        splits = self._splits()
        data = {}
        for task in p.families:
            for split, count in (("train", p.on_policy.prompts_per_task), ("validation", p.on_policy.heldout_prompts)):
                prompts = [ex.prompt for ex in splits[split] if ex.task == task][:count]
                data[f"{task}/{split}"] = generate_on_policy(
                    target, tok, prompts, p.on_policy.max_new_tokens, p.on_policy.temperature, batch_size=32,
                    max_prompt_tokens=p.max_prompt_tokens, seed=p.seed, desc=f"on-policy {task}/{split}")
        (self.out / "on_policy.json").write_text(json.dumps(data))
        return {"sequences": {k: len(v) for k, v in data.items()}}

    def _drafter(self, spec: DrafterSpec) -> dict:
        p = self.preset
        tasks = [spec.task] if spec.task else list(p.families)
        examples = [ex for ex in self._splits()["train"] if ex.task in tasks]
        data = json.loads((self.out / "on_policy.json").read_text())
        train = [s for t in tasks for s in data[f"{t}/train"]]
        heldout = [s for t in tasks for s in data[f"{t}/validation"]]
        model = self._new_model(spec.arch, p.seed + 1)
        pretrain(model, self._stream(examples), spec.pretrain.steps, spec.pretrain.batch_size, p.seq_len,
                 spec.pretrain.lr, p.seed, desc=f"{spec.name} pretrain")
        target, pad = self._load("target"), self._load_tokenizer().pad_token_id
        before = heldout_divergence(model, target, heldout, pad, spec.divergence)
        distill(model, target, train, spec.distill.steps, spec.distill.batch_size, spec.distill.lr,
                spec.divergence, pad, p.seed, desc=f"{spec.name} distill")
        after = heldout_divergence(model, target, heldout, pad, spec.divergence)
        self._save(model, spec.name)
        return {"name": spec.name, "kind": "model", "family": spec.arch.family, "params": _params(model),
                "task": spec.task, "divergence": spec.divergence,
                "heldout_divergence_before": before, "heldout_divergence_after": after}

    def _manifest(self, drafters: list[dict]) -> dict:
        corpus = self._done("corpus")
        target = self._done("target")
        return {
            "preset": self.preset.name,
            "seed": self.preset.seed,
            "tokenizer": "tokenizer",
            "target": {"path": "target", "family": self.preset.target.family, "params": target["params"]},
            "drafters": [{"path": d["name"], **{k: v for k, v in d.items() if k != "seconds"}} for d in drafters]
                        + [{"path": None, "name": "ngram", "kind": "ngram", "family": None, "params": 0, "task": None}],
            "corpus": {"files": {s: f"corpus/{f}" for s, f in corpus["files"].items()}, "counts": corpus["counts"],
                       "families": list(self.preset.families)},
        }


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _tail_mean(values: list[float], n: int = 20) -> float:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def build_zoo(preset: str, out: Path, device: str = "cpu") -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return ZooBuilder(PRESETS[preset], out, device).build()
