"""The types that cross the drafter/verifier boundary: a session's opening, a draft tree, a verdict.

A drafter opens a session (`SessionOpen`; the verifier answers `SessionOpened`), then proposes a
`DraftTree` per round; the verifier answers each with a `Verdict`. All are plain data (ints,
floats, strings, bytes, no tensors), so each serialises to one proto message
(`core.verifier_codec`) and can be built and checked without a model.

A session that asks for the target's hidden states (`SessionOpen.states`, a
`core.states.StateRequest`) gets them packed (`core.states.HiddenStates`): with `SessionOpened`,
one row per prefilled token (every prompt token but the last); with each `Verdict`, one row per
processed position on the committed path (the root, then the accepted nodes); with
`StateRequest.last_only`, only the last row of each. A session that asks for none gets `None` in both, and no bytes on the wire.

Vocabulary:
- committed tokens: the prompt and every token the verifier has emitted so far.
- node 0 is the root: the last committed token the target has not processed yet (the previous
  round's bonus token, or the prompt's last token in the first round). It is never "drafted".
- accepted: drafted tokens the verifier keeps, a path from the root down the tree.
- bonus: the one token the verifier adds after the accepted path, drawn from the target itself;
  it is committed and becomes the next tree's root.
- num_emitted = num_accepted + 1 (the bonus), and the acceptance length tau is the mean of
  num_emitted over rounds, bonus included: tau = 1 means no drafted token was ever kept.

A tree the verifier cannot check raises `InvalidTreeError`, a `core.errors.ServiceError` with
code INVALID_ARGUMENT. This module knows nothing about models, caches or which drafter built a
tree. Structural validation lives here; checks that need the verifier's state (vocabulary,
context window, node limit, sampling mode) live in `verifier_service.session`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import Code, ServiceError
from core.sampling import SamplingParams
from core.states import HiddenStates, StateRequest

NO_PARENT = -1
"""Parent index of the root node."""

PROB_SUM_TOLERANCE = 1e-3


class InvalidTreeError(ServiceError):
    """A draft tree the verifier cannot check (INVALID_ARGUMENT). The session is left unchanged.

    The message reads "invalid tree: <detail>"."""

    def __init__(self, detail: str):
        super().__init__(Code.INVALID_ARGUMENT, f"invalid tree: {detail}")
        self.detail = detail

    def __reduce__(self):  # keeps the subclass when pickled (Ray)
        return type(self), (self.detail,)


@dataclass(frozen=True)
class SessionOpen:
    """A drafter's request to open a session.

    prompt_ids: every committed token; the last is the first tree's root. max_new_tokens: what
    the generation may still add, so the verifier reserves no more room than it needs (0:
    unknown, up to the context window).
    """

    prompt_ids: tuple[int, ...]
    sampling: SamplingParams = SamplingParams()
    max_new_tokens: int = 0
    request_id: str = ""
    states: StateRequest | None = None


@dataclass(frozen=True)
class SessionOpened:
    """The verifier's answer to `SessionOpen`: the prompt is prefilled and the session is ready.

    max_tree_nodes: the most nodes the first tree may have (root included; each verdict then sets
    the next tree's, both from the verifier's load); eos_token_ids: the target's
    end-of-sequence tokens; prefill_time_s: how long the prefill took; replica: who answered;
    states: the prefilled tokens' hidden states, when the opening asked for them.
    """

    max_context: int
    max_tree_nodes: int
    eos_token_ids: frozenset[int]
    prefill_time_s: float
    replica: str
    states: HiddenStates | None = None


@dataclass(frozen=True)
class SparseDist:
    """A drafter's exact sampling distribution at one node, over the tokens it could draw.

    Tokens outside `token_ids` have probability 0. Drafters that sample from a truncated support
    (top-k, top-p) send only that support.
    """

    token_ids: tuple[int, ...]
    probs: tuple[float, ...]

    def validate(self) -> None:
        if len(self.token_ids) != len(self.probs):
            raise InvalidTreeError("draft distribution: token_ids and probs differ in length")
        if len(set(self.token_ids)) != len(self.token_ids):
            raise InvalidTreeError("draft distribution: repeated token id")
        if any(not math.isfinite(p) or p < 0 for p in self.probs):
            raise InvalidTreeError("draft distribution: probabilities must be finite and >= 0")
        total = sum(self.probs)
        if abs(total - 1.0) > PROB_SUM_TOLERANCE:
            raise InvalidTreeError(f"draft distribution: probabilities sum to {total:.6f}, not 1")

    def prob_of(self, token_id: int) -> float:
        try:
            return self.probs[self.token_ids.index(token_id)]
        except ValueError:
            return 0.0


@dataclass(frozen=True)
class DraftTree:
    """Drafted tokens with parent links; a chain is the one-branch case.

    tokens[0] is the root. parents[i] < i for every i > 0 and parents[0] == NO_PARENT.
    Siblings appear in the order they were drafted: under sampling that is their draw order,
    which the verifier's recursive rejection depends on.

    Under sampling a tree says how its candidates were drawn, one of:
    - `draft_dists[v]`: the distribution q_v the children of node v were drawn from, without
      replacement, in sibling order (None for nodes without children);
    - `deterministic=True`: every candidate is a point mass (an n-gram lookup, say).
    Greedy verification needs neither.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    draft_dists: tuple[SparseDist | None, ...] | None = None
    deterministic: bool = False

    @property
    def num_nodes(self) -> int:
        return len(self.tokens)

    @property
    def num_drafted(self) -> int:
        return len(self.tokens) - 1

    @staticmethod
    def root_only(root_token: int) -> "DraftTree":
        """The tree of plain target decoding: no drafted tokens."""
        return DraftTree(tokens=(root_token,), parents=(NO_PARENT,), deterministic=True)

    @staticmethod
    def chain(root_token: int, drafted: list[int], dists: list[SparseDist] | None = None,
              deterministic: bool = False) -> "DraftTree":
        tokens = (root_token, *drafted)
        parents = (NO_PARENT, *range(len(drafted)))
        draft_dists = None
        if dists is not None:
            draft_dists = tuple(dists[: len(drafted)]) + (None,)
        return DraftTree(tokens, parents, draft_dists, deterministic)

    def children(self) -> list[list[int]]:
        """children()[v] lists node v's children in sibling (draft) order."""
        kids: list[list[int]] = [[] for _ in self.tokens]
        for i in range(1, len(self.parents)):
            kids[self.parents[i]].append(i)
        return kids

    def validate_structure(self) -> None:
        """Checks everything that needs no verifier state; raises InvalidTreeError."""
        n = len(self.tokens)
        if n == 0:
            raise InvalidTreeError("tree is empty: it needs at least the root")
        if len(self.parents) != n:
            raise InvalidTreeError(f"tree has {n} tokens but {len(self.parents)} parents")
        if self.parents[0] != NO_PARENT:
            raise InvalidTreeError(f"node 0 is the root: its parent must be {NO_PARENT}")
        for i in range(1, n):
            parent = self.parents[i]
            if not 0 <= parent < n:
                raise InvalidTreeError(f"node {i}: parent {parent} is out of range [0, {n})")
            if parent >= i:
                raise InvalidTreeError(f"node {i}: parent {parent} must come before its child")
        for v, kids in enumerate(self.children()):
            kid_tokens = [self.tokens[c] for c in kids]
            if len(set(kid_tokens)) != len(kid_tokens):
                raise InvalidTreeError(f"node {v}: two children carry the same token")
        if self.draft_dists is not None:
            if len(self.draft_dists) != n:
                raise InvalidTreeError(f"tree has {n} nodes but {len(self.draft_dists)} draft distributions")
            for dist in self.draft_dists:
                if dist is not None:
                    dist.validate()

    def validate_sampling(self) -> None:
        """Checks that every candidate's proposal is known, as lossless sampling requires."""
        if self.deterministic:
            return
        kids = self.children()
        for v, children in enumerate(kids):
            if not children:
                continue
            dist = None if self.draft_dists is None else self.draft_dists[v]
            if dist is None:
                raise InvalidTreeError(
                    f"node {v} has children but no draft distribution: sampling needs q for every "
                    "expanded node (or a deterministic tree)")
            for c in children:
                if dist.prob_of(self.tokens[c]) <= 0.0:
                    raise InvalidTreeError(
                        f"node {c}: token {self.tokens[c]} has probability 0 under its parent's draft "
                        "distribution, so it cannot have been drawn from it")


@dataclass(frozen=True)
class Verdict:
    """What the verifier decided about one tree.

    accepted_nodes: tree indices of the accepted drafted nodes, root excluded, root to leaf.
    accepted_tokens: their tokens. bonus_token: the token after them; it is committed, and it is
    the next tree's root. num_emitted counts the bonus. states: the target's hidden states of the
    root and the accepted nodes (num_accepted + 1 rows; 1 with `StateRequest.last_only`), when the
    session asked for them.
    """

    accepted_nodes: tuple[int, ...]
    accepted_tokens: tuple[int, ...]
    bonus_token: int
    num_drafted: int
    verify_time_s: float = 0.0
    states: HiddenStates | None = None

    @property
    def num_accepted(self) -> int:
        return len(self.accepted_tokens)

    @property
    def num_emitted(self) -> int:
        return self.num_accepted + 1

    @property
    def emitted_tokens(self) -> tuple[int, ...]:
        return (*self.accepted_tokens, self.bonus_token)
