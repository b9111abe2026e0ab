"""Speculative sampling has exactly the target's distribution: a statistical test with teeth.

On a target with an 8-token vocabulary, the empirical joint distribution of the first two
generated tokens, over many seeded generations, is compared with the exact distribution computed
from the target (chi-square). Multi-candidate trees drawn without replacement (a model drafter,
a feature drafter reading the target's states, a drafter steered by them whose depth a learned
stop model decides) and deterministic multi-branch trees (the ngram drafter) must pass; the same
test must reject a deliberately wrong acceptance rule.
"""

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import verifier_service.acceptance as acceptance
from drafter_service.base import create_drafter
from drafter_service.base import DraftLimit
from drafter_service.feature_model import FeatureDraftConfig, FeatureDraftModel
from drafter_service.stopping import DecisionModel, StopModel, StopModelFile
from specroute.zoo.steer import SteeredModel
from core.reports import GenerationReport
from drafter_service.generation import StopConditions, speculate
from tests import tiny_models
from core.sampling import SamplingParams, processed_probs
from verifier_service.client import VerifierPool
from verifier_service.server import VerifierServer, VerifierServerConfig
from verifier_service.session import VerifierSession
from verifier_service.target import TargetModel

V = 8
NUM_SAMPLES = 3000
PARAMS = SamplingParams(temperature=0.9, top_p=0.95)
PROMPT = [3, 5, 6, 3, 5, 7, 3, 5, 2, 3, 5]  # "3 5" recurs: the ngram drafter proposes 3 branches
P_VALUE_FLOOR = 1e-3


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_vocab")
    for name, seed in (("target", 11), ("drafter", 12)):
        tiny_models.build_word_tokenizer(root / name, V)
        tiny_models.build_llama(root / name, V, hidden=32, layers=1, seed=seed, max_positions=32,
                                eos_id=None, sharpen=6.0)
    return TargetModel.from_dir(root / "target"), root / "drafter"


@pytest.fixture(scope="module")
def steered_small_vocab(tmp_path_factory):
    """A two-layer target (three state layers to read: 0, 1, 2) and a drafter with a random, non-zero
    steering: its q depends on the states every round."""
    root = tmp_path_factory.mktemp("steered_small_vocab")
    for name, seed, layers in (("target", 21, 2), ("drafter", 22, 1)):
        tiny_models.build_word_tokenizer(root / name, V)
        tiny_models.build_llama(root / name, V, hidden=32, layers=layers, seed=seed, max_positions=32,
                                eos_id=None, sharpen=6.0)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = SteeredModel.around(AutoModelForCausalLM.from_pretrained(root / "drafter"), target_hidden=32)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.steering.w_s.weight, std=0.5)
    model.save(root / "steered", AutoTokenizer.from_pretrained(root / "drafter"), (0, 1, 2), 4, base=None)
    return TargetModel.from_dir(root / "target"), root / "steered"


def exact_joint(target):
    """p(x1, x2) over V x V from the target itself."""
    with torch.no_grad():
        first = processed_probs(target.model(torch.tensor([PROMPT])).logits[0, -1], PARAMS)
        seconds = target.model(torch.tensor([PROMPT + [x] for x in range(V)])).logits[:, -1]
        second = processed_probs(seconds, PARAMS)  # [V, V]
    return (first[:, None] * second).numpy()


def empirical_joint(target, drafter, open_verifier=None):
    """Counts of (x1, x2) over NUM_SAMPLES seeded generations, and the drafted tokens accepted.
    open_verifier(params, states): the verifier session (default: in process)."""
    counts, num_accepted = Counter(), 0
    stop = StopConditions(max_new_tokens=3)  # round one may draft 2 levels
    for i in range(NUM_SAMPLES):
        params = PARAMS.model_copy(update={"seed": 1000 + i})
        if open_verifier is None:
            verifier = VerifierSession(target, PROMPT, params, states=drafter.state_request)
        else:
            verifier = open_verifier(params, drafter.state_request)
        draft = drafter.start(PROMPT, params)
        stats = GenerationReport()
        chunks = speculate(verifier, draft, target.tokenizer, PROMPT, stop, stats)
        tokens = [t for chunk in chunks for t in chunk.token_ids]
        if open_verifier is not None:
            verifier.close()
        counts[tokens[0], tokens[1]] += 1
        num_accepted += stats.num_accepted
    observed = np.zeros((V, V))
    for (a, b), n in counts.items():
        observed[a, b] = n
    return observed, num_accepted


