"""The `steered` drafter (SD²): steered by the verifier's states, lossless, loadable as any drafter.

The tiny Llama drafter is steered briefly on the tiny target's own text (sampled and greedy), so
its steering is not zero; greedy output through it equals plain decoding in-process and over
gRPC (both verifier backends), the verdicts carry the three vectors only, and the directory
loads by its recorded kind. (The statistical sampling test runs on it in tests/verifier_service.)
"""

from __future__ import annotations

import logging

import pytest
import torch

from core.reports import GenerationReport
from core.sampling import SamplingParams
from drafter_service.base import DraftLimit, create_drafter, directory_kind
from drafter_service.contracts import GenerationRequest
from drafter_service.datastore import Datastore
from drafter_service.generation import StopConditions, collect, speculate
from drafter_service.service import DrafterService
from specroute.engine import Engine, load_drafter
from specroute.zoo.steer import SteeringStateCache, SteerTrainSpec, steer_from_caches
from specroute.zoo.teacher import Sample, TeacherCache
from tests.conftest import PROMPTS
from verifier_service.client import VerifierPool
from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.session import VerifierSession

MAX_NEW = 24
TREE = {"top_k": 3, "max_depth": 4, "max_nodes": 12}
LAYERS = (0, 1, 2)


def _caches(target, prompts, seed):
    samples = []
    for i, prompt in enumerate(prompts):
        ids = target.tokenizer.encode(prompt)
        for params in (SamplingParams(), SamplingParams(temperature=1.0, seed=seed + i)):
            samples.append(Sample(ids, Engine(target).generate(ids, 32, params).token_ids))
    pad = target.tokenizer.pad_token_id or 0
    teacher = TeacherCache.build(target.model, samples, pad)
    return teacher, SteeringStateCache.build(target.model, teacher.samples, LAYERS, pad)


@pytest.fixture(scope="module")
def steered_dir(target, tiny_zoo, tmp_path_factory):
    from transformers import AutoModelForCausalLM
    caches = {"train": _caches(target, PROMPTS, 0), "heldout": _caches(target, PROMPTS[:2], 100)}
    drafter = AutoModelForCausalLM.from_pretrained(tiny_zoo.llama_drafter)
    model, report = steer_from_caches(drafter, target.model.config.hidden_size, LAYERS, caches,
                                      SteerTrainSpec(steps=40, batch_size=8, lr=3e-3, max_offset=5),
                                      target.tokenizer.pad_token_id or 0, seed=0)
    assert report["heldout_kl_after"] < report["heldout_kl_before"]
    assert model.steering.w_s.weight.abs().sum() > 0
    out = tmp_path_factory.mktemp("steered") / "steered-tiny"
    model.save(out, target.tokenizer, LAYERS, 5, base=str(tiny_zoo.llama_drafter))
    return out


@pytest.fixture(scope="module")
def drafter(steered_dir):
    return create_drafter("steered", {"path": steered_dir, **TREE})


@pytest.mark.parametrize("prompt", PROMPTS[:4])
def test_greedy_output_is_the_targets_own(target, drafter, prompt):
    expected = Engine(target).generate(prompt, MAX_NEW)
    assert Engine(target, drafter).generate(prompt, MAX_NEW).token_ids == expected.token_ids


def test_the_states_steer_its_proposals(target, drafter):
    """The verdict's states reach the drafter's MLPs: the same context, other states, another tree."""
    ids = target.tokenizer.encode(PROMPTS[0])
    verifier = VerifierSession(target, ids, SamplingParams(), states=drafter.state_request)
    assert verifier.prefill_states.rows == 1 and verifier.prefill_states.layers == 3
    steered = drafter.start(ids, SamplingParams())
    steered.prime(verifier.prefill_states)
    unsteered = drafter.start(ids, SamplingParams())  # never primed: no bias
    assert steered._bias is not None and unsteered._bias is None
    with_states, without = steered._run_context(), unsteered._run_context()
    # The root runs steered by the state one position back; the prompt before it was never drafted under
    # any state, so it runs unsteered (no token is steered by a state at or after its own position).
    assert not torch.allclose(with_states[-1], without[-1], atol=1e-4)
    assert torch.allclose(with_states[:-1], without[:-1], atol=1e-5)


