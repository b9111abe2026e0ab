"""`specroute zoo build`: runs a preset's stages into a directory and writes its manifest.

Stages: corpus -> tokenizer -> target (pretrained on the mixture) -> quality (the target's
held-out loss and how much its output repeats itself, on test prompts: `specroute.zoo.quality`)
-> on-policy data (target continuations of training and validation prompts, per task: sampled,
and greedy on further training prompts, the distribution greedy decoding serves) -> teacher (the target's top-k
distributions on them, `specroute.zoo.teacher`) -> one stage per drafter -> [feature drafters: the
target's cached features, the generic feature drafter and its variants, per task a feature specialist and
its trial against the task's specialist, `specroute.zoo.feature_stages`] -> [steered drafters (SD²): the
target's states at three layers, the generic drafters' pretrained bases made again, each steered from its
distilled and its pretrained form, `specroute.zoo.steer_stages`] -> costs (every model and feature
drafter's decoding step against the target's, side by side: `specroute.zoo.cost`) -> [stop models: per
model drafter, an acceptance log, a decision model and its threshold swept on validation prompts, named in
the drafter's entry where faster than the adaptive budget, `specroute.zoo.stop_stages`] -> manifest.json.

A drafter stage pretrains a new drafter on its tasks' text, or starts from a copy of an earlier
base drafter (TaskSpec fine-tunes its specialists from a base drafter), then distils it to the
target, and measures the held-out divergence before and after. A drafter with several candidates
is sized by measurement first (successive halving with one round): every candidate within the
preset's cost bound is pretrained (or copied from its base) and briefly distilled, all are run
through the engine on the task's validation prompts beside plain decoding, and the fastest
(tokens/s) continues its distillation; ngram can be a candidate and win.

With `lookup`, a specialist is then measured twice on its task's validation prompts, as its model
alone and as a `hybrid` (its model's trees with prompt lookup and its task's datastore grafted
on, `drafter_service.hybrid`), and the manifest names the faster. A task's datastore
(`datastores/TASK.npz`, `drafter_service.datastore`) holds the task's training text and the
target's continuations of its training prompts: never a validation or test prompt.

Each stage records a key: a hash of the preset settings it uses and of the keys of the stages it
reads (a fine-tuned drafter reads its base's). A build skips a stage whose key is unchanged, and
redoes it (and so everything after it) otherwise, so an interrupted or edited build resumes
where it must.

The build logs each stage's start with its place in the plan, a bar and an estimate of the time
left (`specroute.zoo.progress`). Every model directory holds its weights and the tokenizer, so `AutoModelForCausalLM` and
`AutoTokenizer` load it directly. This module knows the order of stages, not how any is done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from drafter_service.base import create_drafter
from drafter_service.datastore import Datastore
from drafter_service.stopping import CONFIG_FILE as STOP_CONFIG_FILE
from specroute.engine import Engine
from specroute.measure import PLAIN, compare_engines
from specroute.zoo import corpus as corpus_mod
from specroute.zoo import feature_stages as fs
from specroute.zoo import steer_stages as ss
from specroute.zoo import stop_stages as sts
from specroute.zoo.cost import feature_step_ms, step_cost_ratio
from specroute.zoo.manifest import MANIFEST, has_weights
from specroute.zoo.presets import NGRAM, PRESETS, ArchSpec, DrafterSpec, FromDrafter, Preset, TrainSpec
from specroute.zoo.progress import BuildProgress
from specroute.zoo.quality import evaluate_quality, quality_table
from specroute.zoo.teacher import Sample, TeacherCache
from specroute.zoo.tokenizer import train_tokenizer
from specroute.zoo.training import distill, document_starts, generate_on_policy, heldout_divergence, pretrain
from verifier_service.target import TargetModel

TEACHER_FILE = "teacher.pt"
DATASTORES = "datastores"
LEVERS = "levers"  # `bench target` writes its target variants here, each with LEVER_RECORD
LEVER_RECORD = "lever.json"
QUALITY_TOKENS = 96  # new tokens per prompt when the build measures the target's text quality


def stage_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def target_inputs(preset: Preset, tokenizer_key: str, arch: ArchSpec | None = None,
                  train: TrainSpec | None = None) -> dict:
    """What the target stage's weights depend on (its key is their hash): the preset's
    architecture and training unless others are given."""
    return {"up": tokenizer_key, "arch": (arch or preset.target).model_dump(), "seq_len": preset.seq_len,
            "train": (train or preset.target_train).model_dump(), "positions": preset.max_positions,
            "seed": preset.seed}


class ZooBuilder:
    def __init__(self, preset: Preset, out: Path, device: str = "cpu", log=print):
        self.preset = preset
        self.out = Path(out)
        self.device = device
        self.log = log
        self.stage_dir = self.out / ".stages"
        self._key_in_progress: str | None = None  # the key of the stage running now
        self._progress = BuildProgress([], None)  # the plan `build` makes (none for a partial build)

    # --- stage bookkeeping --------------------------------------------------------------------

    def _done(self, stage: str) -> dict | None:
        marker = self.stage_dir / f"{stage}.json"
        return json.loads(marker.read_text()) if marker.is_file() else None

    def _run(self, stage: str, inputs: dict, fn) -> dict:
        """Runs `fn` unless the stage is done with the same inputs; returns its info with its key."""
        key = stage_key(inputs)
        progress = self._progress
        done = self._done(stage)
        if done is not None and done.get("key") == key:
            progress.done(stage, None)
            self.log(f"[zoo] {progress.position(stage)}{stage}: done already, skipped")
            return done
        start = time.perf_counter()
        self.log(f"[zoo] {progress.position(stage)}{stage} ... {progress.status()}")
        self._key_in_progress = key
        info = {**fn(), "key": key}
        info["seconds"] = round(time.perf_counter() - start, 1)
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        (self.stage_dir / f"{stage}.json").write_text(json.dumps(info, indent=2))
        progress.done(stage, info["seconds"])
        self.log(f"[zoo] {stage}: {info['seconds']} s")
        return info

    # --- stages -------------------------------------------------------------------------------

    def build(self) -> dict:
        p = self.preset
        self._progress = BuildProgress(build_plan(p), p.stage_seconds)
        expected = self._progress.left_s()
        self.log(f"[zoo] building the {p.name!r} preset: {len(self._progress.plan)} stages"
                 + (f", about {expected / 60:.1f} min on a 2-core CPU (the estimate of the time left follows "
                    "this build's pace)" if expected is not None else "")
                 + "; a training stage's bar shows its own time left")
        target = self.build_target()
        self._run("quality", {"up": target["key"], "prompts": p.quality_prompts, "max_new_tokens": QUALITY_TOKENS},
                  self._quality)
        on_policy = self._run("on_policy", {"up": target["key"], "spec": p.on_policy.model_dump(),
                                            "prompt_tokens": p.max_prompt_tokens}, self._on_policy)
        teacher = self._run("teacher", {"up": on_policy["key"], "top_k": p.teacher_top_k}, self._teacher)
        if any(spec.lookup for spec in p.drafters):
            datastores = self._run("datastores", {"up": on_policy["key"]}, self._datastores)
        drafters, keys, lookups = [], {}, {}
        for spec in p.drafters:
            inputs = {"up": teacher["key"], "spec": spec.model_dump(exclude={"lookup"}), "seq_len": p.seq_len,
                      "bases": [keys[b] for b in spec.bases]}
            if spec.sized:
                inputs |= {"sizing": p.sizing.model_dump(), "max_cost": p.max_step_cost_ratio}
            drafter = self._run(f"drafter-{spec.name}", inputs, lambda spec=spec: self._drafter(spec))
            drafters.append(drafter)
            keys[spec.name] = drafter["key"]
            if spec.lookup and has_weights(drafter["kind"]):
                lookups[drafter["name"]] = self._run(
                    f"lookup-{spec.name}", {"up": [drafter["key"], datastores["key"]], "sizing": p.sizing.model_dump()},
                    lambda drafter=drafter: self._lookup(drafter))
            elif spec.lookup:
                self._progress.drop(f"lookup-{spec.name}")  # sized to ngram: nothing to look up with
        features, trials = self._features(drafters, lookups, on_policy) if p.features is not None else ([], {})
        pretrained, steered = self._steering(drafters, teacher) if p.steering is not None else ([], [])
        costs_inputs = {"up": [d["key"] for d in drafters]}
        if features:  # a zoo without feature drafters keeps its key
            costs_inputs["features"] = [f["key"] for f in features]
        costs = self._run("costs", costs_inputs, lambda: self._costs(drafters, features))
        manifest = self._manifest(drafters, costs["costs"], lookups, features, trials)
        if p.steering is not None:
            manifest |= {"pretrained_drafters": pretrained, "steered_drafters": steered}
        if p.stopping is not None:
            manifest["stop_models"] = self._stopping(drafters, manifest)
        self._remove_stale(manifest)
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return manifest

    def build_text(self) -> dict:
        """The corpus and tokenizer stages alone (what every model is trained on); the tokenizer's record."""
        p = self.preset
        self.out.mkdir(parents=True, exist_ok=True)
        corpus = self._run("corpus", {"families": p.families, "seed": p.seed, "max": p.max_per_family}, self._corpus)
        return self._run("tokenizer", {"up": corpus["key"], "vocab": p.vocab_size}, self._tokenizer)

    def build_target(self) -> dict:
        """The corpus, tokenizer and target stages; the target's record."""
        tokenizer = self.build_text()
        return self._run("target", target_inputs(self.preset, tokenizer["key"]), self._target)

    def train_stream(self) -> list[int]:
        """The train split as one token stream, every example ended by the end-of-text token."""
        return self._stream(self._splits()["train"])

    def _remove_stale(self, manifest: dict) -> None:
        """Removes the directories and stage records an earlier build of this zoo made and this one no
        longer names: a drafter dropped from the preset or sized to another candidate, a feature,
        pretrained or steered drafter or a stop model whose stage is gone, and the state and log
        caches of stage groups the preset turned off. Only names the builds recorded are touched (the
        previous manifest, the stage records), and only model directories directly inside the zoo."""
        keep = _named_paths(manifest)
        current = set(build_plan(self.preset))
        made: set[str] = set()
        if (self.out / MANIFEST).is_file():
            made |= _named_paths(json.loads((self.out / MANIFEST).read_text()))
        for marker in sorted(path for prefix in _MADE_BY for path in self.stage_dir.glob(f"{prefix}-*.json")):
            info = self._done(marker.stem)
            if has_weights(info.get("kind")) or info.get("kind") == fs.FEATURE_KIND:
                made.add(info["name"])
            made |= _named_paths(info)
            if marker.stem not in current:
                marker.unlink()
        for group, cache in ((self.preset.features, fs.STATES_DIR), (self.preset.steering, ss.STEER_DIR),
                             (self.preset.stopping, sts.LOG_DIR)):
            if group is None and (self.out / cache).is_dir():
                shutil.rmtree(self.out / cache)
        out = self.out.resolve()
        for name in sorted(made - keep):
            path = (self.out / name).resolve()
            if path.parent == out and any((path / f).is_file() for f in _MODEL_FILES):
                shutil.rmtree(path)
                self.log(f"[zoo] removed {name}: this build no longer makes it")

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

    def _block_starts(self, tokens: list[int], train: TrainSpec) -> list[int] | None:
        return document_starts(tokens, self._load_tokenizer().eos_token_id) if train.document_blocks else None

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
        tokens = self.train_stream()
        adopted = self._matching_lever()
        if adopted is not None:
            shutil.copytree(adopted, self.out / "target", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(LEVER_RECORD))
            record = json.loads((adopted / LEVER_RECORD).read_text())
            self.log(f"[zoo] target: adopted {adopted}, trained by `bench target` with this stage's exact inputs")
            return {"params": _params(self._load("target")), "train_tokens": len(tokens),
                    "final_loss": record["final_loss"], "adopted_from": str(adopted.relative_to(self.out))}
        model = self._new_model(p.target, p.seed)
        # Checkpointed under the stage's key, so a build interrupted mid-training resumes it and
        # a build with other settings starts afresh.
        checkpoint = self.stage_dir / f"target-{self._key_in_progress}.ckpt"
        for stale in self.stage_dir.glob("target-*.ckpt"):
            if stale != checkpoint:
                stale.unlink()
        losses = pretrain(model, tokens, p.target_train.steps, p.target_train.batch_size, p.seq_len,
                          p.target_train.lr, p.seed, desc="target", checkpoint=checkpoint,
                          unlikelihood=p.target_train.unlikelihood,
                          block_starts=self._block_starts(tokens, p.target_train))
        self._save(model, "target")
        checkpoint.unlink(missing_ok=True)
        return {"params": _params(model), "train_tokens": len(tokens), "final_loss": _tail_mean(losses)}

    def _matching_lever(self) -> Path | None:
        """A target `bench target` trained with exactly this stage's inputs (same corpus and
        tokenizer, architecture, training, seed: the same code path, so the same weights), found
        by the stage key its record holds; training it again would only repeat that work."""
        for record in sorted((self.out / LEVERS).glob(f"*/{LEVER_RECORD}")):
            if json.loads(record.read_text()).get("key") == self._key_in_progress:
                return record.parent
        return None

    def _quality(self) -> dict:
        report = evaluate_quality(self.out / "target", self._splits()["test"], list(self.preset.families),
                                  self.preset.quality_prompts, QUALITY_TOKENS, seed=self.preset.seed)
        self.log(f"[zoo] target quality on test prompts:\n{quality_table(report)}")
        return {"report": report}

    def _load(self, name: str):
        return AutoModelForCausalLM.from_pretrained(self.out / name).to(self.device).eval()

    def _on_policy(self) -> dict:
        p = self.preset
        target, tok = self._load("target"), self._load_tokenizer()
        splits = self._splits()
        spec = p.on_policy
        data = {}
        for task in p.families:
            train = [ex.prompt for ex in splits["train"] if ex.task == task]
            heldout = [ex.prompt for ex in splits["validation"] if ex.task == task][: spec.heldout_prompts]
            # (split, prompts, temperature): sampled training data, then greedy on further prompts.
            parts = [("train", train[: spec.prompts_per_task], spec.temperature),
                     ("train", train[spec.prompts_per_task: spec.prompts_per_task + spec.greedy_prompts_per_task], 0.0),
                     ("validation", heldout, spec.temperature)]
            for split, prompts, temperature in parts:
                if not prompts:
                    continue
                samples = generate_on_policy(
                    target, tok, prompts, spec.max_new_tokens, temperature, batch_size=32,
                    max_prompt_tokens=p.max_prompt_tokens, seed=p.seed,
                    desc=f"on-policy {task}/{split}" + (" greedy" if temperature == 0 else ""))
                data.setdefault(f"{task}/{split}", []).extend([s.prompt, s.continuation] for s in samples)
        (self.out / "on_policy.json").write_text(json.dumps(data))
        return {"samples": {k: len(v) for k, v in data.items()}}

    def _teacher(self) -> dict:
        target, pad = self._load("target"), self._load_tokenizer().pad_token_id
        data = json.loads((self.out / "on_policy.json").read_text())
        caches = {}
        for name, pairs in data.items():
            caches[name] = TeacherCache.build(target, [Sample(*pair) for pair in pairs], pad, self.preset.teacher_top_k,
                                              desc=f"teacher {name}")
        torch.save({name: c.state() for name, c in caches.items()}, self.out / TEACHER_FILE)
        return {"positions": {name: sum(len(s.continuation) for s in c.samples) for name, c in caches.items()}}

    def _teachers(self, tasks: list[str]) -> tuple[TeacherCache, TeacherCache]:
        """(training, held-out) teacher caches of these tasks, from one read of the teacher file."""
        states = torch.load(self.out / TEACHER_FILE, weights_only=True)
        return tuple(TeacherCache.merge([TeacherCache.from_state(states[f"{t}/{split}"]) for t in tasks])
                     for split in ("train", "validation"))

    def _datastores(self) -> dict:
        """Per task: its training text and the target's continuations of its training prompts."""
        tok = self._load_tokenizer()
        on_policy = json.loads((self.out / "on_policy.json").read_text())
        train = self._splits()["train"]
        (self.out / DATASTORES).mkdir(exist_ok=True)
        sizes = {}
        for task in self.preset.families:
            documents = [tok.encode(ex.prompt + ex.continuation) for ex in train if ex.task == task]
            documents += [prompt + continuation for prompt, continuation in on_policy.get(f"{task}/train", [])]
            store = Datastore.from_documents(documents, tok.eos_token_id)
            store.save(self.out / DATASTORES / f"{task}.npz")
            sizes[task] = len(store)
        return {"tokens": sizes}

    def _lookup(self, drafter: dict) -> dict:
        """A specialist measured alone and as a hybrid with its task's datastore; the faster is kept."""
        p = self.preset
        path, datastore = self.out / drafter["name"], f"{DATASTORES}/{drafter['task']}.npz"
        target = TargetModel.from_dir(self.out / "target", device=self.device)
        engines = {PLAIN: Engine(target), "model": Engine(target, create_drafter("model", {"path": path, "device": self.device})),
                   "hybrid": Engine(target, create_drafter("hybrid", {"path": path, "device": self.device,
                                                                      "datastore": self.out / datastore}))}
        tok = self._load_tokenizer()
        prompts = [tok.encode(ex.prompt) for ex in self._splits()["validation"]
                   if ex.task == drafter["task"]][: p.sizing.prompts]
        cells, mismatches = compare_engines(engines, prompts, p.sizing.max_new_tokens)
        if mismatches:
            raise RuntimeError(f"lookup {drafter['name']!r}: {mismatches} differ from plain decoding; this is a bug")
        trials = {kind: {k: cells[kind][k] for k in ("tau", "tokens_per_s", "speedup")} for kind in ("model", "hybrid")}
        chosen = max(trials, key=lambda kind: trials[kind]["speedup"])
        self.log(f"[zoo] lookup {drafter['name']}: model {trials['model']['speedup']:.2f}x "
                 f"(tau {trials['model']['tau']:.2f}), hybrid {trials['hybrid']['speedup']:.2f}x "
                 f"(tau {trials['hybrid']['tau']:.2f}); {chosen} kept")
        return {"trials": trials, "chosen": chosen, "datastore": datastore}

    def _tasks_of(self, spec: DrafterSpec) -> list[str]:
        return [spec.task] if spec.task else list(self.preset.families)

    def _drafter(self, spec: DrafterSpec) -> dict:
        p = self.preset
        tasks = self._tasks_of(spec)
        train, heldout = self._teachers(tasks)
        info = {"task": spec.task, "divergence": spec.divergence}
        name = spec.name
        if not spec.sized:
            model, before = self._pretrained(spec, spec.candidates[0], heldout)
            if isinstance(spec.candidates[0], FromDrafter):
                info["base"] = spec.candidates[0].base
            done_steps = 0
        else:
            trials = self._size(spec, tasks, train, heldout)
            winner = max((t for t in trials if "speedup" in t), key=lambda t: t["speedup"])
            winner["chosen"] = True
            info["sizing"] = [{k: v for k, v in t.items() if not k.startswith("_")} for t in trials]
            shutil.rmtree(self.out / ".sizing" / spec.name, ignore_errors=True)
            name = f"{spec.name}-{winner['candidate']}"
            if winner["candidate"] == NGRAM:
                return {**info, "name": name, "kind": "ngram", "family": None, "params": 0}
            model, before = winner["_model"], winner["heldout_divergence_before"]
            if "base" in winner:
                info["base"] = winner["base"]
            done_steps = p.sizing.distill_steps
        pad = self._load_tokenizer().pad_token_id
        remaining = spec.distill.steps - done_steps
        if remaining > 0:
            distill(model, train, remaining, spec.distill.batch_size, spec.distill.lr, spec.divergence, pad,
                    p.seed + done_steps, desc=f"{spec.name} distill")
        after = heldout_divergence(model, heldout, pad, spec.divergence)
        self._save(model, name)
        arch = model_arch(model)
        return {**info, "name": name, "kind": "model", "family": arch.family, "params": _params(model),
                "arch": arch.model_dump(),
                "heldout_divergence_before": before, "heldout_divergence_after": after}

    def _costs(self, drafters: list[dict], features: list[dict]) -> dict:
        """Every model drafter's decoding step, and every feature drafter's (one pair on a cache), against the
        target's, measured side by side."""
        target = self._load("target")
        costs = {}
        measured = [(d["name"], lambda d=d: step_cost_ratio(self._load(d["name"]), target))
                    for d in drafters if has_weights(d["kind"])]
        # A feature specialist has its base's network (its weights differ, not its step): measured once.
        measured += [(f["name"], lambda f=f: step_cost_ratio(fs.load_model(self.out, f["name"]), target,
                                                              drafter_ms=feature_step_ms))
                     for f in features if not f.get("base")]
        for name, measure in measured:
            cost = measure()
            costs[name] = {"step_cost_ratio": cost["ratio"], "step_ms": cost["drafter_ms"],
                           "target_step_ms": cost["target_ms"]}
            bound = self.preset.max_step_cost_ratio
            if bound is not None and cost["ratio"] > bound:
                self.log(f"[zoo] warning: {name} costs {cost['ratio']:.3f} of a target step, "
                         f"above the preset's bound {bound:.3f}")
        for f in features:
            if f.get("base"):
                costs[f["name"]] = {**costs[f["base"]], "step_cost_of": f["base"]}
        return {"costs": costs}

    def _pretrained(self, spec: DrafterSpec, candidate: ArchSpec | FromDrafter, heldout: TeacherCache):
        """The model a candidate starts its distillation from: a new one trained on its tasks'
        text, or a copy of its base drafter; and its held-out divergence to the target."""
        p = self.preset
        if isinstance(candidate, FromDrafter):
            model = self._load(candidate.base)
        else:
            tasks = self._tasks_of(spec)
            examples = [ex for ex in self._splits()["train"] if ex.task in tasks]
            model = self._new_model(candidate, p.seed + 1)
            tokens = self._stream(examples)
            pretrain(model, tokens, spec.pretrain.steps, spec.pretrain.batch_size, p.seq_len,
                     spec.pretrain.lr, p.seed, desc=f"{spec.name} {p.label(candidate)} pretrain",
                     block_starts=self._block_starts(tokens, spec.pretrain))
        return model, heldout_divergence(model, heldout, self._load_tokenizer().pad_token_id, spec.divergence)

    def _size(self, spec: DrafterSpec, tasks: list[str], train: TeacherCache, heldout: TeacherCache) -> list[dict]:
        """Trains every affordable candidate briefly and measures each through the engine."""
        p = self.preset
        pad = self._load_tokenizer().pad_token_id
        trials, drafters = [], {}
        target = TargetModel.from_dir(self.out / "target", device=self.device)
        for candidate in spec.candidates:
            trial = {"candidate": p.label(candidate)}
            trials.append(trial)
            if candidate == NGRAM:
                drafters[trial["candidate"]] = create_drafter("ngram", {})
                continue
            if isinstance(candidate, FromDrafter):
                trial["base"] = candidate.base
            ratio = step_cost_ratio(self._new_model(p.arch(candidate), p.seed).eval(), target.model)["ratio"]
            trial["step_cost_ratio"] = ratio
            if p.max_step_cost_ratio is not None and ratio > p.max_step_cost_ratio:
                trial["excluded"] = f"step cost {ratio:.3f} of the target's > {p.max_step_cost_ratio:.3f}"
                continue
            model, before = self._pretrained(spec, candidate, heldout)
            distill(model, train, p.sizing.distill_steps, spec.distill.batch_size, spec.distill.lr, spec.divergence,
                    pad, p.seed, desc=f"{spec.name} {trial['candidate']} trial distill")
            path = self.out / ".sizing" / spec.name / trial["candidate"]
            model.save_pretrained(path)
            self._load_tokenizer().save_pretrained(path)
            trial |= {"heldout_divergence_before": before, "_model": model}
            drafters[trial["candidate"]] = create_drafter("model", {"path": path, "device": self.device})
        if not drafters:
            raise ValueError(f"drafter {spec.name!r}: no candidate fits the step cost bound {p.max_step_cost_ratio}")
        engines = {PLAIN: Engine(target), **{name: Engine(target, d) for name, d in drafters.items()}}
        tok = self._load_tokenizer()
        prompts = [tok.encode(ex.prompt) for ex in self._splits()["validation"] if ex.task in tasks][: p.sizing.prompts]
        cells, mismatches = compare_engines(engines, prompts, p.sizing.max_new_tokens)
        if mismatches:
            raise RuntimeError(f"sizing {spec.name!r}: {mismatches} differ from plain decoding; this is a bug")
        for trial in trials:
            if trial["candidate"] in cells:
                cell = cells[trial["candidate"]]
                trial |= {"tau": cell["tau"], "tokens_per_s": cell["tokens_per_s"], "speedup": cell["speedup"]}
        self.log(f"[zoo] sizing {spec.name}: " + ", ".join(
            f"{t['candidate']} {t['speedup']:.2f}x (tau {t['tau']:.2f})" if "speedup" in t
            else f"{t['candidate']} excluded" for t in trials))
        return trials

    @staticmethod
    def _entry(d: dict, costs: dict[str, dict], lookups: dict[str, dict]) -> dict:
        """A model/ngram drafter's manifest entry: its stage info, measured cost, and lookup trial (as a hybrid
        where that was faster)."""
        entry = {"path": d["name"] if has_weights(d["kind"]) else None,
                 **{k: v for k, v in d.items() if k not in ("seconds", "key")}, **costs.get(d["name"], {})}
        lookup = lookups.get(d["name"])
        if lookup is not None:
            entry["lookup"] = lookup["trials"]
            if lookup["chosen"] == "hybrid":
                entry |= {"kind": "hybrid", "datastore": lookup["datastore"]}
        return entry

    def _manifest(self, drafters: list[dict], costs: dict[str, dict], lookups: dict[str, dict],
                  features: list[dict], trials: dict[str, dict]) -> dict:
        corpus = self._done("corpus")
        target = self._done("target")
        quality = self._done("quality")
        entries = [self._entry(d, costs, lookups) for d in drafters]
        extra = {}
        if self.preset.features is not None:
            feature_entries = fs.feature_entries(features, trials, costs)
            extra["feature_drafters"] = feature_entries
            extra["task_drafters"] = {
                task: {"specialist": self._specialist(drafters, task)["name"],
                       "feature": fs.feature_name(task) if fs.feature_name(task) in trials else None,
                       "routed": next((f["name"] for f in feature_entries if f["task"] == task and f.get("routed")),
                                      self._specialist(drafters, task)["name"])}
                for task in self.preset.families}
        return {
            "preset": self.preset.name,
            "seed": self.preset.seed,
            "tokenizer": "tokenizer",
            "target": {"path": "target", "family": self.preset.target.family, "params": target["params"],
                       "arch": self.preset.target.model_dump(), "train": self.preset.target_train.model_dump(),
                       **({"adopted_from": target["adopted_from"]} if "adopted_from" in target else {}),
                       "quality": quality["report"]},
            "drafters": entries + [{"path": None, "name": "ngram", "kind": "ngram", "family": None, "params": 0, "task": None}],
            "corpus": {"files": {s: f"corpus/{f}" for s, f in corpus["files"].items()}, "counts": corpus["counts"],
                       "families": list(self.preset.families)},
            **extra,
        }

    @staticmethod
    def _specialist(drafters: list[dict], task: str) -> dict:
        """The drafter the preset builds for the task (its stage info), or the first generic model drafter."""
        return next((d for d in drafters if d["task"] == task),
                    next(d for d in drafters if not d["task"] and has_weights(d["kind"])))

    def _features(self, drafters: list[dict], lookups: dict[str, dict], on_policy: dict) -> tuple[list[dict], dict]:
        """The feature stages (`specroute.zoo.feature_stages`): the target's cached features, the generic
        feature drafter and its variants, and per task a feature specialist and its trial against the task's
        current specialist. Returns the drafters' stage infos and the trials by feature drafter name."""
        p, spec = self.preset, self.preset.features
        states = self._run(fs.STATES_STAGE, {"up": on_policy["key"], "batch_size": spec.state_batch_size},
                           lambda: fs.build_states(self._load("target"),
                                                   json.loads((self.out / "on_policy.json").read_text()),
                                                   p.families, self.out, spec.state_batch_size))
        tasks = list(p.families)
        made = []
        for variant, options in [(None, spec.generic_options()),
                                 *((v.name, v.options(spec.train_depth)) for v in spec.variants)]:
            name = fs.feature_name(variant or "generic")
            made.append(self._run(name, {"up": states["key"], "options": options.model_dump(),
                                         "train": spec.generic.model_dump(), "seed": p.seed,
                                         "heldout": spec.heldout_samples},
                                  lambda name=name, options=options, variant=variant: fs.train_stage(
                                      self.out, name, options, spec.generic, spec.train_depth, tasks, p.seed,
                                      self.device, variant=variant, heldout_samples=spec.heldout_samples)))
        trials = {}
        if spec.specialist is None:
            return made, trials
        generic, tok = made[0], self._load_tokenizer()
        validation = self._splits()["validation"]
        for task in tasks:
            name = fs.feature_name(task)
            specialist = self._run(name, {"up": [states["key"], generic["key"]], "train": spec.specialist.model_dump(),
                                          "seed": p.seed, "heldout": spec.heldout_samples},
                                   lambda name=name, task=task: fs.train_stage(
                                       self.out, name, None, spec.specialist, spec.train_depth, [task], p.seed,
                                       self.device, base=generic["name"], heldout_samples=spec.heldout_samples))
            made.append(specialist)
            versus = self._specialist(drafters, task)
            lookup = lookups.get(versus["name"])
            prompts = [tok.encode(ex.prompt) for ex in validation if ex.task == task][: p.sizing.prompts]
            trials[name] = self._run(
                fs.trial_stage(task), {"up": [specialist["key"], versus["key"], *([lookup["key"]] if lookup else [])],
                                       "sizing": p.sizing.model_dump(), "grafted": fs.GRAFTED_TRIAL},
                lambda name=name, task=task, versus=versus, prompts=prompts: fs.trial_stage_run(
                    self.out, name, self._entry(versus, {}, lookups), task, prompts, p.sizing, self.device, self.log))
        return made, trials

    def _steering(self, drafters: list[dict], teacher: dict) -> tuple[list[dict], list[dict]]:
        """The steering stages (`specroute.zoo.steer_stages`): the states, the pretrained bases, the steered
        drafters. Returns the pretrained bases' and the steered drafters' manifest entries."""
        p, spec = self.preset, self.preset.steering
        states = self._run(ss.STATES_STAGE, {"up": teacher["key"], "layers": spec.layers,
                                             "samples": [spec.samples_per_task, spec.heldout_samples],
                                             "batch_size": spec.state_batch_size},
                           lambda: ss.build_states(self._load("target"), self.out / TEACHER_FILE, p.families, spec,
                                                   self._load_tokenizer().pad_token_id or 0, self.out))
        by_name = {d["name"]: d for d in drafters}
        specs = {s.name: s for s in p.drafters}
        keys = {name: by_name[name]["key"] for name in spec.drafters}
        pretrained = []
        for name in spec.drafters if spec.from_pretrained else ():
            info = self._run(ss.pretrained_stage(name), {"up": by_name[name]["key"]},
                             lambda name=name: self._pretrained_base(specs[name], by_name[name]))
            keys[ss.pretrained_name(name)] = info["key"]
            pretrained.append({k: v for k, v in info.items() if k not in ("key", "seconds")})
        steered = []
        for name, start, origin in ss.starts(spec):
            info = self._run(ss.steer_stage(start), {"up": [states["key"], keys[start]], "recipe": ss.RECIPE,
                                                     "train": spec.train.model_dump(), "seed": p.seed},
                             lambda name=name, start=start, origin=origin: ss.steer_stage_run(
                                 self.out, name, start, origin, spec, p.seed, self.device))
            steered.append({k: v for k, v in info.items() if k not in ("key", "seconds")})
        return pretrained, steered

    def _stopping(self, drafters: list[dict], manifest: dict) -> list[dict]:
        """The stopping stages (`specroute.zoo.stop_stages`): a stop model per model drafter, named in
        its manifest entry (`stop_model`) where it measured faster. Returns every stage's record."""
        spec = self.preset.stopping
        names = [s.name for s in self.preset.drafters]
        wanted = set(spec.drafters or names)
        records = []
        for name, info, entry in zip(names, drafters, manifest["drafters"]):
            if name not in wanted and entry["name"] not in wanted:
                continue
            stage = sts.stop_stage(name)
            if not has_weights(entry["kind"]):
                self._progress.drop(stage)  # sized to a model-free kind: nothing to stop
                continue
            inputs = {"up": info["key"], "entry": {k: entry.get(k) for k in ("name", "kind", "path", "datastore", "task")},
                      "spec": spec.model_dump(), "seed": self.preset.seed}
            record = self._run(stage, inputs, lambda entry=entry: sts.stop_stage_run(self.out, entry, manifest["corpus"],
                                                                                     spec))
            records.append({k: v for k, v in record.items() if k not in ("key", "seconds")})
            if record["adopted"]:
                entry["stop_model"] = record["path"]
        return records

    def _pretrained_base(self, spec: DrafterSpec, distilled: dict) -> dict:
        """A generic drafter as it was before distillation, made again by its own pretraining."""
        _, heldout = self._teachers(list(self.preset.families))
        model, divergence = self._pretrained(spec, spec.candidates[0], heldout)
        name = ss.pretrained_name(spec.name)
        self._save(model, name)
        recorded = distilled.get("heldout_divergence_before")
        return {"name": name, "path": name, "kind": "model", "family": model_arch(model).family,
                "distilled": spec.name, "heldout_divergence": divergence,
                "matches_recorded_base": recorded is not None and abs(divergence - recorded) < 1e-4}


