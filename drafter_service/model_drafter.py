"""The `model` drafter: any HF causal LM sharing the target's tokenizer, drafting dynamic trees.

Tree shape (EAGLE-2, Li et al., 2024): a node's score is its cumulative draft log-probability.
Level by level, the `top_k` best-scoring frontier nodes are run through the drafter and each
gets its `top_k` most likely children (under sampling: drawn without replacement by
Gumbel-top-k, whose k largest perturbed keys are k ordered draws from q). After the last level
the best `max_nodes` candidates form the tree. A chain is `top_k = 1`.

Lossless sampling constrains the selection. The verifier's recursive rejection assumes that a
node's children are all its draws, in draw order, and that whether they are in the tree was
decided before they were drawn. Dropping draws afterwards by their values, directly or because
they crowded out a cousin that then used the node budget, would bias the output. So under
sampling the node budget is spent at expansion time: a frontier node is expanded only if its
whole group of children fits, and nothing is dropped after. Greedy verification is lossless for
any tree, so greedy trees expand fully and then keep the best nodes one by one, as EAGLE-2 does.

The drafter has its own KV cache: the committed context, then the tree nodes it ran. After a
verdict it keeps the entries of the accepted nodes it had run (moved next to the context) and
drops the rest; accepted leaves it never ran, and the bonus, are run in the next round, never
any accepted token twice.

Depth adapts (`drafter_service.budget`): a confidence signal (top-token probability under
greedy, AdaEDL's entropy bound under sampling) stops drafting early, and the threshold and the
depth budget follow the observed acceptance. With a `stop_model` (`drafter_service.stopping`), a
learned decision model stops drafting instead: after each level, when no frontier node's
predicted acceptance (times its path's predicted survival, with the `survival` rule) reaches its
threshold. The depth is then bounded by `max_depth` and the verifier's limit only.

Acceptance logs (`drafter_service.acceptance_log`): with a recorder attached to the drafter
(`ModelDrafter.recorder`), every drafted node's features (the drafter's hidden state and q's
entropy and top-10 after its parent) are kept and labelled by the verdict.

Drafting ahead (`draft_ahead`, greedy only): while a remote verifier checks a tree, the session
guesses its verdict, the path to one of the best-scoring leaves accepted and the drafter's own
next token there as the bonus, and drafts the next tree for each guess on a copy of itself
(PEARL, Liu et al., 2024, drafts during verification; here for trees). A guess that comes true is
adopted, so its tree goes out the moment the verdict arrives. How often guesses come true is
measured by the services benchmark (its "drafted ahead" share).

This module knows nothing about the target's weights or cache; it sees verdicts only.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import DynamicCache

from drafter_service.base import DraftLimit, Drafter, DraftSession, Guess, directory_kind, register_drafter
from drafter_service.acceptance_log import AcceptanceRecorder, NodeRow
from drafter_service.budget import BudgetConfig, DraftBudget, draft_confidence
from drafter_service.stopping import CONFIG_FILE as STOP_CONFIG, OPTION as STOP_OPTION, StopModel, q_features
from core.contracts import NO_PARENT, DraftTree, SparseDist, Verdict
from core.kv_cache import keep_tree_nodes, truncate
from core.sampling import SamplingParams, derived_seed, processed_probs
from core.hf import DEFAULT_CONTEXT, HeadInputs, ModelLoadConfig, context_window, forward_tree
from core.tree_mask import AncestorRows, additive_mask


class TreeConfig(BaseModel):
    """The shape of the dynamic trees a model-backed drafter drafts (any kind that reuses this session)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_k: int = Field(4, ge=1, description="Frontier width and children per expanded node; 1 drafts a chain.")
    max_depth: int = Field(6, ge=1, description="Most drafted levels below the root.")
    max_nodes: int = Field(16, ge=2, description="Most nodes in a tree, root included.")
    proposal_support: int = Field(32, ge=1, description="Under sampling, q is truncated to its most likely tokens (exactly; the verifier gets the truncated q).")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Early stop and adaptive depth.")
    draft_ahead: int = Field(0, ge=0, le=8, description="Greedy requests, remote verifier: verdicts guessed per round "
                             "while the tree is verified, each with its next tree drafted meanwhile (0: off).")
    stop_model: Path | None = Field(None, description="A stop model directory (`specroute train-stop`): a decision "
                                    "model that stops drafting in place of the budget's early stop and adaptive depth.")
    stop_rule: Literal["frontier", "survival"] | None = Field(None, description="Overrides the stop model's rule.")
    stop_threshold: float | None = Field(None, ge=0.0, le=1.0, description="Overrides the stop model's threshold.")

    @model_validator(mode="after")
    def _nodes_fit_depth(self) -> "TreeConfig":
        if self.top_k == 1 and self.max_nodes < self.max_depth + 1:
            raise ValueError(f"a chain of depth {self.max_depth} needs max_nodes >= {self.max_depth + 1}")
        return self

    @model_validator(mode="after")
    def _stop_model_exists(self) -> "TreeConfig":
        if self.stop_model is not None and not (self.stop_model / STOP_CONFIG).is_file():
            raise ValueError(f"{STOP_OPTION}: {self.stop_model} is not a stop model directory (no {STOP_CONFIG}; "
                             "`specroute train-stop` writes one)")
        if self.stop_model is None and (self.stop_rule is not None or self.stop_threshold is not None):
            raise ValueError("stop_rule and stop_threshold need a stop_model")
        return self

    def load_stop_model(self, drafter_hidden_size: int) -> StopModel | None:
        """The configured stop model, checked against the drafter's hidden size (None: none set)."""
        if self.stop_model is None:
            return None
        return StopModel.load(self.stop_model, drafter_hidden_size, self.stop_rule, self.stop_threshold)