def test_tokens_never_run_get_the_bias_they_were_drafted_under_after_root_only_rounds(target, drafter):
    """A root-only tree (a budget of one node) runs nothing, so committed tokens wait: after a drafted
    round and two root-only ones, the old roots run with the biases of the blocks they were roots in,
    never one from their own position or later, and the new root with the newest."""
    ids = target.tokenizer.encode(PROMPTS[3])
    verifier = VerifierSession(target, ids, SamplingParams(), states=drafter.state_request)
    session = drafter.start(ids, SamplingParams())
    session.prime(verifier.prefill_states)
    biases = [session._bias]
    for limit in (DraftLimit(12, 4), DraftLimit(1, 4), DraftLimit(1, 4)):
        verdict = verifier.verify(session.propose(limit))
        session.observe(verdict)
        biases.append(drafter.bias(verdict.states))
    rows = session._context_bias()[0]
    assert rows.shape[0] == len(session.context) - session.num_run >= 3
    for row, expected in zip(rows[-3:], biases[-3:]):  # the roots of the two root-only rounds, then the new root
        assert torch.equal(row, expected)
    assert not torch.equal(biases[-3], biases[-2]) and not torch.equal(biases[-2], biases[-1])
    expected_tokens = Engine(target).generate(ids, len(session.context) - len(ids) + 8).token_ids
    assert session.context[len(ids):] == expected_tokens[:len(session.context) - len(ids)]


def test_the_directory_loads_by_its_recorded_kind(target, steered_dir):
    assert directory_kind(steered_dir) == "steered"
    loaded = load_drafter(str(steered_dir), device="cpu")
    assert loaded.kind == "steered" and loaded.state_request.last_only and len(loaded.state_request.layers) == 3
    engine = Engine.load(target.config.path, drafter=str(steered_dir), device="cpu")
    assert engine.generate(PROMPTS[0], 12).token_ids == Engine(target).generate(PROMPTS[0], 12).token_ids


def test_as_a_plain_model_it_is_refused(steered_dir, tiny_zoo):
    with pytest.raises(ValueError, match="steered drafter directory; load it as kind 'steered'"):
        create_drafter("model", {"path": steered_dir})
    with pytest.raises(ValueError, match="not a steered drafter directory"):
        create_drafter("steered", {"path": tiny_zoo.llama_drafter})


def test_a_tree_deeper_than_the_trained_offsets_is_warned_about(steered_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="drafter_service.steered_drafter"):
        create_drafter("steered", {"path": steered_dir, **TREE})  # depth 4: offsets up to 5, as trained
        assert not caplog.records
        create_drafter("steered", {"path": steered_dir, **TREE, "max_depth": 5})
    assert "trained with offsets up to 5 only" in caplog.text


def test_it_does_not_draft_ahead(steered_dir):
    with pytest.raises(ValueError, match="does not draft ahead"):
        create_drafter("steered", {"path": steered_dir, "draft_ahead": 2})


def test_a_one_token_prompt_runs_unsteered_first(target, drafter):
    ids = target.tokenizer.encode("w")
    assert len(ids) == 1
    expected = Engine(target).generate(ids, MAX_NEW)
    assert Engine(target, drafter).generate(ids, MAX_NEW).token_ids == expected.token_ids


