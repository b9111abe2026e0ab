"""Lossless acceptance of a draft tree: pure functions over probabilities, no model, no I/O.

Words: the root is the tree's node 0, the last committed token. The walk starts at the root and
moves to an *accepted* child (a drafted token the verifier keeps) while it can; where it stops,
it emits one *bonus* token, chosen from the target's distribution at that node (under sampling,
from what the rejected candidates left of it). Emitted per round = accepted + 1, so a round
always makes progress; the mean of it over rounds is the acceptance length tau.

- Greedy (temperature 0): at node v with t = argmax p_v, accept the child carrying t, else stop
  and emit t. The output equals the target's own greedy decoding, token for token.
- Sampling: recursive rejection over the candidates of a node in draft order (MCSD, Yang et al.
  2024; RSD, Jeon et al. 2024; the one-candidate case is Leviathan et al. 2023 / Chen et al.
  2023). Candidate x_j, drawn from proposal q_j, is accepted with probability
  min(1, r(x_j) / q_j(x_j)); on rejection the residual becomes r = norm(max(r - q_j, 0)). The
  token that leaves node v, accepted or bonus, is distributed exactly as p_v for any proposals,
  provided q_j is exactly what x_j was drawn from. Siblings drawn without replacement from q_v
  have q_1 = q_v and q_{j+1} = q_j without x_j, renormalised. A deterministic candidate is a
  point mass.

This module does not know where probabilities come from (temperature, top-k and top-p are
applied before), nor anything about caches or which drafter built the tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.contracts import DraftTree, SparseDist

_RESIDUAL_EPS = 1e-12


@dataclass(frozen=True)
class WalkResult:
    """accepted_nodes: accepted tree nodes, root excluded, in walk order."""

    accepted_nodes: tuple[int, ...]
    bonus_token: int


def greedy_walk(tree: DraftTree, target_argmax: list[int]) -> WalkResult:
    """target_argmax[v] = argmax of the target's distribution after node v."""
    children = tree.children()
    node, path = 0, []
    while True:
        wanted = target_argmax[node]
        match = next((c for c in children[node] if tree.tokens[c] == wanted), None)
        if match is None:
            return WalkResult(tuple(path), wanted)
        path.append(match)
        node = match


def recursive_rejection(p: torch.Tensor, candidates: list[int], proposals: list[torch.Tensor],
                        generator: torch.Generator) -> tuple[int | None, torch.Tensor]:
    """One node's rejection chain.

    p: [V] target distribution; candidates[j] was drawn from proposals[j]: [V].
    Returns (index of the accepted candidate, or None, and the residual to draw the bonus from).
    """
    residual = p
    for j, (token, q) in enumerate(zip(candidates, proposals)):
        q_x = float(q[token])
        accept_prob = min(1.0, float(residual[token]) / q_x) if q_x > 0 else 0.0
        if float(torch.rand((), generator=generator)) < accept_prob:
            return j, residual
        rest = torch.clamp(residual - q, min=0.0)
        mass = float(rest.sum())
        # Mass ~0 means the residual equalled q, so acceptance was certain up to rounding.
        residual = rest / mass if mass > _RESIDUAL_EPS else residual
    return None, residual


def without_replacement_proposals(q: torch.Tensor, candidates: list[int]) -> list[torch.Tensor]:
    """Proposals of candidates drawn in order without replacement from q: [V]."""
    proposals, current = [], q
    for token in candidates:
        proposals.append(current)
        current = current.clone()
        current[token] = 0.0
        mass = float(current.sum())
        current = current / mass if mass > 0 else current
    return proposals


def point_mass_proposals(vocab_size: int, candidates: list[int]) -> list[torch.Tensor]:
    return [torch.nn.functional.one_hot(torch.tensor(t), vocab_size).float() for t in candidates]


def dense(dist: SparseDist, vocab_size: int) -> torch.Tensor:
    q = torch.zeros(vocab_size)
    q[list(dist.token_ids)] = torch.tensor(dist.probs, dtype=torch.float32)
    return q / q.sum()


def sample_walk(tree: DraftTree, target_probs: torch.Tensor, generator: torch.Generator) -> WalkResult:
    """target_probs: [n, V], the processed target distribution after each tree node.

    The tree must have passed DraftTree.validate_sampling().
    """
    vocab_size = target_probs.shape[-1]
    children = tree.children()
    node, path = 0, []
    while True:
        kids = children[node]
        candidates = [tree.tokens[c] for c in kids]
        if tree.deterministic or not kids:
            proposals = point_mass_proposals(vocab_size, candidates)
        else:
            proposals = without_replacement_proposals(dense(tree.draft_dists[node], vocab_size), candidates)
        accepted, residual = recursive_rejection(target_probs[node], candidates, proposals, generator)
        if accepted is None:
            bonus = int(torch.multinomial(residual, 1, generator=generator))
            return WalkResult(tuple(path), bonus)
        node = kids[accepted]
        path.append(node)
