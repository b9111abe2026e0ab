import torch

from core.contracts import NO_PARENT
from core.tree_mask import (ancestor_matrix, is_chain, tree_attention_mask, tree_depths,
                                        tree_position_ids)

#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
PARENTS = [NO_PARENT, 0, 0, 1, 1, 2]


def test_ancestor_rows_are_parent_row_plus_self():
    rows = ancestor_matrix(PARENTS)
    expected = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 1, 4}, 5: {0, 2, 5}}
    for i, ancestors in expected.items():
        assert set(torch.nonzero(rows[i]).flatten().tolist()) == ancestors


def test_depths_and_positions():
    assert tree_depths(PARENTS) == [0, 1, 1, 2, 2, 2]
    assert tree_position_ids(PARENTS, prefix_len=10).tolist() == [[10, 11, 11, 12, 12, 12]]


def test_mask_sees_whole_prefix_and_only_ancestors():
    mask = tree_attention_mask(PARENTS, prefix_len=3)
    assert mask.shape == (1, 1, 6, 9)
    allowed = mask[0, 0] == 0
    assert allowed[:, :3].all()
    assert allowed[:, 3:].equal(ancestor_matrix(PARENTS))
    assert (mask[0, 0][~allowed] == torch.finfo(torch.float32).min).all()


def test_chain_detection():
    assert is_chain([NO_PARENT, 0, 1, 2])
    assert is_chain([NO_PARENT])
    assert not is_chain(PARENTS)
