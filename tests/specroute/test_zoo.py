"""The zoo's tiny preset: artifacts load with the real loaders, the corpus is deterministic with
disjoint splits, and distillation lowers the divergence to the target on held-out data."""

import json
import shutil

from transformers import AutoModelForCausalLM, AutoTokenizer

from specroute.zoo.build import build_zoo
from specroute.zoo.manifest import load_manifest
from specroute.zoo.corpus import build_corpus


def test_manifest_names_every_artifact(built_zoo):
    manifest = load_manifest(built_zoo)
    assert manifest["target"]["path"] == "target"
    kinds = {d["kind"] for d in manifest["drafters"]}
    assert {"model", "ngram"} <= kinds <= {"model", "hybrid", "ngram"}
    families = {d["family"] for d in manifest["drafters"] if d["path"]}
    assert families == {"llama", "gpt2"}
    for split, path in manifest["corpus"]["files"].items():
        assert (built_zoo / path).is_file(), split
    # The build measures its target's text quality on test prompts (`specroute.zoo.quality`).
    quality = manifest["target"]["quality"]
    assert set(quality["tasks"]) == set(manifest["corpus"]["families"]) and quality["max_new_tokens"] == 96
    assert all(0.0 <= t["greedy"]["repeat_share"] <= 1.0 for t in quality["tasks"].values())


def test_artifacts_load_with_auto_classes(built_zoo):
    manifest = load_manifest(built_zoo)
    tokenizer = AutoTokenizer.from_pretrained(built_zoo / manifest["tokenizer"])
    text = "def f(x):\n    return x  # héllo"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    for path in ["target"] + [d["path"] for d in manifest["drafters"] if d["path"]]:
        model = AutoModelForCausalLM.from_pretrained(built_zoo / path)
        assert model.config.vocab_size == len(tokenizer)
        assert AutoTokenizer.from_pretrained(built_zoo / path).get_vocab() == tokenizer.get_vocab()


