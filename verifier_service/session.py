"""One generation's verifier state: the committed tokens, the target's KV cache, the seeded RNG.

The prompt is prefilled once, all but its last token: that token is the first tree's root, so
the first round, like every other, processes the root and returns what follows it. Plain target
decoding is the same `verify` with a root-only tree, so the baseline and speculation share
every line of this path.

`verify(tree)` = `check(tree)`, one `forward_tree`, `accept(tree, logits)`. `SessionState` holds
what does not depend on where the KV cache lives (committed tokens, RNG, `check`, `walk`,
`commit`), so the batched verifier (`verifier_service.batching`), which keeps many sessions'
caches in one pool, shares every check and the acceptance math with this one.

Invariant: the cache holds exactly committed[:-1]; committed[-1] (the root, the last bonus) is
not in the cache yet. A tree that fails `check` leaves the session unchanged.

A session opened with a `core.states.StateRequest` returns the target's hidden states of those
layers: the prefill's rows in `prefill_states`, and each verdict's rows (the root and the accepted
nodes) in `Verdict.states`; with `last_only`, only the last row of each. Without one, no state is
read or copied.

A bad prompt raises `InvalidPromptError` (`ContextOverflowError` when it is too long for the
context window) and a tree that fails `check` raises `core.contracts.InvalidTreeError`: both
are `core.errors.ServiceError`s with code INVALID_ARGUMENT.

This module knows nothing about which drafter built a tree or how tokens are detokenised.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

import torch

from verifier_service.acceptance import WalkResult, greedy_walk, sample_walk
from core.contracts import NO_PARENT, DraftTree, InvalidTreeError, Verdict
from core.errors import Code, ServiceError
from core.kv_cache import keep_tree_nodes, truncate
from core.sampling import SamplingParams, processed_probs
from core.states import HiddenStates, StateRequest
from verifier_service.target import TargetModel
from core.tree_mask import tree_depths

DEFAULT_MAX_TREE_NODES = 64


class InvalidPromptError(ServiceError):
    """A prompt the verifier cannot open a session with (INVALID_ARGUMENT)."""

    def __init__(self, message: str):
        super().__init__(Code.INVALID_ARGUMENT, message)

    def __reduce__(self):  # keeps the subclass when pickled (Ray)
        return type(self), (self.message,)


class ContextOverflowError(InvalidPromptError):
    """The prompt does not fit the target's context window."""


class SessionState:
    """What any verifier keeps per generation, whatever holds its KV cache: the committed tokens,
    the sampling settings and seeded RNG, the tree checks and the acceptance walk."""

    def __init__(self, target: TargetModel, prompt_ids: list[int], sampling: SamplingParams,
                 max_tree_nodes: int = DEFAULT_MAX_TREE_NODES, states: StateRequest | None = None):
        if not prompt_ids:
            raise InvalidPromptError("the prompt is empty: it needs at least one token")
        if len(prompt_ids) > target.max_context:
            raise ContextOverflowError(
                f"the prompt has {len(prompt_ids)} tokens; the target's context holds {target.max_context}")
        bad = [t for t in prompt_ids if not 0 <= t < target.vocab_size]
        if bad:
            raise InvalidPromptError(f"prompt token id {bad[0]} is outside the vocabulary [0, {target.vocab_size})")
        if max_tree_nodes < 1:
            raise ValueError("max_tree_nodes must be >= 1")
        self.target = target
        self.sampling = sampling
        self.state_request = states
        self.state_layers: tuple[int, ...] | None = states.resolve(target.num_layers) if states else None
        self.prefill_states: HiddenStates | None = None  # set once the prompt is prefilled, if asked for
        self.max_tree_nodes = max_tree_nodes
        self.committed: list[int] = list(prompt_ids)
        self.rounds = 0  # trees committed
        self.generator = torch.Generator().manual_seed(
            sampling.seed if sampling.seed is not None else random.getrandbits(63))

    @property
    def prefix_len(self) -> int:
        """Tokens in the cache: every committed token but the root."""
        return len(self.committed) - 1

    @property
    def root(self) -> int:
        return self.committed[-1]

    @property
    def can_continue(self) -> bool:
        """False once the root's own position is beyond the context window."""
        return self.prefix_len < self.target.max_context

    @property
    def max_draft_depth(self) -> int:
        """Deepest drafted level that still fits the context window (0: root only)."""
        return max(0, self.target.max_context - 1 - self.prefix_len)

    def check(self, tree: DraftTree) -> None:
        """Raises InvalidTreeError if the tree cannot be verified against this session."""
        tree.validate_structure()
        if tree.num_nodes > self.max_tree_nodes:
            raise InvalidTreeError(f"tree has {tree.num_nodes} nodes; the limit is {self.max_tree_nodes}")
        if tree.tokens[0] != self.root:
            raise InvalidTreeError(
                f"tree root is token {tree.tokens[0]}, but the last committed token is {self.root}")
        bad = [t for t in tree.tokens if not 0 <= t < self.target.vocab_size]
        if bad:
            raise InvalidTreeError(f"token id {bad[0]} is outside the vocabulary [0, {self.target.vocab_size})")
        if tree.draft_dists is not None:
            for dist in tree.draft_dists:
                if dist is not None and any(not 0 <= t < self.target.vocab_size for t in dist.token_ids):
                    raise InvalidTreeError("a draft distribution names a token outside the vocabulary")
        if not self.can_continue:
            raise InvalidTreeError("the context window is full: nothing more can be verified")
        depth = max(tree_depths(tree.parents))
        if depth > self.max_draft_depth:
            raise InvalidTreeError(
                f"tree is {depth} deep, beyond the context window: at most {self.max_draft_depth} levels fit")
        if not self.sampling.greedy:
            tree.validate_sampling()

    def walk(self, tree: DraftTree, logits: torch.Tensor) -> WalkResult:
        """The acceptance walk over the tree's logits [n, V] (pure: the session is unchanged)."""
        if self.sampling.greedy:
            return greedy_walk(tree, logits.argmax(-1).tolist())
        return sample_walk(tree, processed_probs(logits, self.sampling), self.generator)

    def commit(self, tree: DraftTree, walk: WalkResult, states: torch.Tensor | None = None) -> Verdict:
        """Appends the accepted path and the bonus token to the committed tokens. `states`: the tree's
        hidden states [n, layers, H] when the session asked for them; the verdict carries the rows of
        the root and the accepted nodes (`last_only`: the last of them)."""
        accepted_tokens = tuple(tree.tokens[i] for i in walk.accepted_nodes)
        self.committed.extend((*accepted_tokens, walk.bonus_token))
        self.rounds += 1
        packed = None
        if states is not None and self.state_request is not None:
            rows = self.state_request.last_rows([0, *walk.accepted_nodes])
            packed = HiddenStates.pack(states[rows], self.state_request.dtype)
        return Verdict(walk.accepted_nodes, accepted_tokens, walk.bonus_token, tree.num_drafted, states=packed)

    def pack_prefill(self, states: torch.Tensor) -> None:
        """Adds prefilled rows [n, layers, H] to `prefill_states` (a prompt may prefill in chunks, in
        order). With `last_only` a chunk's last row replaces what is there, so the whole prefill
        leaves its own last row."""
        if self.state_request.last_only:
            if len(states):
                self.prefill_states = HiddenStates.pack(states[-1:], self.state_request.dtype)
            return
        packed = HiddenStates.pack(states, self.state_request.dtype)
        self.prefill_states = packed if self.prefill_states is None else self.prefill_states.concat(packed)


