"""The zoo build's feature-drafter stages: the target's cached features, the drafters trained on them, and the
trial that decides whether a task's feature specialist is routed.

Stages (`feature_plan`), after the model drafters and before `costs`:

- `feature-states`: the target's last-layer pre-norm features on every on-policy sample, per task and split
  (the teacher cache's: `TASK/train`, `TASK/validation`), computed once into `.features/states-TASK-SPLIT.pt`.
- `feature-generic`: the generic EAGLE-style drafter, trained on every task's training samples;
  `feature-VARIANT`: the same training with a variant's options (PosS, FSPAD).
- `feature-TASK`: a copy of `feature-generic` fine-tuned on the task's samples (TaskSpec's recipe).
- `feature-trial-TASK`: the task's feature specialist, the same with lookups grafted on (a hybrid with the
  task's datastore), and its current specialist (the drafter the manifest names for the task: model,
  hybrid or ngram; the generic model drafter if it has none) through the engine beside plain decoding on
  the task's validation prompts; the faster way of running the feature specialist is routed for the task
  (`routed_kind`) only where it measured faster than the specialist.

Every trained drafter records its held-out per-step agreement with the target (`heldout_report`). This
module knows what each stage does and which directories and files it writes; `specroute.zoo.build` knows
the order of stages and their keys.
"""

from __future__ import annotations

from pathlib import Path

from drafter_service.base import create_drafter, drafter_kinds
from drafter_service.feature_model import CONFIG_FILE, FeatureDraftConfig, FeatureDraftModel
from specroute.engine import Engine
from specroute.measure import PLAIN, compare_engines
from specroute.zoo.feature import FeatureStateCache, FeatureTrainSpec, heldout_report, train_feature_drafter
from specroute.zoo.presets import FEATURE_GENERIC, FeatureZooSpec, SizingSpec
from specroute.zoo.teacher import Sample
from verifier_service.target import TargetModel

FEATURE_KIND = "feature"
HYBRID_KIND = "hybrid"
DATASTORES = "datastores"  # the build's task datastores, relative to the zoo
GRAFTED_TRIAL = True
"""A trial also measures the feature specialist with lookups grafted on (in its stage key: trials made before
they did are measured again)."""
STATES_DIR = ".features"
STATES_STAGE = "feature-states"
SPLITS = ("train", "validation")


def feature_name(suffix: str) -> str:
    """The stage, directory and manifest name of a feature drafter: `feature-generic`, `feature-VARIANT`,
    `feature-TASK`."""
    return f"feature-{suffix}"


def trial_stage(task: str) -> str:
    return f"feature-trial-{task}"


def feature_plan(spec: FeatureZooSpec | None, families: tuple[str, ...]) -> list[str]:
    """The feature stages of a build, in order (none without `spec`)."""
    if spec is None:
        return []
    specialists = [stage for task in families for stage in (feature_name(task), trial_stage(task))
                   ] if spec.specialist is not None else []
    return [STATES_STAGE, feature_name(FEATURE_GENERIC), *(feature_name(v.name) for v in spec.variants),
            *specialists]


def states_path(out: Path, task: str, split: str) -> Path:
    return Path(out) / STATES_DIR / f"states-{task}-{split}.pt"


def build_states(target_model, on_policy: dict[str, list], families: tuple[str, ...], out: Path,
                 batch_size: int) -> dict:
    """The `feature-states` stage: caches the target's features on every task's samples, per split."""
    (Path(out) / STATES_DIR).mkdir(parents=True, exist_ok=True)
    counts = {}
    for task in families:
        for split in SPLITS:
            samples = [Sample(list(p), list(c)) for p, c in on_policy.get(f"{task}/{split}", [])]
            cache = FeatureStateCache.build(target_model, samples, batch_size, desc=f"features {task}/{split}")
            cache.save(states_path(out, task, split))
            counts[f"{task}/{split}"] = len(cache)
    return {"samples": counts}


def load_states(out: Path, tasks: list[str], split: str, per_task: int | None = None) -> FeatureStateCache:
    """The cached features of these tasks' samples of one split (the first `per_task` of each), as one cache."""
    caches = [FeatureStateCache.load(states_path(out, task, split)) for task in tasks]
    return FeatureStateCache([s for c in caches for s in c.samples[:per_task]],
                             [f for c in caches for f in c.features[:per_task]])


def own_params(model: FeatureDraftModel) -> int:
    return sum(v.numel() for v in model.own_state_dict().values())


