"""The verifier session: tree forwards, cache commits, invalid trees, the context window."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.contracts import NO_PARENT, DraftTree, InvalidTreeError, SparseDist
from core.sampling import SamplingParams
from core.errors import Code
from verifier_service.session import ContextOverflowError, InvalidPromptError, VerifierSession

GREEDY = SamplingParams()


@pytest.fixture(scope="module")
def hf_target(tiny_zoo):
    return AutoModelForCausalLM.from_pretrained(tiny_zoo.target).eval()


def fresh_logits(hf_target, ids):
    with torch.no_grad():
        return hf_target(torch.tensor([ids])).logits[0, -1]


def test_cache_commit_equals_recompute(target, hf_target):
    """After committing a branchy tree's accepted path, the next logits equal a fresh forward."""
    prompt = [5, 17, 33, 2, 9, 41]
    session = VerifierSession(target, prompt, GREEDY)
    for round_ in range(6):
        greedy_next = int(fresh_logits(hf_target, session.committed).argmax())
        decoy = (greedy_next + 1) % target.vocab_size
        # Root with two children: a decoy first, then the target's own next token with a chain
        # under it, so the accepted path sits at non-contiguous node indices.
        tree = DraftTree(tokens=(session.root, decoy, greedy_next, 7, 3),
                         parents=(NO_PARENT, 0, 0, 1, 2))
        verdict = session.verify(tree)
        assert verdict.accepted_nodes[0] == 2
        assert session.cache.get_seq_length() == len(session.committed) - 1
        check = session.verify(DraftTree.root_only(session.root))
        expected = int(fresh_logits(hf_target, session.committed[:-1]).argmax())
        assert check.bonus_token == expected, f"round {round_}"


def test_cache_entries_match_recompute(target, hf_target):
    session = VerifierSession(target, [3, 1, 4, 1, 5], GREEDY)
    tree = DraftTree(tokens=(session.root, 8, 9, 2, 6), parents=(NO_PARENT, 0, 0, 2, 3))
    session.verify(tree)
    with torch.no_grad():
        cache = copy.deepcopy(session.cache)
        logits = hf_target(torch.tensor([[session.root]]), past_key_values=cache,
                           position_ids=torch.tensor([[session.prefix_len]])).logits[0, -1]
    assert torch.allclose(logits, fresh_logits(hf_target, session.committed), atol=1e-4)


def test_plain_decoding_matches_hf_generate(target, hf_target):
    prompt = [12, 7, 99, 3]
    session = VerifierSession(target, prompt, GREEDY)
    ours = [session.decode_step().bonus_token for _ in range(12)]
    ref = hf_target.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                             pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
    assert ours == ref


def snapshot(session):
    return (list(session.committed), session.cache.get_seq_length(),
            session.cache.layers[0].keys.clone(), session.generator.get_state().clone())


def assert_unchanged(session, before):
    after = snapshot(session)
    assert after[0] == before[0] and after[1] == before[1]
    assert torch.equal(after[2], before[2]) and torch.equal(after[3], before[3])


def invalid_trees(session, vocab):
    root = session.root
    dist = SparseDist((1, 2), (0.5, 0.5))
    return {
        "parent out of range": DraftTree((root, 1, 2), (NO_PARENT, 0, 7)),
        "parent not before child": DraftTree((root, 1, 2), (NO_PARENT, 2, 0)),
        "root with a parent": DraftTree((root, 1), (0, 0)),
        "token outside vocabulary": DraftTree((root, vocab + 3), (NO_PARENT, 0)),
        "negative token": DraftTree((root, -1), (NO_PARENT, 0)),
        "too many nodes": DraftTree.chain(root, [1] * 20),
        "wrong root": DraftTree((root + 1, 1), (NO_PARENT, 0)),
        "duplicate siblings": DraftTree((root, 4, 4), (NO_PARENT, 0, 0)),
        "parents and tokens differ": DraftTree((root, 1, 2), (NO_PARENT, 0)),
        "bad distribution": DraftTree((root, 1), (NO_PARENT, 0), draft_dists=(SparseDist((1,), (0.3,)), None)),
        "child outside its q": DraftTree((root, 3), (NO_PARENT, 0), draft_dists=(dist, None)),
    }


def test_invalid_trees_raise_and_leave_session_unchanged(target):
    session = VerifierSession(target, [1, 2, 3, 4], SamplingParams(temperature=1.0, seed=0), max_tree_nodes=8)
    session.verify(DraftTree.root_only(session.root))
    for name, tree in invalid_trees(session, target.vocab_size).items():
        before = snapshot(session)
        with pytest.raises(InvalidTreeError):
            session.verify(tree)
        assert_unchanged(session, before), name


def test_sampling_needs_draft_probabilities(target):
    session = VerifierSession(target, [1, 2, 3], SamplingParams(temperature=0.7, seed=1))
    before = snapshot(session)
    with pytest.raises(InvalidTreeError, match="draft distribution"):
        session.verify(DraftTree((session.root, 5, 6), (NO_PARENT, 0, 0)))
    assert_unchanged(session, before)
    # The same tree is fine greedily, and as deterministic candidates under sampling.
    session.verify(DraftTree((session.root, 5, 6), (NO_PARENT, 0, 0), deterministic=True))


def test_tree_beyond_context_window(target, tiny_zoo):
    prompt = [1] * (tiny_zoo.max_positions - 3)
    session = VerifierSession(target, prompt, GREEDY)
    # The root sits at position max - 4, so drafted levels 1..3 fit and a fourth does not.
    assert session.max_draft_depth == 3
    before = snapshot(session)
    with pytest.raises(InvalidTreeError, match="context window"):
        session.verify(DraftTree.chain(session.root, [4, 5, 6, 7]))
    assert_unchanged(session, before)
    session.verify(DraftTree.chain(session.root, [4, 5, 6]))


def test_prompt_at_context_limit(target, tiny_zoo, hf_target):
    prompt = [(7 * i) % 50 + 1 for i in range(tiny_zoo.max_positions)]
    session = VerifierSession(target, prompt, GREEDY)
    assert session.max_draft_depth == 0
    verdict = session.verify(DraftTree.root_only(session.root))
    assert verdict.bonus_token == int(fresh_logits(hf_target, prompt).argmax())
    assert not session.can_continue
    with pytest.raises(InvalidTreeError, match="context window is full"):
        session.verify(DraftTree.root_only(session.root))


def test_prompt_beyond_context_and_empty_prompt(target, tiny_zoo):
    with pytest.raises(ContextOverflowError):
        VerifierSession(target, [1] * (tiny_zoo.max_positions + 1), GREEDY)
    with pytest.raises(InvalidPromptError, match="empty") as err:
        VerifierSession(target, [], GREEDY)
    assert err.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(InvalidPromptError, match="vocabulary"):
        VerifierSession(target, [target.vocab_size], GREEDY)
