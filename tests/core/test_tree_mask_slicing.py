"""`AncestorRows` (a pre-built ancestor matrix sliced per tree) equals `ancestor_matrix` built per tree."""

import random

import pytest
import torch

from core.contracts import NO_PARENT
from core.tree_mask import AncestorRows, ancestor_matrix, tree_attention_mask


def _random_tree(rng: random.Random, n: int) -> list[int]:
    """Parents before children; deep (any earlier node), bushy (an early node) or a chain."""
    style = rng.choice(("any", "bushy", "chain", "level"))
    parents = [NO_PARENT]
    for i in range(1, n):
        if style == "any":
            parents.append(rng.randrange(i))
        elif style == "bushy":
            parents.append(rng.randrange(max(1, i // 3)))
        elif style == "chain":
            parents.append(i - 1)
        else:  # level-ordered, like a drafted tree: a node's parent is at or after its left sibling's
            parents.append(rng.randrange(parents[-1] if i > 1 else 0, i) if i > 1 else 0)
    return parents


def test_sliced_rows_equal_built_rows_over_a_session_of_random_trees():
    rng = random.Random(1234)
    rows = AncestorRows(48)
    previous: list[int] = [NO_PARENT]
    for _ in range(400):
        n = rng.randint(1, 48)
        if rng.random() < 0.4 and len(previous) > 1:  # share a prefix with the tree before, as rounds do
            keep = rng.randint(1, len(previous))
            parents = previous[:keep] + [rng.randrange(i) for i in range(keep, max(keep, n))]
        else:
            parents = _random_tree(rng, n)
        got = rows.rows(parents)
        assert got.shape == (len(parents), len(parents))
        assert got.equal(ancestor_matrix(parents)), parents
        previous = parents


def test_a_growing_candidate_set_and_a_shrinking_tree_stay_exact():
    rows = AncestorRows(16)
    grown = [NO_PARENT, 0, 0, 0, 1, 1, 1, 2, 2, 2, 4, 4, 4, 5, 5, 5]
    for size in range(1, 17):
        assert rows.rows(grown[:size]).equal(ancestor_matrix(grown[:size]))
    other = [NO_PARENT, 0, 1, 1]  # shares two nodes, then rows past it no longer match `grown`
    assert rows.rows(other).equal(ancestor_matrix(other))
    assert rows.rows(grown).equal(ancestor_matrix(grown))
    chain = [NO_PARENT, *range(15)]
    assert rows.rows(chain).equal(torch.ones(16, 16, dtype=torch.bool).tril())


def test_a_second_root_is_built_as_ancestor_matrix_builds_it():
    forest = [NO_PARENT, 0, 0, NO_PARENT, 3, 3, 3, 3, 4, 4, 4, 5]
    assert AncestorRows(12).rows(forest).equal(ancestor_matrix(forest))


def test_tree_attention_mask_with_pre_built_rows_is_the_same_mask():
    rng = random.Random(7)
    rows = AncestorRows(32)
    for _ in range(50):
        parents = _random_tree(rng, rng.randint(1, 32))
        prefix = rng.randint(0, 20)
        assert tree_attention_mask(parents, prefix, ancestors=rows).equal(tree_attention_mask(parents, prefix))


def test_capacity_is_checked_and_a_larger_tree_grows_the_rows():
    with pytest.raises(ValueError, match="capacity"):
        AncestorRows(0)
    rows = AncestorRows(3)
    small, large = [NO_PARENT, 0, 1], [NO_PARENT, 0, 1, 0, 3, 3, 2]
    assert rows.rows(small).equal(ancestor_matrix(small))
    assert rows.rows(large).equal(ancestor_matrix(large))
    assert rows.capacity >= len(large)
    assert rows.rows(small).equal(ancestor_matrix(small))