class ModelDrafterConfig(ModelLoadConfig, TreeConfig):
    """A model drafter: where its weights are, and the shape of the trees it drafts."""

    directory_kind: ClassVar[str | None] = None
    """The kind the directory must record (`drafter_service.base.directory_kind`); None: a plain model."""

    @model_validator(mode="after")
    def _directory_of_this_kind(self) -> "ModelDrafterConfig":
        recorded = directory_kind(self.path)
        if recorded != self.directory_kind:
            raise ValueError(f"{self.path} is a {recorded or 'plain model'} drafter directory; load it as kind "
                             f"{recorded or 'model'!r}, not {self.directory_kind or 'model'!r}")
        return self


@dataclass
class _Candidates:
    """Every node generated while drafting one tree, in generation order (parents first)."""

    tokens: list[int]
    parents: list[int]
    scores: list[float]
    depths: list[int]
    dists: list[SparseDist | None]
    children: list[list[int]] = field(default_factory=list)
    ancestors: AncestorRows = field(default_factory=lambda: AncestorRows(64))
    """The candidates' ancestor matrix, pre-built and sliced as candidates are added (DynaSD's
    sliced mask: only each level's new rows are built)."""

    def add(self, token: int, parent: int, score: float) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.scores.append(score)
        self.depths.append(self.depths[parent] + 1)
        self.dists.append(None)
        self.children.append([])
        self.children[parent].append(len(self.tokens) - 1)
        return len(self.tokens) - 1


@register_drafter("model")
class ModelDrafter(Drafter):
    Config = ModelDrafterConfig

    def __init__(self, config: ModelDrafterConfig):
        self.config = config
        self.model, self.tokenizer = config.load()
        self.vocab_size: int = self.model.get_output_embeddings().weight.shape[0]
        self.max_context: int = context_window(self.model.config) or DEFAULT_CONTEXT
        self.hidden_size: int = self.model.get_output_embeddings().weight.shape[1]
        self.stop: StopModel | None = config.load_stop_model(self.hidden_size)
        self.recorder: AcceptanceRecorder | None = None
        """Where sessions log their drafted nodes' features and verdicts (None: nowhere)."""
        self._head_inputs: HeadInputs | None = None

    def record_to(self, recorder: AcceptanceRecorder | None) -> bool:
        self.recorder = recorder
        return True

    def head_inputs(self) -> HeadInputs:
        """The tap on the model's last hidden state, installed on first use."""
        if self._head_inputs is None:
            self._head_inputs = HeadInputs(self.model.get_output_embeddings())
        return self._head_inputs

    @property
    def name(self) -> str:
        return self.config.path.name

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> "ModelDraftSession":
        return ModelDraftSession(self, prompt_ids, sampling)


