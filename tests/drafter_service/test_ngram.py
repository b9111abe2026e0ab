"""Tests for the `ngram` (prompt lookup) drafter: no models, integer token ids only."""

import pytest
from pydantic import ValidationError

from drafter_service.base import DraftLimit
from drafter_service.ngram import NgramDrafter
from core.contracts import NO_PARENT, DraftTree, Verdict
from core.sampling import SamplingParams

GREEDY = SamplingParams()
WIDE = DraftLimit(max_nodes=64, max_depth=16)


def make_session(prompt: list[int], **config):
    return NgramDrafter(NgramDrafter.Config(**config)).start(prompt, GREEDY)


def paths(tree: DraftTree) -> set[tuple[int, ...]]:
    """Every root-to-leaf path's drafted tokens (root excluded)."""
    kids = tree.children()
    found = set()

    def walk(node: int, prefix: tuple[int, ...]) -> None:
        if not kids[node]:
            found.add(prefix)
        for child in kids[node]:
            walk(child, prefix + (tree.tokens[child],))

    walk(0, ())
    return found


def depth_of(tree: DraftTree, node: int) -> int:
    depth = 0
    while tree.parents[node] != NO_PARENT:
        node, depth = tree.parents[node], depth + 1
    return depth


def test_repeated_pattern_gives_the_continuation_as_a_chain():
    session = make_session([1, 2, 3, 4, 5, 6, 9, 1, 2, 3], max_depth=3)
    tree = session.propose(WIDE)
    tree.validate_structure()
    assert tree == DraftTree.chain(3, [4, 5, 6], deterministic=True)


def test_several_matches_give_a_trie_with_distinct_siblings():
    # "7" was followed by 1 2, by 1 3 and by 5 5: the shared 1 becomes one node.
    session = make_session([7, 1, 2, 0, 7, 1, 3, 0, 7, 5, 5, 0, 7], max_ngram=1, max_depth=2)
    tree = session.propose(WIDE)
    tree.validate_structure()
    assert tree.deterministic
    assert tree.tokens[0] == 7
    assert paths(tree) == {(1, 2), (1, 3), (5, 5)}
    assert tree.num_nodes == 1 + 5
    assert [tree.tokens[c] for c in tree.children()[0]] == [5, 1]  # most recent first


def test_num_branches_caps_distinct_continuations():
    session = make_session([7, 1, 0, 7, 2, 0, 7, 3, 0, 7, 4, 0, 7], max_ngram=1, max_depth=1,
                           num_branches=2)
    tree = session.propose(WIDE)
    assert paths(tree) == {(4,), (3,)}


def test_longer_ngrams_take_priority():
    # The 2-gram (5, 7) was followed by 8; the more recent 1-gram 7 by 9.
    session = make_session([5, 7, 8, 0, 7, 9, 0, 5, 7], max_ngram=2, max_depth=1, num_branches=1)
    assert session.propose(WIDE).tokens == (7, 8)
    session = make_session([5, 7, 8, 0, 7, 9, 0, 5, 7], max_ngram=2, max_depth=1, num_branches=2)
    tree = session.propose(WIDE)
    assert [tree.tokens[c] for c in tree.children()[0]] == [8, 9]


def test_no_match_gives_root_only():
    session = make_session([1, 2, 3, 4])
    assert session.propose(WIDE) == DraftTree.root_only(4)
    assert make_session([5]).propose(WIDE) == DraftTree.root_only(5)


@pytest.mark.parametrize("limit", [DraftLimit(max_nodes=1, max_depth=8), DraftLimit(max_nodes=8, max_depth=0)])
def test_a_limit_without_room_gives_root_only(limit):
    session = make_session([1, 2, 3, 1, 2, 3, 1, 2])
    assert session.propose(limit) == DraftTree.root_only(2)


@pytest.mark.parametrize("max_nodes", [2, 3, 4, 5, 7, 10])
@pytest.mark.parametrize("max_depth", [1, 2, 3, 8])
def test_limits_are_respected_and_the_tree_stays_valid(max_nodes, max_depth):
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7, 9, 5, 3]
    session = make_session(prompt, max_ngram=2, num_branches=6)
    tree = session.propose(DraftLimit(max_nodes=max_nodes, max_depth=max_depth))
    tree.validate_structure()
    assert tree.deterministic
    assert tree.tokens[0] == 3
    assert 1 < tree.num_nodes <= max_nodes
    assert max(depth_of(tree, i) for i in range(tree.num_nodes)) <= max_depth


def test_config_max_depth_caps_the_continuation():
    session = make_session(list(range(10)) + [0], max_depth=4)
    assert session.propose(WIDE) == DraftTree.chain(0, [1, 2, 3, 4], deterministic=True)


def test_observe_indexes_generated_tokens():
    session = make_session([1, 2, 3])
    assert session.propose(WIDE) == DraftTree.root_only(3)
    session.observe(Verdict(accepted_nodes=(), accepted_tokens=(), bonus_token=40, num_drafted=0))
    session.observe(Verdict(accepted_nodes=(1,), accepted_tokens=(41,), bonus_token=3, num_drafted=1))
    assert session.context == [1, 2, 3, 40, 41, 3]
    tree = session.propose(WIDE)
    tree.validate_structure()
    assert paths(tree) == {(40, 41, 3)}


def test_a_long_context_is_handled():
    prompt = list(range(1000)) * 5 + [10]
    session = make_session(prompt, max_depth=5)
    assert session.propose(WIDE) == DraftTree.chain(10, [11, 12, 13, 14, 15], deterministic=True)


def test_config_rejects_min_ngram_above_max_ngram():
    with pytest.raises(ValidationError):
        NgramDrafter.Config(min_ngram=3, max_ngram=2)
    with pytest.raises(ValidationError):
        NgramDrafter.Config(num_branches=0)
    with pytest.raises(ValidationError):
        NgramDrafter.Config(unknown_field=1)


def test_registry_creates_the_ngram_drafter():
    from drafter_service.base import create_drafter

    drafter = create_drafter("ngram", {})
    assert isinstance(drafter, NgramDrafter)
    assert drafter.name == "ngram"
    assert drafter.config == NgramDrafter.Config()