_MADE_BY = ("drafter", "lookup", "feature", "pretrained", "steer", "stop")  # stage prefixes that write directories
_MODEL_FILES = ("config.json", fs.CONFIG_FILE, STOP_CONFIG_FILE)  # what marks a directory as a model's


def _named_paths(record) -> set[str]:
    """Every directory a manifest or stage record names: the `path` of each entry, at any depth (a stop
    stage names two models, a manifest lists its drafters, feature, pretrained and steered drafters and
    stop models)."""
    if isinstance(record, list):
        return set().union(*map(_named_paths, record))
    if not isinstance(record, dict):
        return set()
    found = {record["path"]} if isinstance(record.get("path"), str) and record["path"] else set()
    return found.union(*(_named_paths(v) for v in record.values() if isinstance(v, (dict, list))))


def build_plan(preset: Preset) -> list[str]:
    """The stages a build of the preset runs, in order: corpus, tokenizer, target, quality,
    on_policy, teacher, [datastores], a stage per drafter and per lookup trial, [feature stages],
    [steering stages], costs."""
    drafters = [stage for spec in preset.drafters
                for stage in [f"drafter-{spec.name}"] + ([f"lookup-{spec.name}"] if spec.lookup else [])]
    datastores = ["datastores"] if any(spec.lookup for spec in preset.drafters) else []
    features = fs.feature_plan(preset.features, preset.families)
    steering = ss.steering_plan(preset.steering)
    stopping = sts.stopping_plan(preset.stopping, [spec.name for spec in preset.drafters])
    return ["corpus", "tokenizer", "target", "quality", "on_policy", "teacher", *datastores, *drafters, *features,
            *steering, "costs", *stopping]


def model_arch(model) -> ArchSpec:
    """The ArchSpec a zoo model was built from, read back from its config."""
    c = model.config
    if c.model_type == "gpt2":
        return ArchSpec(family="gpt2", hidden=c.n_embd, layers=c.n_layer, heads=c.n_head)
    return ArchSpec(family="llama", hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads)


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
