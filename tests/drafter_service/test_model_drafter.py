"""The model drafter: tree shapes and limits, exact q under sampling, cache rollback."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from drafter_service.base import DraftLimit, create_drafter
from core.contracts import Verdict
from core.sampling import SamplingParams
from verifier_service.session import VerifierSession
from core.tree_mask import tree_depths

GREEDY = SamplingParams()
SAMPLED = SamplingParams(temperature=0.8, top_k=50, seed=5)
PROMPT = [10, 20, 30, 40, 50, 60]
WIDE = DraftLimit(max_nodes=64, max_depth=16)


def drafter(path, **tree):
    return create_drafter("model", {"path": path, "budget": {"adaptive": False}, **tree})


@pytest.mark.parametrize("family", ["llama_drafter", "gpt2_drafter"])
def test_tree_respects_config_and_limits(tiny_zoo, family):
    d = drafter(getattr(tiny_zoo, family), top_k=3, max_depth=4, max_nodes=10)
    session = d.start(PROMPT, GREEDY)
    tree = session.propose(WIDE)
    tree.validate_structure()
    assert tree.tokens[0] == PROMPT[-1]
    assert tree.num_nodes == 10 and max(tree_depths(tree.parents)) <= 4
    session.observe(Verdict((), (), 7, tree.num_drafted))
    small = session.propose(DraftLimit(max_nodes=3, max_depth=1))
    assert small.num_nodes <= 3 and max(tree_depths(small.parents)) <= 1


def test_top_k_one_drafts_a_chain(tiny_zoo):
    tree = drafter(tiny_zoo.llama_drafter, top_k=1, max_depth=5, max_nodes=6).start(PROMPT, GREEDY).propose(WIDE)
    assert tree.parents == (-1, 0, 1, 2, 3, 4)


def test_greedy_tree_prefers_likely_nodes(tiny_zoo):
    """Under greedy, the first child of the root is the drafter's own argmax."""
    model = AutoModelForCausalLM.from_pretrained(tiny_zoo.llama_drafter).eval()
    with torch.no_grad():
        best = int(model(torch.tensor([PROMPT])).logits[0, -1].argmax())
    tree = drafter(tiny_zoo.llama_drafter).start(PROMPT, GREEDY).propose(WIDE)
    assert tree.tokens[tree.children()[0][0]] == best


def test_sampling_records_exact_q_for_every_expanded_node(tiny_zoo):
    d = drafter(tiny_zoo.llama_drafter, top_k=3, max_depth=3, max_nodes=13, proposal_support=8)
    tree = d.start(PROMPT, SAMPLED).propose(WIDE)
    tree.validate_structure()
    tree.validate_sampling()
    for v, kids in enumerate(tree.children()):
        if kids:
            assert len(kids) == 3, "under sampling a node keeps all its draws"
            assert len(tree.draft_dists[v].token_ids) <= 8


def test_no_drafting_when_limit_forbids(tiny_zoo):
    session = drafter(tiny_zoo.llama_drafter).start(PROMPT, GREEDY)
    assert session.propose(DraftLimit(max_nodes=1, max_depth=5)).num_nodes == 1
    assert session.propose(DraftLimit(max_nodes=8, max_depth=0)).num_nodes == 1


def test_cache_rollback_equals_recompute(tiny_zoo, target):
    """Over many rounds against the real verifier, the drafter's cache always equals a fresh
    forward over the committed tokens it claims to hold."""
    d = drafter(tiny_zoo.llama_drafter, top_k=3, max_depth=4, max_nodes=12)
    session = d.start(PROMPT, GREEDY)
    verifier = VerifierSession(target, PROMPT, GREEDY)
    fresh_model = AutoModelForCausalLM.from_pretrained(tiny_zoo.llama_drafter).eval()
    accepted = 0
    for _ in range(12):
        tree = session.propose(WIDE)
        verdict = verifier.verify(tree)
        session.observe(verdict)
        accepted += verdict.num_accepted
        assert session.context == verifier.committed
        assert session.cache.get_seq_length() == session.num_run
        held = session.context[: session.num_run]
        with torch.no_grad():
            fresh = fresh_model(torch.tensor([held]), use_cache=True).past_key_values
        for ours, ref in zip(session.cache.layers, fresh.layers):
            assert torch.allclose(ours.keys, ref.keys, atol=1e-5)
            assert torch.allclose(ours.values, ref.values, atol=1e-5)
    assert accepted > 0


def test_config_validation(tiny_zoo, tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        create_drafter("model", {"path": tmp_path})
    with pytest.raises(ValueError, match="max_nodes"):
        create_drafter("model", {"path": tiny_zoo.llama_drafter, "top_k": 1, "max_depth": 8, "max_nodes": 4})
    with pytest.raises(ValueError, match="unknown drafter kind"):
        create_drafter("telepathy", {})


def test_unobserved_proposal_is_rolled_back(tiny_zoo, target):
    """A tree the verifier never saw (rejected, abandoned) leaves no trace in the drafter."""
    d = drafter(tiny_zoo.llama_drafter, top_k=3, max_depth=4, max_nodes=12)
    session = d.start(PROMPT, GREEDY)
    verifier = VerifierSession(target, PROMPT, GREEDY)
    session.propose(WIDE)  # abandoned
    for _ in range(4):
        tree = session.propose(WIDE)
        session.observe(verifier.verify(tree))
        assert session.cache.get_seq_length() == session.num_run
    plain = VerifierSession(target, PROMPT, GREEDY)
    expected = [plain.decode_step().bonus_token for _ in range(len(verifier.committed) - len(PROMPT))]
    assert verifier.committed[len(PROMPT):] == expected


def test_close_frees_the_cache(tiny_zoo):
    session = drafter(tiny_zoo.llama_drafter).start(PROMPT, GREEDY)
    session.propose(WIDE)
    session.close()
    assert session.cache.get_seq_length() == 0 and session.num_run == 0