def test_without_states_it_says_what_is_missing(target, drafter):
    ids = target.tokenizer.encode(PROMPTS[0])
    verifier = VerifierSession(target, ids, SamplingParams())  # opened without the drafter's state_request
    session = drafter.start(ids, SamplingParams())
    verdict = verifier.verify(session.propose(DraftLimit(12, 4)))
    with pytest.raises(ValueError, match="needs the target's states"):
        session.observe(verdict)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_over_grpc_greedy_output_is_unchanged_and_verdicts_carry_three_vectors(target, drafter, batching):
    server = VerifierServer(target, VerifierServerConfig(batching=batching), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    try:
        for prompt in PROMPTS[:3]:
            ids = target.tokenizer.encode(prompt)
            with pool.open(ids, SamplingParams(), states=drafter.state_request) as remote:
                session = drafter.start(ids, SamplingParams())
                rows = []
                observe = session.observe
                session.observe = lambda verdict: (rows.append(verdict.states.rows), observe(verdict))
                stats = GenerationReport()
                result = collect(speculate(remote, session, target.tokenizer, ids,
                                           StopConditions(MAX_NEW, remote.eos_token_ids), stats), stats)
            assert result.token_ids == Engine(target).generate(prompt, MAX_NEW).token_ids
            assert rows and set(rows) == {1}, "each verdict carries the last position's three vectors only"
    finally:
        pool.close()
        server.stop(0)


def test_sampled_generation_runs(target, drafter):
    result = Engine(target, drafter).generate(PROMPTS[1], MAX_NEW, SamplingParams(temperature=1.0, seed=5))
    assert result.stats.num_generated == MAX_NEW or result.finish_reason != "length"


def test_lookups_graft_onto_a_steered_drafter(target, steered_dir, tmp_path):
    store = tmp_path / "task.npz"
    Datastore.from_documents([target.tokenizer.encode(p) for p in PROMPTS], target.tokenizer.eos_token_id).save(store)
    hybrid = create_drafter("hybrid", {"path": steered_dir, "datastore": store, **TREE})
    assert hybrid.state_request is not None and hybrid.model.kind == "steered"
    engine = Engine(target, hybrid)
    for prompt in PROMPTS[:3]:
        assert engine.generate(prompt, MAX_NEW).token_ids == Engine(target).generate(prompt, MAX_NEW).token_ids


def test_its_bias_is_computed_from_the_last_row(drafter, target):
    ids = target.tokenizer.encode(PROMPTS[2])
    full = VerifierSession(target, ids, SamplingParams(),
                           states=type(drafter.state_request)(layers=drafter.state_request.layers)).prefill_states
    last = VerifierSession(target, ids, SamplingParams(), states=drafter.state_request).prefill_states
    assert torch.equal(drafter.bias(full), drafter.bias(last))


def test_a_verifier_replica_stopped_mid_stream_changes_nothing(target, drafter):
    """Failover: the session resumes on the other replica, its next verdict carries the last row again,
    and the greedy output is the target's own."""
    first = VerifierServer(target, replica="a").start()
    second = VerifierServer(target, replica="b").start()
    pool = VerifierPool.static([first.address, second.address], failover_timeout_s=5.0)
    try:
        ids = target.tokenizer.encode(PROMPTS[4])
        remote = pool.open(ids, SamplingParams(), states=drafter.state_request)
        victim = {"a": first, "b": second}[remote.replica]
        tokens, stats = [], GenerationReport()
        session = drafter.start(ids, SamplingParams())
        for i, chunk in enumerate(speculate(remote, session, target.tokenizer, ids, StopConditions(40), stats)):
            tokens.extend(chunk.token_ids)
            if i == 1:
                victim.stop(grace_s=0)
        assert remote.failovers == 1 and remote.resumed_states.rows == 1
        assert tokens == Engine(target).generate(PROMPTS[4], 40).token_ids
        assert session._bias is not None
        remote.close()
    finally:
        pool.close()
        first.stop(0)
        second.stop(0)


def test_as_its_own_drafter_service_it_serves_the_targets_output(target, drafter):
    """The drafter deployment's core (`DrafterService`) opens its verifier sessions with the steered
    drafter's state request, on a batched verifier server over loopback: greedy output is the target's
    own, and a seeded sampled request gives what the same drafter gives in process."""
    server = VerifierServer(target, VerifierServerConfig(batching=True), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=2.0)
    service = DrafterService("steered", drafter, target.tokenizer, pool)
    try:
        for prompt, params in ((PROMPTS[0], SamplingParams()), (PROMPTS[1], SamplingParams(temperature=1.0, seed=7))):
            chunks = list(service.stream(GenerationRequest(prompt, MAX_NEW, params, request_id="steered")))
            assert all(c.error is None for c in chunks)
            ids = target.tokenizer.encode(prompt, add_special_tokens=False)
            expected = Engine(target, drafter).generate(ids, MAX_NEW, params)
            assert [t for c in chunks for t in c.token_ids] == expected.token_ids
            if params.temperature == 0:
                assert expected.token_ids == Engine(target).generate(ids, MAX_NEW).token_ids
            assert chunks[-1].report.num_accepted > 0
    finally:
        pool.close()
        server.stop(0)