def train_stage(out: Path, name: str, options: FeatureDraftConfig | None, spec: FeatureTrainSpec, depth: int,
                tasks: list[str], seed: int, device: str, base: str | None = None,
                variant: str | None = None, heldout_samples: int | None = None) -> dict:
    """A `feature-*` training stage: a new drafter over `out/target` with `options` (or a copy of the
    drafter `base`), trained on the tasks' training samples and reported on their held-out ones;
    saved in `out/name` (a specialist also reports its base on them first). Returns its stage info (the
    manifest entry's fields)."""
    out = Path(out)
    train, heldout = load_states(out, tasks, "train"), load_states(out, tasks, "validation", heldout_samples)
    info: dict = {"name": name, "kind": FEATURE_KIND, "task": tasks[0] if base else None, "variant": variant}
    if base is None:
        model = FeatureDraftModel.from_target(out / "target", options, seed, device=device)
    else:
        model = FeatureDraftModel.from_dir(out / base, device=device)
        info |= {"base": base, "heldout_before": heldout_report(model, heldout, depth)}
    trained = train_feature_drafter(model, train, spec, seed, desc=name)
    report = heldout_report(model, heldout, depth)
    model.save(out / name)
    return {**info, "family": model.family, "options": model.config.model_dump(), "train": spec.model_dump(),
            "params": own_params(model),
            "final_loss": trained["final_loss"], "heldout": report}


def trial_stage_run(out: Path, feature: str, versus: dict, task: str, prompts: list[list[int]], sizing: SizingSpec,
                    device: str, log=print) -> dict:
    """A `feature-trial-TASK` stage: the feature specialist `feature`, the same with lookups grafted on (a
    hybrid with the task's datastore, where the zoo has one) and the task's current specialist (`versus`:
    its manifest entry, kind and paths relative to `out`) through the engine beside plain decoding;
    greedy outputs must equal plain decoding's. Returns the trial, how the feature specialist runs best
    (`routed_kind`: feature or hybrid) and whether that is routed (faster than the specialist)."""
    if FEATURE_KIND not in drafter_kinds():
        raise RuntimeError(f"measuring {feature}: no drafter kind {FEATURE_KIND!r} is registered "
                           f"(drafter_service.feature_drafter); known: {drafter_kinds()}")
    out = Path(out)
    target = TargetModel.from_dir(out / "target", device=device)
    options = {key: out / versus[key] for key in ("path", "datastore") if versus.get(key)}
    if versus["kind"] != "ngram":
        options["device"] = device
    engines = {PLAIN: Engine(target),
               versus["name"]: Engine(target, create_drafter(versus["kind"], options)),
               feature: Engine(target, create_drafter(FEATURE_KIND, {"path": out / feature, "device": device}))}
    store = Path(DATASTORES) / f"{task}.npz"
    grafted = f"{feature}+lookup"
    if (out / store).is_file():
        engines[grafted] = Engine(target, create_drafter(
            HYBRID_KIND, {"path": out / feature, "datastore": out / store, "device": device}))
    cells, mismatches = compare_engines(engines, prompts, sizing.max_new_tokens)
    if mismatches:
        raise RuntimeError(f"trial {feature!r}: {mismatches} differ from plain decoding; this is a bug")
    trials = {name: {k: cells[name][k] for k in ("tau", "tokens_per_s", "speedup")}
              for name in engines if name != PLAIN}
    best = max((n for n in (feature, grafted) if n in trials), key=lambda n: trials[n]["speedup"])
    routed = trials[best]["speedup"] > trials[versus["name"]]["speedup"]
    log(f"[zoo] trial {task}: " + ", ".join(f"{n} {t['speedup']:.2f}x (tau {t['tau']:.2f})" for n, t in trials.items())
        + f"; {best if routed else versus['name']} routed")
    result = {"task": task, "versus": versus["name"], "versus_kind": versus["kind"], "trials": trials,
              "routed": routed, "routed_kind": HYBRID_KIND if best == grafted else FEATURE_KIND}
    if best == grafted:
        result["datastore"] = str(store)
    return result


def load_model(out: Path, name: str) -> FeatureDraftModel:
    """A feature drafter of the zoo, for measuring its step cost."""
    return FeatureDraftModel.from_dir(Path(out) / name)


def feature_entries(stages: list[dict], trials: dict[str, dict], costs: dict[str, dict]) -> list[dict]:
    """The manifest's `feature_drafters`: per trained drafter its stage info (no key or seconds), its
    variant, its measured step cost, and for a specialist its trial and whether it is routed."""
    entries = []
    for info in stages:
        entry = {"path": info["name"], **{k: v for k, v in info.items() if k not in ("seconds", "key")},
                 **costs.get(info["name"], {})}
        trial = trials.get(info["name"])
        if trial is not None:
            entry |= {"trial": {k: trial[k] for k in ("versus", "versus_kind", "trials")}, "routed": trial["routed"],
                      "routed_kind": trial.get("routed_kind", FEATURE_KIND)}
            if "datastore" in trial:
                entry["routed_datastore"] = trial["datastore"]
        entries.append(entry)
    return entries