def test_corpus_is_deterministic_and_splits_disjoint():
    a = build_corpus(["code", "prose"], seed=3, max_per_family=200)
    b = build_corpus(["code", "prose"], seed=3, max_per_family=200)
    assert a == b
    prompts = {split: {ex.prompt for ex in examples} for split, examples in a.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    assert {ex.task for ex in a["train"]} == {"code", "prose"}


def test_distillation_lowers_heldout_divergence(built_zoo):
    for drafter in load_manifest(built_zoo)["drafters"]:
        if drafter["path"]:
            assert drafter["heldout_divergence_after"] < drafter["heldout_divergence_before"], drafter["name"]


def test_build_resumes_without_redoing_stages(built_zoo):
    stages = sorted((built_zoo / ".stages").glob("*.json"))
    before = {p.name: p.read_text() for p in stages}
    build_zoo("tiny", built_zoo)
    after = {p.name: p.read_text() for p in sorted((built_zoo / ".stages").glob("*.json"))}
    assert before == after
    assert json.loads((built_zoo / "manifest.json").read_text())["preset"] == "tiny"


def test_prompts_end_at_a_token_boundary():
    """A prompt never ends in whitespace: in training, that whitespace would merge with the next
    line's indentation, and a bare trailing newline token only ever precedes end-of-text."""
    splits = build_corpus(["code", "prose"], seed=0, max_per_family=300)
    for ex in splits["test"] + splits["train"]:
        assert ex.prompt == ex.prompt.rstrip()
        assert ex.continuation.strip()


def _rebuild_with(built_zoo, tmp_path, name: str) -> tuple[set[str], list[str], int]:
    """Copies the built zoo, shortens drafter `name`'s distillation, rebuilds; returns the stage
    files that changed, the build's log and the number of stages before."""
    from specroute.zoo.build import ZooBuilder
    from specroute.zoo.presets import TINY, TrainSpec
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    before = {p.name: json.loads(p.read_text()) for p in (zoo / ".stages").glob("*.json")}
    drafters = tuple(d.model_copy(update={"distill": TrainSpec(steps=5, lr=3e-3)}) if d.name == name else d
                     for d in TINY.drafters)
    logs = []
    ZooBuilder(TINY.model_copy(update={"drafters": drafters}), zoo, log=logs.append).build()
    after = {p.name: json.loads(p.read_text()) for p in (zoo / ".stages").glob("*.json")}
    return {n for n in before if after[n] != before[n]}, logs, len(before)


def test_a_changed_stage_is_redone_and_nothing_before_it(built_zoo, tmp_path):
    """Stages are keyed by the settings they use: editing one drafter's spec redoes that drafter
    (with its lookup measurement, its task's feature specialist trial against it, and the cost
    measurement that follows every drafter); the corpus, tokenizer, target, on-policy data,
    teacher, datastores, other drafters and the feature drafters are reused."""
    redone, logs, stages = _rebuild_with(built_zoo, tmp_path, "math-llama")
    assert redone == {"drafter-math-llama.json", "lookup-math-llama.json", "feature-trial-math.json", "costs.json"}
    assert sum("skipped" in line for line in logs) == stages - 4


def test_a_changed_base_redoes_the_drafters_fine_tuned_from_it(built_zoo, tmp_path):
    redone, _, _ = _rebuild_with(built_zoo, tmp_path, "generic-llama")
    assert redone == {"drafter-generic-llama.json", "drafter-code.json", "lookup-code.json", "drafter-extraction.json",
                      "feature-trial-code.json", "feature-trial-extraction.json", "steer-generic-llama.json",
                      "stop-generic-llama.json", "costs.json"}
    # the steered drafter starts from generic-llama (the state cache does not read it); its stop model
    # is trained on its acceptance


def test_a_drafter_dropped_from_the_preset_is_removed_and_nothing_else(built_zoo, tmp_path):
    from specroute.zoo.build import ZooBuilder
    from specroute.zoo.presets import TINY
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    (zoo / "my-model").mkdir()
    (zoo / "my-model" / "config.json").write_text("{}")  # not the build's: it must stay
    logs = []
    ZooBuilder(TINY.model_copy(update={"drafters": tuple(d for d in TINY.drafters if d.name != "structured-gpt2")}),
               zoo, log=logs.append).build()
    assert not (zoo / "structured-gpt2").exists() and not (zoo / ".stages" / "drafter-structured-gpt2.json").exists()
    assert any("removed structured-gpt2" in line for line in logs)
    assert (zoo / "my-model" / "config.json").is_file()
    manifest = load_manifest(zoo)
    assert "structured-gpt2" not in {d["name"] for d in manifest["drafters"]}
    for d in manifest["drafters"]:
        assert d["path"] is None or (zoo / d["path"] / "config.json").is_file(), d["name"]


def test_steering_and_stopping_turned_off_remove_their_drafters_models_and_caches(built_zoo, tmp_path):
    from specroute.zoo.build import ZooBuilder
    from specroute.zoo.presets import TINY
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    made = ["steered-generic-llama", "stop-generic-llama", "stop-generic-llama-hard", ".steer", ".stop"]
    assert all((zoo / name).is_dir() for name in made)
    logs = []
    ZooBuilder(TINY.model_copy(update={"steering": None, "stopping": None}), zoo, log=logs.append).build()
    assert not any((zoo / name).exists() for name in made)
    assert not [*(zoo / ".stages").glob("steer-*.json"), *(zoo / ".stages").glob("stop-*.json")]
    assert any("removed steered-generic-llama" in line for line in logs)
    assert {"steered_drafters", "stop_models"}.isdisjoint(load_manifest(zoo))
    assert (zoo / "generic-llama" / "config.json").is_file() and (zoo / ".features").is_dir()


def test_specialists_fine_tuned_from_a_base_name_it(built_zoo):
    """TaskSpec's recipe: a specialist may start from a generic drafter's weights; the manifest
    says which, and a sized one's trials say which candidate was which base."""
    drafters = {d["name"]: d for d in load_manifest(built_zoo)["drafters"]}
    assert drafters["prose-gpt2"]["base"] == "generic-gpt2"
    assert "base" not in drafters["math-llama"] and "base" not in drafters["generic-llama"]
    code = next(d for d in drafters.values() if d["task"] == "code")
    assert [t.get("base") for t in code["sizing"]] == ["generic-llama", None]
    assert code.get("base") == ("generic-llama" if code["name"] == "code-llama-32x1" else None)


def test_greedy_on_policy_data_follows_the_sampled(built_zoo):
    """Per task: the sampled continuations, then the greedy ones on further prompts, then the
    held-out ones; a greedy continuation is the target's own argmax at every step."""
    import torch
    from specroute.zoo.presets import TINY
    data = json.loads((built_zoo / "on_policy.json").read_text())
    spec = TINY.on_policy
    target = AutoModelForCausalLM.from_pretrained(built_zoo / "target").eval()

    def argmax_gaps(prompt: list[int], continuation: list[int]) -> list[float]:
        """Per continuation token: how far its logit is below the best one (0: it is the argmax)."""
        with torch.no_grad():
            logits = target(torch.tensor([prompt + continuation])).logits[0, len(prompt) - 1: -1]
        return (logits.max(-1).values - logits[range(len(continuation)), continuation]).tolist()

    sampled_off_argmax = 0
    for task in TINY.families:
        train = data[f"{task}/train"]
        assert len(train) == spec.prompts_per_task + spec.greedy_prompts_per_task
        assert len(data[f"{task}/validation"]) == spec.heldout_prompts
        for prompt, continuation in train[spec.prompts_per_task:]:
            assert continuation and max(argmax_gaps(prompt, continuation)) < 1e-4, (
                f"{task}: a greedy continuation left the target's argmax")
        sampled_off_argmax += sum(max(argmax_gaps(p, c)) > 1e-4 for p, c in train[: spec.prompts_per_task])
    assert sampled_off_argmax, "no sampled continuation ever left the argmax: they look greedy"


def test_all_six_families_build_deterministic_disjoint_splits():
    from specroute.zoo.corpus import FAMILIES
    families = ["math", "translation", "extraction", "structured"]
    assert set(families) | {"code", "prose"} == set(FAMILIES)
    a = build_corpus(families, seed=5, max_per_family=500)
    assert a == build_corpus(families, seed=5, max_per_family=500)
    for family in families:
        train = {ex.prompt for ex in a["train"] if ex.task == family}
        test = {ex.prompt for ex in a["test"] if ex.task == family}
        assert len(train) > 350 and test, family
        assert not train & test, family
    assert all(ex.prompt == ex.prompt.rstrip() for split in a.values() for ex in split)


def test_every_task_has_a_specialist(built_zoo):
    manifest = load_manifest(built_zoo)
    specialists = {d["task"]: d for d in manifest["drafters"] if d["task"]}
    assert set(specialists) == set(manifest["corpus"]["families"])
    models = [d for d in specialists.values() if d["path"]]  # model and hybrid drafters
    assert {d["family"] for d in models} == {"llama", "gpt2"}
    assert {d["divergence"] for d in models} == {"forward_kl", "reverse_kl", "tv"}


def test_sized_drafters_are_the_fastest_measured_candidate(built_zoo):
    """Sizing trains every candidate briefly, measures each through the engine beside plain
    decoding, and keeps the fastest; its name says which one won."""
    sized = {d["task"]: d for d in load_manifest(built_zoo)["drafters"] if "sizing" in d}
    assert set(sized) == {"code", "extraction"}
    for task, drafter in sized.items():
        trials = drafter["sizing"]
        assert [t["candidate"] for t in trials] == (["llama-32x1", "llama-32x2"] if task == "code"
                                                    else ["llama-32x1", "ngram"])
        for trial in trials:
            assert trial["tau"] >= 1.0 and trial["tokens_per_s"] > 0 and trial["speedup"] > 0
        chosen = max(trials, key=lambda t: t["speedup"])
        assert [t for t in trials if t.get("chosen")] == [chosen]
        assert drafter["name"] == f"{task}-{chosen['candidate']}"
        assert drafter["kind"] in ({"ngram"} if chosen["candidate"] == "ngram" else {"model", "hybrid"})
    assert not (built_zoo / ".sizing" / "code").exists()  # the losers are not kept


def test_model_drafters_record_their_measured_step_cost(built_zoo):
    """Measured side by side with the target in the `costs` stage (a ratio, not two timings)."""
    manifest = load_manifest(built_zoo)
    costs = json.loads((built_zoo / ".stages" / "costs.json").read_text())["costs"]
    for drafter in manifest["drafters"]:
        if drafter["path"]:
            assert drafter["step_ms"] > 0 and drafter["target_step_ms"] > 0 and drafter["step_cost_ratio"] > 0
            assert costs[drafter["name"]]["step_cost_ratio"] == drafter["step_cost_ratio"]
            assert set(drafter["arch"]) >= {"family", "hidden", "layers"}


def test_summary_table_shows_every_model_and_the_sizing(built_zoo):
    from specroute.zoo.manifest import summary_table
    manifest = load_manifest(built_zoo)
    table = summary_table(manifest)
    for drafter in manifest["drafters"]:
        assert drafter["name"] in table
    assert "sizing code:" in table and "<- chosen" in table


def test_lookup_keeps_the_faster_of_model_and_hybrid(built_zoo):
    """A specialist with `lookup` is measured alone and as a hybrid with its task's datastore; the
    manifest names the faster, and the datastore holds the task's training text and the target's
    continuations of its training prompts."""
    from drafter_service.datastore import Datastore
    from specroute.zoo.manifest import summary_table
    manifest = load_manifest(built_zoo)
    looked = {d["task"]: d for d in manifest["drafters"] if "lookup" in d}
    assert set(looked) == {"code", "math"}  # the tiny preset's specialists with lookup
    for task, drafter in looked.items():
        trials = drafter["lookup"]
        assert set(trials) == {"model", "hybrid"} and all(t["tau"] >= 1.0 and t["speedup"] > 0 for t in trials.values())
        assert drafter["kind"] == max(trials, key=lambda how: trials[how]["speedup"])
        assert (drafter.get("datastore") is not None) == (drafter["kind"] == "hybrid")
        store = Datastore.load(built_zoo / "datastores" / f"{task}.npz")
        on_policy = json.loads((built_zoo / "on_policy.json").read_text())[f"{task}/train"]
        assert len(store) > sum(len(p) + len(c) + 1 for p, c in on_policy)
    assert "lookup code:" in summary_table(manifest)


def test_routing_is_made_again_for_a_rebuilt_zoos_drafters(built_zoo, tmp_path):
    """A routing table naming drafters the zoo no longer has (the zoo was rebuilt with others)
    is stale: serving the zoo makes it again rather than route to missing drafters."""
    from router.assign import ROUTING_FILE, RoutingTable
    from specroute.zoo.manifest import routed_drafters
    from specroute.zoo.routing import ensure_routing
    zoo = tmp_path / "zoo"
    shutil.copytree(built_zoo, zoo)
    tasks_dir = ensure_routing(zoo)
    table = RoutingTable.load(tasks_dir / ROUTING_FILE)
    # Every drafter and the feature specialists the build routed; plain: no drafting, always routable.
    names = {d["name"] for d in routed_drafters(load_manifest(zoo))} | {"plain"}
    assert set(table.drafters) == names
    stale = json.loads((tasks_dir / ROUTING_FILE).read_text())
    stale["drafters"]["gone-llama-128x2"] = stale["drafters"].pop("generic-gpt2")
    (tasks_dir / ROUTING_FILE).write_text(json.dumps(stale))
    ensure_routing(zoo)
    assert set(RoutingTable.load(tasks_dir / ROUTING_FILE).drafters) == names
    # A drafter of the same name but another kind (a specialist now kept as a hybrid) is stale too.
    stale = json.loads((tasks_dir / ROUTING_FILE).read_text())
    stale["drafters"]["generic-gpt2"]["kind"] = "ngram"
    (tasks_dir / ROUTING_FILE).write_text(json.dumps(stale))
    ensure_routing(zoo)
    assert RoutingTable.load(tasks_dir / ROUTING_FILE).drafters["generic-gpt2"]["kind"] == "model"
