"""The tiny zoo's feature drafters (EAGLE-style): the manifest lists them, each loads, a feature specialist
decodes exactly as plain decoding does, its routing follows its recorded trial, and a rebuild skips them."""

import json

from drafter_service.base import create_drafter
from specroute.engine import Engine
from specroute.zoo.build import ZooBuilder, build_plan
from specroute.zoo.manifest import (feature_drafters, generic_drafter, load_drafters, load_manifest, routed_drafters,
                                    summary_table)
from specroute.zoo.presets import TINY
from verifier_service.target import TargetModel


def _features(built_zoo) -> dict[str, dict]:
    return {d["name"]: d for d in feature_drafters(load_manifest(built_zoo))}


def test_manifest_lists_every_feature_drafter_with_its_kind(built_zoo):
    manifest = load_manifest(built_zoo)
    features = _features(built_zoo)
    spec = TINY.features
    expected = {"feature-generic", *(f"feature-{v.name}" for v in spec.variants),
                *(f"feature-{task}" for task in TINY.families)}
    assert set(features) == expected
    for name, d in features.items():
        assert d["kind"] == "feature" and d["path"] == name and (built_zoo / name / "specroute_drafter.json").is_file()
        assert len(d["heldout"]["agreement"]) == spec.train_depth
        assert all(0.0 <= a <= 1.0 for a in d["heldout"]["agreement"])
        assert d["step_cost_ratio"] > 0 and d["params"] > 0
    assert features["feature-generic"]["task"] is None and features["feature-generic"]["variant"] is None
    variant = spec.variants[0]
    entry = features[f"feature-{variant.name}"]
    assert entry["variant"] == variant.name and entry["task"] is None
    assert entry["options"]["position_specialists"] == variant.position_specialists
    assert entry["options"]["feature_sampling"] is variant.feature_sampling
    for task in TINY.families:
        d = features[f"feature-{task}"]
        assert d["task"] == task and d["base"] == "feature-generic" and "heldout_before" in d
        assert manifest["task_drafters"][task]["feature"] == d["name"]
    # The generic drafter is still the generic model drafter; the model drafters' list is unchanged.
    assert generic_drafter(manifest) == "generic-llama"
    assert "feature" not in {d["kind"] for d in manifest["drafters"]}
    table = summary_table(manifest)
    assert all(name in table for name in features) and "feature trial code:" in table


def test_every_feature_drafter_loads(built_zoo):
    manifest = load_manifest(built_zoo)
    loaded = load_drafters(built_zoo, manifest)
    assert set(_features(built_zoo)) <= set(loaded)
    assert set(load_drafters(built_zoo, manifest, features=False)) == {d["name"] for d in manifest["drafters"]}
    assert create_drafter("feature", {"path": built_zoo / "feature-generic"}) is not None


def test_a_feature_specialist_decodes_exactly_as_plain_decoding(built_zoo):
    target = TargetModel.from_dir(built_zoo / "target")
    plain = Engine(target)
    for name in ("feature-code", "feature-poss-fspad"):
        engine = Engine(target, create_drafter("feature", {"path": built_zoo / name}))
        for prompt in ("def parse(text):", "The river"):
            ids = target.tokenizer.encode(prompt)
            expected = plain.generate(ids, 16).token_ids
            assert expected and engine.generate(ids, 16).token_ids == expected, (name, prompt)


def test_routing_follows_the_recorded_trial(built_zoo):
    manifest = load_manifest(built_zoo)
    routed = {d["name"] for d in routed_drafters(manifest)}
    for task in TINY.families:
        d = next(e for e in feature_drafters(manifest, task=task))
        trials = d["trial"]["trials"]
        specialist = manifest["task_drafters"][task]["specialist"]
        grafted = f"{d['name']}+lookup"  # every tiny task has a datastore: the trial grafts lookups on
        assert d["trial"]["versus"] == specialist and set(trials) == {specialist, d["name"], grafted}
        best = max((d["name"], grafted), key=lambda n: trials[n]["speedup"])
        faster = trials[best]["speedup"] > trials[specialist]["speedup"]
        assert d["routed"] is faster
        assert (d["name"] in routed) is faster
        assert d["routed_kind"] == ("hybrid" if best == grafted else "feature")
        if faster:
            entry = next(e for e in routed_drafters(manifest) if e["name"] == d["name"])
            assert entry["kind"] == d["routed_kind"] and (entry.get("datastore") is not None) == (best == grafted)
        assert manifest["task_drafters"][task]["routed"] == (d["name"] if faster else specialist)
        stage = json.loads((built_zoo / ".stages" / f"feature-trial-{task}.json").read_text())
        assert stage["routed"] is faster and stage["trials"] == trials
    assert {d["name"] for d in manifest["drafters"]} <= routed


def test_config_for_zoo_deploys_the_routed_feature_specialists(built_zoo):
    from specroute.zoo.serving import config_for_zoo
    manifest = load_manifest(built_zoo)
    config = config_for_zoo(built_zoo)
    names = {d.name for d in config.drafters}
    assert {d["name"] for d in routed_drafters(manifest)} <= names
    assert not {d["name"] for d in feature_drafters(manifest) if not d.get("routed")} & names


def test_the_plan_names_the_feature_stages_and_a_rebuild_skips_them(built_zoo):
    plan = build_plan(TINY)
    features = [s for s in plan if s.startswith("feature-")]
    assert features[:3] == ["feature-states", "feature-generic", "feature-poss-fspad"]
    assert plan.index("feature-states") > plan.index("drafter-structured-gpt2")
    costs = plan.index("costs")  # after every model stage; only the stop-model stages follow it
    assert costs > plan.index(features[-1]) and all(s.startswith("stop-") for s in plan[costs + 1:])
    assert {f"feature-{t}" for t in TINY.families} | {f"feature-trial-{t}" for t in TINY.families} <= set(features)
    assert (built_zoo / ".features" / "states-code-train.pt").is_file()
    before = {p.name: p.read_text() for p in (built_zoo / ".stages").glob("feature-*.json")}
    assert set(before) == {f"{s}.json" for s in features}
    logs = []
    ZooBuilder(TINY, built_zoo, log=logs.append).build()
    assert {p.name: p.read_text() for p in (built_zoo / ".stages").glob("feature-*.json")} == before
    assert all(any(f"{s}: done already, skipped" in line for line in logs) for s in features)


def test_a_zoo_without_features_keeps_its_stage_keys(built_zoo, tmp_path):
    """Feature drafters enter no earlier stage's key: dropping them redoes only the cost measurement,
    and removes their directories and records."""
    import shutil
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    before = {p.name: json.loads(p.read_text()) for p in (zoo / ".stages").glob("*.json")}
    logs = []
    ZooBuilder(TINY.model_copy(update={"features": None}), zoo, log=logs.append).build()
    after = {p.name: json.loads(p.read_text()) for p in (zoo / ".stages").glob("*.json")}
    assert set(after) == {n for n in before if not n.startswith("feature-")}
    assert {n for n in after if after[n] != before[n]} == {"costs.json"}
    manifest = load_manifest(zoo)
    assert "feature_drafters" not in manifest and not (zoo / "feature-generic").exists()
    assert not (zoo / ".features").exists()