class VerifierSession(SessionState):
    """A session whose KV cache is its own HF `DynamicCache`: one generation, one forward at a time.
    (`verifier_service.batching` keeps many sessions' caches in one pool instead.)"""

    def __init__(self, target: TargetModel, prompt_ids: list[int], sampling: SamplingParams,
                 max_tree_nodes: int = DEFAULT_MAX_TREE_NODES, states: StateRequest | None = None):
        super().__init__(target, prompt_ids, sampling, max_tree_nodes, states)
        self.cache = target.new_cache()
        prefill = self.committed[:-1]
        if self.state_layers is not None:
            self.prefill_states = HiddenStates.empty(len(self.state_layers), target.hidden_size, states.dtype)
        if prefill:
            logits, hidden = self._forward(prefill, [NO_PARENT, *range(len(prefill) - 1)])
            if hidden is not None:
                self.pack_prefill(hidden)

    def _forward(self, tokens, parents) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [n, V], and the hidden states [n, layers, H] when the session asked for them."""
        if self.state_layers is None:
            return self.target.forward_tree(tokens, parents, self.cache), None
        return self.target.forward_tree_states(tokens, parents, self.cache, self.state_layers)

    def verify(self, tree: DraftTree) -> Verdict:
        """One round: check, one target forward over all nodes, acceptance walk, commit."""
        self.check(tree)
        start = time.perf_counter()
        prefix_len = self.prefix_len
        try:
            logits, hidden = self._forward(tree.tokens, tree.parents)  # [n, V], [n, layers, H] or None
        except BaseException:
            truncate(self.cache, prefix_len)  # a forward that failed part-way may have appended
            raise
        return replace(self.accept(tree, logits, hidden), verify_time_s=time.perf_counter() - start)

    def decode_step(self) -> Verdict:
        """Plain target decoding: one token, through the same path as speculation."""
        return self.verify(DraftTree.root_only(self.root))

    def accept(self, tree: DraftTree, logits: torch.Tensor, states: torch.Tensor | None = None) -> Verdict:
        """Acceptance walk over logits [n, V] of a checked tree whose nodes were just appended to
        the cache; keeps the accepted path's cache entries and commits path and bonus (`states`:
        the tree's hidden states, when the session asked for them)."""
        prefix_len = self.prefix_len
        try:
            walk = self.walk(tree, logits)
        except BaseException:
            truncate(self.cache, prefix_len)
            raise
        keep_tree_nodes(self.cache, prefix_len, [0, *walk.accepted_nodes])
        return self.commit(tree, walk, states)