def empirical_joint_through_the_service(target, drafter):
    """`empirical_joint` with the verifier sessions opened over gRPC on loopback (the batched verifier)."""
    server = VerifierServer(target, VerifierServerConfig(), replica="v0").start()
    pool = VerifierPool.static([server.address], failover_timeout_s=5.0)
    try:
        return empirical_joint(target, drafter, lambda params, states: pool.open(PROMPT, params, states=states))
    finally:
        pool.close()
        server.stop(0)


def assert_lossless_in_process_and_through_the_service(target, drafter):
    expected = exact_joint(target)
    for joint in (empirical_joint, empirical_joint_through_the_service):
        observed, num_accepted = joint(target, drafter)
        assert num_accepted > NUM_SAMPLES // 2, "drafts must be accepted for the test to mean anything"
        assert chi_square_p(observed, expected) > P_VALUE_FLOOR, joint.__name__


def chi_square_p(observed, expected_probs):
    expected = expected_probs.flatten() * observed.sum()
    observed = observed.flatten()
    big = expected >= 5  # pool the rare cells into one
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def model_drafter(path):
    return create_drafter("model", {"path": path, "top_k": 3, "max_depth": 2, "max_nodes": 13,
                                    "proposal_support": 6, "budget": {"adaptive": False}})


def test_multi_candidate_model_drafter_is_lossless(small_vocab):
    target, drafter_dir = small_vocab
    observed, num_accepted = empirical_joint(target, model_drafter(drafter_dir))
    assert num_accepted > NUM_SAMPLES // 2, "drafts must be accepted for the test to mean anything"
    assert chi_square_p(observed, exact_joint(target)) > P_VALUE_FLOOR


@pytest.mark.parametrize("options", [{}, {"position_specialists": 1, "feature_sampling": True}],
                         ids=["eagle", "poss-fspad"])
def test_multi_candidate_feature_drafter_is_lossless(small_vocab, tmp_path, options):
    """A drafter that reads the target's states: trees from predicted features, same test."""
    target, _ = small_vocab
    model = FeatureDraftModel.from_target(target.config.path, FeatureDraftConfig(train_depth=2, **options), seed=3)
    model.save(tmp_path / "feature")
    drafter = create_drafter("feature", {"path": tmp_path / "feature", "top_k": 3, "max_depth": 2, "max_nodes": 13,
                                         "proposal_support": 6, "budget": {"adaptive": False}})
    observed, num_accepted = empirical_joint(target, drafter)
    assert num_accepted > NUM_SAMPLES // 2, "drafts must be accepted for the test to mean anything"
    assert chi_square_p(observed, exact_joint(target)) > P_VALUE_FLOOR


def test_feature_drafter_is_lossless_through_the_verifier_service(small_vocab, tmp_path):
    """The same test over gRPC on loopback: the states travel in the verdicts, the batched verifier
    verifies, and the distribution is still the target's."""
    target, _ = small_vocab
    FeatureDraftModel.from_target(target.config.path, FeatureDraftConfig(train_depth=2), seed=3).save(tmp_path / "f")
    drafter = create_drafter("feature", {"path": tmp_path / "f", "top_k": 3, "max_depth": 2, "max_nodes": 13,
                                         "proposal_support": 6, "budget": {"adaptive": False}})
    observed, num_accepted = empirical_joint_through_the_service(target, drafter)
    assert num_accepted > NUM_SAMPLES // 2, "drafts must be accepted for the test to mean anything"
    assert chi_square_p(observed, exact_joint(target)) > P_VALUE_FLOOR