class ModelDraftSession(DraftSession):
    def __init__(self, drafter: ModelDrafter, prompt_ids: list[int], sampling: SamplingParams):
        super().__init__(prompt_ids, sampling)
        self.drafter = drafter
        self.config = drafter.config
        self.budget = DraftBudget(self.config.budget, self.config.max_depth)
        self.cache = self._new_cache()
        self.num_run = 0  # context entries already in the cache (`_context_entries`)
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(62)
        # Its own stream, so the drafter's noise is not the verifier's under the same seed.
        self.generator = torch.Generator().manual_seed(derived_seed(seed, "drafter"))
        self._drafted_depth = 0  # levels in the last proposed tree
        self._tree_to_candidate: list[int] = []
        self._run_order: list[int] = []  # candidates in the order their entries follow the context
        self._tree_scores: list[float] = []  # the last tree's nodes' scores, in tree order
        self.max_guesses = self.config.draft_ahead if sampling.greedy else 0
        self.stop: StopModel | None = drafter.stop
        self.recorder: AcceptanceRecorder | None = drafter.recorder
        self._needs_hidden = (self.stop is not None and self.stop.needs_hidden) or self.recorder is not None
        if self._needs_hidden:
            self._install_hidden_tap()
        self._node_inputs: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}  # candidate -> (hidden, q)
        self._predicted: dict[int, float] = {}  # candidate -> p: its expansion predicted to be accepted
        self._survival: dict[int, float] = {0: 1.0}  # candidate -> its predicted survival
        self._pending: list[NodeRow] = []  # the last tree's nodes, for the recorder

    # --- propose -----------------------------------------------------------------------------

    def propose(self, limit: DraftLimit) -> DraftTree:
        root = self.context[-1]
        self._rewind()
        self._drafted_depth, self._tree_to_candidate, self._run_order = 0, [0], []
        depth_budget = self.config.max_depth if self.stop is not None else self.budget.depth
        depth_cap = min(limit.max_depth, depth_budget, self.drafter.max_context - len(self.context))
        node_cap = min(limit.max_nodes, self.config.max_nodes)
        self._pending = []
        if depth_cap <= 0 or node_cap <= 1:
            return DraftTree.root_only(root)

        self._node_inputs, self._predicted, self._survival = {}, {}, {0: 1.0}
        logits = self._run_context()
        cands = _Candidates(tokens=[root], parents=[NO_PARENT], scores=[0.0], depths=[0], dists=[None],
                            children=[[]])
        frontier = [0]
        probs = self._scoring_probs(logits[-1:])  # [len(frontier), V]
        self._note(cands, frontier, probs)
        for depth in range(1, depth_cap + 1):
            self._expand(cands, frontier, probs, node_cap)
            if depth == depth_cap or (not self.sampling.greedy and len(cands.tokens) >= node_cap):
                break
            level = [i for i in range(len(cands.tokens)) if cands.depths[i] == depth]
            if not level:  # no group of children fitted the node cap (sampling), or q underflowed
                break
            frontier = sorted(level, key=lambda i: -cands.scores[i])[: self.config.top_k]
            probs = self._scoring_probs(self._run_nodes(cands, frontier))
            if self._note(cands, frontier, probs):
                break
        return self._select(cands, node_cap)

    def _note(self, cands: _Candidates, frontier: list[int], probs: torch.Tensor) -> bool:
        """Keeps the frontier's features (for the stop model and the recorder) and says whether to
        stop drafting: the stop model's rule, else the budget's early stop on the best node."""
        if self.stop is not None or self.recorder is not None:
            q = q_features(probs)
            hidden = self._hidden_of(frontier) if self._needs_hidden else None
            for row, node in enumerate(frontier):
                self._node_inputs[node] = (None if hidden is None else hidden[row], q[row])
        if self.stop is None:
            return self.budget.should_stop(draft_confidence(probs[0], self.sampling.greedy,
                                                            self.config.budget.entropy_gamma))
        predicted = self.stop.predict(hidden, q)
        survival = []
        for node, p in zip(frontier, predicted.tolist()):
            if node not in self._survival:
                parent = cands.parents[node]
                self._survival[node] = self._survival[parent] * self._predicted[parent]
            self._predicted[node] = p
            survival.append(self._survival[node])
        return self.stop.should_stop(predicted, torch.tensor(survival))

    def _install_hidden_tap(self) -> None:
        self.drafter.head_inputs()

    def _hidden_of(self, nodes: list[int]) -> torch.Tensor:
        """The drafter's last hidden states [len(nodes), H] of the nodes its last forward ran
        (the context's last token is the root, candidate 0)."""
        return self.drafter.head_inputs().last()[-len(nodes):]

    def _scoring_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution scores and entropies are read from: q itself under sampling."""
        if self.sampling.greedy:
            return torch.softmax(logits.float(), dim=-1)
        return processed_probs(logits, self.sampling)

    def _expand(self, cands: _Candidates, frontier: list[int], probs: torch.Tensor, node_cap: int) -> None:
        """Gives frontier nodes their children, best first. probs: `_scoring_probs`, [len(frontier), V].

        Under sampling a node is expanded only if its whole group fits node_cap (module doc).
        """
        k = self.config.top_k
        for row, node in enumerate(frontier):
            if self.sampling.greedy:
                top = torch.topk(probs[row], k)
                tokens, child_probs = top.indices.tolist(), top.values.tolist()
            else:
                dist = _truncate(probs[row], self.config.proposal_support)
                if len(cands.tokens) + min(k, len(dist.token_ids)) > node_cap:
                    return
                cands.dists[node] = dist
                tokens = _gumbel_top_k(dist, k, self.generator)
                child_probs = [dist.prob_of(t) for t in tokens]
            for token, p in zip(tokens, child_probs):
                if p > 0.0:
                    cands.add(token, node, cands.scores[node] + math.log(p))

    def _run_nodes(self, cands: _Candidates, nodes: list[int]) -> torch.Tensor:
        """Runs candidate nodes through the drafter on top of the context and the nodes run
        before them; returns their logits [len(nodes), V]."""
        if not nodes:
            raise ValueError("no nodes to run: the caller must stop drafting at an empty level")
        cached = self._context_entries()
        known = self._run_order + nodes
        allowed = cands.ancestors.rows(cands.parents)
        mask_rows = torch.ones(len(nodes), cached + len(known), dtype=torch.bool)
        mask_rows[:, cached:] = allowed[torch.tensor(nodes)][:, torch.tensor(known)]
        positions = [len(self.context) - 1 + cands.depths[i] for i in nodes]
        logits = self._forward_nodes(cands, nodes, mask_rows, positions)
        self._run_order = known
        return logits

    # --- what a subclass with another model changes ------------------------------------------

    keeps_node_entries = True
    """Whether the cache entries of accepted nodes are kept after a verdict (False: the context
    is run again from the committed tokens, as a drafter that reads the target's states must)."""

    def _new_cache(self):
        return DynamicCache(config=self.drafter.model.config)

    def _context_entries(self) -> int:
        """Cache entries the whole context takes: one per token."""
        return len(self.context)

    def _forward_nodes(self, cands: _Candidates, nodes: list[int], mask_rows: torch.Tensor,
                       positions: list[int]) -> torch.Tensor:
        """One forward of `nodes` on top of the cache; mask_rows [n, cached + run nodes] (True: attend)."""
        model = self.drafter.model
        mask = additive_mask(mask_rows, model.dtype)  # [1, 1, len(nodes), context + run nodes]
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[cands.tokens[i] for i in nodes]], device=model.device),
                        attention_mask=mask.to(model.device), position_ids=torch.tensor([positions]).to(model.device),
                        past_key_values=self.cache, use_cache=True)
        return out.logits[0].float().cpu()

    def _select(self, cands: _Candidates, node_cap: int) -> DraftTree:
        """Keeps at most node_cap nodes (root included) as a connected tree."""
        if self.sampling.greedy:
            # A child never outscores its parent, and on ties the parent sorts first.
            ranked = sorted(range(1, len(cands.tokens)), key=lambda i: (-cands.scores[i], i))
            kept = ranked[: node_cap - 1]
        else:
            kept = range(1, len(cands.tokens))  # already within node_cap; never dropped
        order = [0, *sorted(kept)]  # generation order: parents before children, siblings in draw order
        index_of = {c: i for i, c in enumerate(order)}
        parents = tuple(NO_PARENT if c == 0 else index_of[cands.parents[c]] for c in order)
        tokens = tuple(cands.tokens[c] for c in order)
        self._tree_to_candidate = order
        self._tree_scores = [cands.scores[c] for c in order]
        self._drafted_depth = max(cands.depths[c] for c in order)
        if self.recorder is not None:
            self._pending = [self._row(cands, c, index_of) for c in order[1:]]
        if self.sampling.greedy:
            return DraftTree(tokens, parents)
        has_children = {cands.parents[c] for c in order[1:]}
        dists = tuple(cands.dists[c] if c in has_children else None for c in order)
        return DraftTree(tokens, parents, draft_dists=dists)

    def _row(self, cands: _Candidates, c: int, index_of: dict[int, int]) -> NodeRow:
        """A drafted node's row for the acceptance log: its parent's features, its own place."""
        parent = cands.parents[c]
        hidden, q = self._node_inputs[parent]
        return NodeRow(tree_index=index_of[c], parent_index=index_of[parent], hidden=hidden, q=q,
                       depth=cands.depths[c], score=cands.scores[c],
                       prob=math.exp(cands.scores[c] - cands.scores[parent]), rank=cands.children[parent].index(c))

    # --- observe -----------------------------------------------------------------------------

    def observe(self, verdict: Verdict) -> None:
        self._keep_path(verdict.accepted_nodes)
        super().observe(verdict)

    def _keep_path(self, accepted_nodes: tuple[int, ...]) -> None:
        """Keeps the cache entries of the accepted nodes it had run and adapts the budget; the
        caller commits the tokens to the context."""
        if self.recorder is not None and self._pending:
            self.recorder.label(self._pending, accepted_nodes, self.sampling.greedy)
        self._pending = []
        accepted = [self._tree_to_candidate[i] for i in accepted_nodes]
        run_index = {c: i for i, c in enumerate(self._run_order)}
        kept = [run_index[c] for c in accepted if c in run_index] if self.keeps_node_entries else []  # a path prefix
        keep_tree_nodes(self.cache, self.num_run, kept)
        self.budget.observe(self._drafted_depth, len(accepted_nodes))
        self.num_run += len(kept)
        self._drafted_depth, self._tree_to_candidate, self._run_order = 0, [0], []

    # --- drafting ahead (greedy) ---------------------------------------------------------------

    def draft_ahead(self, tree: DraftTree, limit_after: Callable[[int], DraftLimit], count: int) -> list[Guess]:
        """Guesses that the path to one of the best-scoring leaves is accepted and that the bonus
        is the drafter's own next token there, and drafts the next tree for each guess on a copy of
        the session (PEARL's drafting during verification, Liu et al. 2024, applied to trees)."""
        if not self.sampling.greedy or count <= 0 or len(self._tree_scores) != tree.num_nodes:
            return []
        parents = set(tree.parents)
        leaves = sorted((i for i in range(1, tree.num_nodes) if i not in parents),
                        key=lambda i: (-self._tree_scores[i], i))
        guesses = []
        for leaf in leaves[:count]:
            path = []
            node = leaf
            while node != 0:
                path.append(node)
                node = tree.parents[node]
            path.reverse()
            limit = limit_after(len(path) + 1)
            if not limit.allows_drafting:
                continue
            fork = self._fork()
            fork._keep_path(tuple(path))
            fork.context.extend(tree.tokens[i] for i in path)
            bonus = fork._next_token()
            fork.context.append(bonus)
            guesses.append(Guess(tuple(path), bonus, fork.propose(limit), fork))
        return guesses

    def adopt(self, guess: Guess) -> None:
        self.__dict__.update(guess.state.__dict__)

    def _fork(self) -> "ModelDraftSession":
        """A copy sharing the drafter, with its own context, cache and budget."""
        fork = copy.copy(self)
        fork.context = list(self.context)
        fork.cache = copy.deepcopy(self.cache)
        fork.budget = copy.deepcopy(self.budget)
        fork.generator = torch.Generator().set_state(self.generator.get_state())
        fork._tree_to_candidate, fork._run_order = list(self._tree_to_candidate), list(self._run_order)
        fork._pending = []  # a guessed verdict never labels the acceptance log
        return fork

    def _next_token(self) -> int:
        """The drafter's most likely token after the context."""
        self._rewind()
        return int(self._run_context()[-1].argmax())

    # --- the cache -----------------------------------------------------------------------------

    def _rewind(self) -> None:
        """Drops the entries of nodes run for a proposal never observed (a rejected tree, say), and
        the last context token's, which then runs again: drafting starts from its logits."""
        self.num_run = min(self.num_run, self._context_entries() - 1)
        truncate(self.cache, self.num_run)

    def _run_context(self) -> torch.Tensor:
        """Runs the context tokens the cache lacks; their logits [n, V]."""
        pending = self.context[self.num_run:]
        logits = forward_tree(self.drafter.model, pending, [NO_PARENT, *range(len(pending) - 1)], self.cache)
        self.num_run = len(self.context)
        return logits

    def close(self) -> None:
        """Frees the cache's entries; the session stays usable (it would re-run the context)."""
        truncate(self.cache, 0)
        self.num_run = 0


def _truncate(probs: torch.Tensor, support: int) -> SparseDist:
    """The top-`support` part of probs: [V], renormalised: the exact q drawn from."""
    top = torch.topk(probs, min(support, int((probs > 0).sum())))
    values = top.values / top.values.sum()
    return SparseDist(tuple(top.indices.tolist()), tuple(values.tolist()))


def _gumbel_top_k(dist: SparseDist, k: int, generator: torch.Generator) -> list[int]:
    """k draws without replacement from dist, in draw order (Gumbel-top-k)."""
    log_q = torch.log(torch.tensor(dist.probs, dtype=torch.float64))
    uniform = torch.rand(len(dist.probs), generator=generator, dtype=torch.float64).clamp_min(1e-300)
    keys = log_q - torch.log(-torch.log(uniform))
    order = torch.argsort(keys, descending=True)[: min(k, len(dist.probs))]
    return [dist.token_ids[i] for i in order.tolist()]
