"""The `feature` drafter: EAGLE-style trees from the target's states, lossless and loadable as any drafter.

A tiny feature drafter is trained briefly on the tiny target's own greedy text, so its drafts are
accepted often enough for the tests to mean something; greedy output through it equals plain
decoding in-process and over gRPC (both verifier backends), and the directory loads by its
recorded kind. (The statistical sampling test runs on it in tests/verifier_service.)
"""

from __future__ import annotations

import pytest

from core.reports import GenerationReport
from core.sampling import SamplingParams
from drafter_service.base import DraftLimit, create_drafter, directory_kind
from drafter_service.datastore import Datastore
from drafter_service.generation import StopConditions, collect, speculate
from drafter_service.feature_model import FeatureDraftConfig, FeatureDraftModel
from specroute.engine import Engine, load_drafter
from specroute.zoo.feature import FeatureStateCache, FeatureTrainSpec, train_feature_drafter
from specroute.zoo.teacher import Sample
from tests.conftest import PROMPTS
from verifier_service.client import VerifierPool
from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.session import VerifierSession

MAX_NEW = 24
TREE = {"top_k": 3, "max_depth": 4, "max_nodes": 12}


@pytest.fixture(scope="module")
def feature_dir(target, tiny_zoo, tmp_path_factory):
    plain = Engine(target)
    samples = []
    for prompt in PROMPTS:
        ids = target.tokenizer.encode(prompt)
        samples.append(Sample(ids, plain.generate(ids, 40).token_ids))
    cache = FeatureStateCache.build(target.model, samples, progress=False)
    out = tmp_path_factory.mktemp("feature") / "feature-tiny"
    model = FeatureDraftModel.from_target(tiny_zoo.target, FeatureDraftConfig(train_depth=3), seed=0)
    train_feature_drafter(model, cache, FeatureTrainSpec(steps=200, batch_size=8, lr=3e-3), seed=0, progress=False)
    model.save(out)
    return out


@pytest.fixture(scope="module")
def drafter(feature_dir):
    return create_drafter("feature", {"path": feature_dir, **TREE})


@pytest.mark.parametrize("prompt", PROMPTS[:6])
def test_greedy_output_is_the_targets_own(target, drafter, prompt):
    expected = Engine(target).generate(prompt, MAX_NEW)
    result = Engine(target, drafter).generate(prompt, MAX_NEW)
    assert result.token_ids == expected.token_ids


def test_its_drafts_are_accepted(target, drafter):
    """The features reach the network where they should: a trained drafter is accepted often."""
    engine = Engine(target, drafter)
    accepted = rounds = 0
    for prompt in PROMPTS[:8]:
        stats = engine.generate(prompt, MAX_NEW).stats
        accepted, rounds = accepted + stats.num_accepted, rounds + stats.rounds
    assert accepted / rounds > 0.5, f"{accepted} drafted tokens accepted in {rounds} rounds"


def test_the_directory_loads_by_its_recorded_kind(target, feature_dir):
    assert directory_kind(feature_dir) == "feature"
    drafter = load_drafter(str(feature_dir), device="cpu")
    assert drafter.kind == "feature" and drafter.state_request is not None
    engine = Engine.load(target.config.path, drafter=str(feature_dir), device="cpu")
    assert engine.generate(PROMPTS[0], 12).token_ids == Engine(target).generate(PROMPTS[0], 12).token_ids


def test_a_one_token_prompt_starts_with_the_root_alone(target, drafter):
    ids = target.tokenizer.encode("w")
    assert len(ids) == 1
    expected = Engine(target).generate(ids, MAX_NEW)
    assert Engine(target, drafter).generate(ids, MAX_NEW).token_ids == expected.token_ids


def test_without_states_it_says_what_is_missing(target, drafter):
    ids = target.tokenizer.encode(PROMPTS[0])
    verifier = VerifierSession(target, ids, SamplingParams())  # opened without the drafter's state_request
    assert verifier.prefill_states is None
    session = drafter.start(ids, SamplingParams())
    with pytest.raises(ValueError, match="target features"):
        session.propose(DraftLimit(12, 4))


def test_it_does_not_draft_ahead(feature_dir):
    with pytest.raises(ValueError, match="does not draft ahead"):
        create_drafter("feature", {"path": feature_dir, "draft_ahead": 2})


def test_a_model_directory_is_not_a_feature_drafter(tiny_zoo):
    with pytest.raises(ValueError, match="not a feature drafter directory"):
        create_drafter("feature", {"path": tiny_zoo.llama_drafter})


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_over_grpc_greedy_output_is_unchanged(target, drafter, batching):
    server = VerifierServer(target, VerifierServerConfig(batching=batching), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    try:
        for prompt in PROMPTS[:3]:
            ids = target.tokenizer.encode(prompt)
            with pool.open(ids, SamplingParams(), states=drafter.state_request) as remote:
                stats = GenerationReport()
                result = collect(speculate(remote, drafter.start(ids, SamplingParams()), target.tokenizer, ids,
                                           StopConditions(MAX_NEW, remote.eos_token_ids), stats), stats)
            assert result.token_ids == Engine(target).generate(prompt, MAX_NEW).token_ids
            assert stats.num_accepted > 0
    finally:
        pool.close()
        server.stop(0)


def test_lookups_graft_onto_a_feature_drafter(target, feature_dir, tmp_path):
    """A hybrid whose base is a feature drafter asks for its base's states and stays lossless."""
    store = tmp_path / "task.npz"
    Datastore.from_documents([target.tokenizer.encode(p) for p in PROMPTS], target.tokenizer.eos_token_id).save(store)
    hybrid = create_drafter("hybrid", {"path": feature_dir, "datastore": store, **TREE})
    assert hybrid.state_request is not None and hybrid.model.kind == "feature"
    engine = Engine(target, hybrid)
    for prompt in PROMPTS[:4]:
        assert engine.generate(prompt, MAX_NEW).token_ids == Engine(target).generate(prompt, MAX_NEW).token_ids
    sampled = engine.generate(PROMPTS[0], MAX_NEW, SamplingParams(temperature=1.0, seed=3))
    assert sampled.stats.num_generated == MAX_NEW or sampled.finish_reason != "length"