def test_deterministic_ngram_candidates_are_lossless(small_vocab):
    target, _ = small_vocab
    drafter = create_drafter("ngram", {"max_ngram": 2, "num_branches": 3, "max_depth": 2})
    session = drafter.start(PROMPT, PARAMS)
    tree = session.propose(DraftLimit(max_nodes=16, max_depth=2))
    assert len(tree.children()[0]) == 3, "the test wants a multi-branch deterministic tree"
    observed, num_accepted = empirical_joint(target, drafter)
    assert num_accepted > NUM_SAMPLES // 10, "drafts must be accepted for the test to mean anything"
    assert chi_square_p(observed, exact_joint(target)) > P_VALUE_FLOOR


def test_plain_drafter_samples_the_target(small_vocab):
    """No drafts: every token is the verifier's bonus, drawn from the target's distribution."""
    target, _ = small_vocab
    observed, num_accepted = empirical_joint(target, create_drafter("plain", {}))
    assert num_accepted == 0
    assert chi_square_p(observed, exact_joint(target)) > P_VALUE_FLOOR


def _rejection_without_residual(p, candidates, proposals, generator):
    """Wrong on purpose: after a rejection the next candidate and the bonus still use p."""
    for j, (token, q) in enumerate(zip(candidates, proposals)):
        if float(torch.rand((), generator=generator)) < min(1.0, float(p[token]) / float(q[token])):
            return j, p
    return None, p


def test_wrong_acceptance_rule_fails_the_same_test(small_vocab, monkeypatch):
    target, drafter_dir = small_vocab
    monkeypatch.setattr(acceptance, "recursive_rejection", _rejection_without_residual)
    observed, _ = empirical_joint(target, model_drafter(drafter_dir))
    assert chi_square_p(observed, exact_joint(target)) < 1e-6


def test_a_steered_drafter_whose_depth_a_stop_model_decides_is_lossless_in_process_and_through_the_service(
        steered_small_vocab, tmp_path):
    """A drafter whose q moves with the verdict's states (SD² steering), and whose depth a learned stop
    model decides from the drafter's own hidden states (a random decision model, its threshold set so
    that it stops some trees after the first level and lets others reach the second): in process, then
    over gRPC with the batched verifier sending the last rows only. One test for both, as each costs
    thousands of generations: the stop rule lives in the model drafter's session, which the steered
    drafter's is."""
    target, steered_dir = steered_small_vocab
    torch.manual_seed(5)
    net = DecisionModel("mlp", 32)
    for layer in net.layers:
        if isinstance(layer, torch.nn.Linear):  # wide weights: predictions that vary with the state
            torch.nn.init.normal_(layer.weight, std=3.0 / layer.in_features ** 0.5)
    StopModel(net, StopModelFile(variant="mlp", drafter_hidden_size=32)).save(tmp_path / "stop")

    def drafter_at(threshold):
        return create_drafter("steered", {"path": steered_dir, "top_k": 3, "max_depth": 2, "max_nodes": 13,
                                          "proposal_support": 6, "stop_model": tmp_path / "stop",
                                          "stop_threshold": threshold})

    def deep_share(drafter):
        trees = [drafter.start(PROMPT, PARAMS.model_copy(update={"seed": i})).propose(DraftLimit(13, 2))
                 for i in range(40)]
        return sum(max(t.parents) > 0 for t in trees) / len(trees)  # a parent other than the root: depth 2

    shares = {}
    for threshold in (t / 100 for t in range(20, 81)):
        shares[threshold] = deep_share(drafter_at(threshold))
        if 0.2 <= shares[threshold] <= 0.8:
            break
    else:
        pytest.fail(f"no threshold stops some trees and not others: {shares}")
    assert_lossless_in_process_and_through_the_service(target, drafter_at(threshold))
