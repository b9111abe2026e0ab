"""Table tests of acceptance: greedy walks, and rejection steps whose outcome is certain."""

import pytest
import torch

from verifier_service.acceptance import (greedy_walk, recursive_rejection, sample_walk,
                                         without_replacement_proposals)
from core.contracts import NO_PARENT, DraftTree, SparseDist

V = 6
#        0 (root, token 5)
#      /   \
#  1 (t1)   2 (t2)
#    |        |
#  3 (t3)   4 (t4)
TREE = DraftTree(tokens=(5, 1, 2, 3, 4), parents=(NO_PARENT, 0, 0, 1, 2))


@pytest.mark.parametrize("argmax, accepted, bonus", [
    ([0, 0, 0, 0, 0], (), 0),          # nothing matches: bonus is the target's choice at the root
    ([1, 0, 0, 0, 0], (1,), 0),        # first branch, stop after one
    ([1, 3, 0, 0, 0], (1, 3), 0),      # whole first branch, bonus after the leaf
    ([2, 0, 4, 0, 3], (2, 4), 3),      # second branch to its leaf
    ([2, 0, 1, 0, 0], (2,), 1),        # second branch, child mismatch
])
def test_greedy_walk_table(argmax, accepted, bonus):
    walk = greedy_walk(TREE, argmax)
    assert walk.accepted_nodes == accepted
    assert walk.bonus_token == bonus


def one_hot(i):
    return torch.nn.functional.one_hot(torch.tensor(i), V).float()


def test_rejection_accepts_certainly_when_target_agrees():
    g = torch.Generator().manual_seed(0)
    accepted, _ = recursive_rejection(one_hot(2), [2], [one_hot(2)], g)
    assert accepted == 0


def test_rejection_moves_to_next_candidate_and_residual():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    q = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    # Candidates 0 and 1 have zero target mass: both rejected; residual is p itself.
    accepted, residual = recursive_rejection(p, [0, 1], without_replacement_proposals(q, [0, 1]), g)
    assert accepted is None
    assert torch.allclose(residual, p)


def test_residual_after_rejection_is_normalised_positive_part():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.0, 0.6, 0.4, 0.0, 0.0, 0.0])
    q = one_hot(0)
    accepted, residual = recursive_rejection(p, [0], [q], g)
    assert accepted is None
    assert torch.allclose(residual, p)


def test_without_replacement_renormalises():
    q = torch.tensor([0.5, 0.25, 0.25, 0.0, 0.0, 0.0])
    proposals = without_replacement_proposals(q, [0, 1])
    assert torch.allclose(proposals[0], q)
    assert torch.allclose(proposals[1], torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0, 0.0]))


def test_sample_walk_is_seeded():
    probs = torch.softmax(torch.randn(5, V, generator=torch.Generator().manual_seed(1)), -1)
    dist = SparseDist(tuple(range(V)), tuple([1 / V] * V))
    tree = DraftTree(TREE.tokens, TREE.parents, draft_dists=(dist, dist, dist, None, None))
    runs = [sample_walk(tree, probs, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert runs[0] == runs[1]


def test_sample_walk_deterministic_candidates_certain_path():
    # The target puts all mass on the first branch's tokens: that path is always accepted.
    probs = torch.stack([one_hot(1), one_hot(3), one_hot(0), one_hot(0), one_hot(0)])
    tree = DraftTree(TREE.tokens, TREE.parents, deterministic=True)
    walk = sample_walk(tree, probs, torch.Generator().manual_seed(0))
    assert walk.accepted_nodes == (1, 3)
    assert walk.bonus_token == 0
