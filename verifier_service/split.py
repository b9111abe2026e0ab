"""How a batched verifier splits one step's node budget among its open sessions: evenly, or by each
session's predicted acceptance.

Every verdict tells its session how many nodes its next tree may have (`VerifierServicer.tree_budget`).
The open sessions share the verification compute of one batched forward, `step_tokens` tree tokens.
Two splits:

- even: `step_tokens // sessions` each, at least `min_tree_nodes` (`even_budget`).
- weighted (`allocate`): every open session gets its root (one node, always: a root-only tree is
  plain decoding, which every session may do); the rest of the budget goes one node at a time to
  the session whose next node has the highest expected gain, as DSpark's scheduler gives verify
  length to the requests whose drafts are most likely to be accepted.

The gain of a node. A session's acceptance is modelled as geometric (`AcceptanceEstimate`): each
level of its tree is a trial that passes with probability alpha_s until the first failure. In the
chain model (the survival product of DSpark; SpecDec++, Huang et al. 2024, "SpecDec++: Boosting
Speculative Decoding via Adaptive Candidate Lengths", stops drafting on the same product) the
k-th drafted node is accepted only if all k levels pass, so it adds alpha_s ** k expected accepted
tokens. Gains fall with k, so handing out nodes from a max-heap of next gains is the greedy that
maximises the step's expected accepted tokens for its node count.

When a node pays. One batched forward over N tree tokens takes t(N) = a + b * N (`ForwardCost`:
a fixed part, weights and launch, and a part per token). A step whose trees commit T tokens in
expectation (one bonus token per session, plus the gains of its drafted nodes) runs at goodput
G = T / t (Liu et al. 2024, "Optimizing Speculative Decoding for Serving Large Language Models
Using Goodput": choose each request's speculation length to maximise accepted tokens per unit of
batch time). One more node of gain g gives (T + g) / (t + b), which beats T / t exactly when

    (T + g) * t > T * (t + b)   <=>   g * t > b * T   <=>   g > b * T / t = b * G.

So the node pays when its gain exceeds min_gain = b * T / t (`min_gain`), the verify cost of one
token in committed tokens at the step's current goodput. Adding a paying node raises G, hence the
threshold, while the heap's next gains only fall: the first node that does not pay ends the
allocation. Under heavy load (many sessions' roots already make T / t close to 1 / b) no drafted
node pays and every session gets a root-only tree: the system falls back to plain decoding with
the same continuous batching instead of crossing over below it; when load falls the threshold
falls and speculation returns, as the estimates of root-only rounds never change (D = 0).

Neither split changes what is verified, only how many nodes a session may draft next; the budget
is decided before drafting and never from drawn values, so greedy output is unchanged and
sampling stays lossless.

This module is arithmetic on numbers: it knows nothing about sessions' tokens, torch, gRPC or
the batcher, and nothing about where the cost figures come from (config, or `ForwardCostFit` fed
with measured forwards).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Hashable, Literal, Mapping, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)

Split = Literal["even", "weighted"]

PRIOR_ALPHA = 0.5
"""A new session's acceptance estimate: neutral, a coin flip per level."""
PRIOR_TRIALS = 2.0
"""How many level-trials the prior is worth (small: a few verdicts outweigh it)."""
DECAY = 0.8
"""Each verdict scales the earlier evidence by this (an exponential moving window of about five verdicts)."""


def tree_depth(parents: Sequence[int]) -> int:
    """The deepest level of a tree given its parent links (parents[0] is the root's; 0: root only)."""
    depths = [0] * len(parents)
    for i in range(1, len(parents)):
        depths[i] = depths[parents[i]] + 1
    return max(depths, default=0)


class AcceptanceEstimate:
    """A session's per-level acceptance rate alpha, from its verdicts, under a geometric model.

    A verdict on a tree of depth D (its deepest level) that accepted L tokens is L successful
    level-trials and, if L < D, one failure (the level that stopped it; at L == D the tree ran out,
    not the luck). The estimate is successes / trials over decayed sums, seeded with a small neutral
    prior. A root-only tree (D = 0) tried nothing and changes nothing."""

    def __init__(self, alpha: float = PRIOR_ALPHA, trials: float = PRIOR_TRIALS, decay: float = DECAY):
        if not 0.0 <= alpha <= 1.0 or trials <= 0 or not 0.0 < decay <= 1.0:
            raise ValueError(f"an acceptance estimate needs alpha in [0, 1], trials > 0 and decay in (0, 1]: "
                             f"got {alpha}, {trials}, {decay}")
        self.successes, self.failures, self.decay = alpha * trials, (1.0 - alpha) * trials, decay

    @property
    def alpha(self) -> float:
        return self.successes / (self.successes + self.failures)

    def update(self, depth: int, accepted: int) -> None:
        """Adds one verdict: the tree's depth D and the accepted length L (0 <= L <= D)."""
        if depth <= 0:
            return
        if not 0 <= accepted <= depth:
            raise ValueError(f"accepted {accepted} tokens of a tree of depth {depth}")
        self.successes = self.decay * self.successes + accepted
        self.failures = self.decay * self.failures + (1.0 if accepted < depth else 0.0)


@dataclass(frozen=True)
class ForwardCost:
    """A batched forward over N tokens takes base_ms + per_token_ms * N."""

    base_ms: float
    per_token_ms: float

    def __post_init__(self):
        if self.base_ms < 0 or self.per_token_ms < 0:
            raise ValueError(f"a forward's cost cannot be negative: {self}")

    def time_ms(self, tokens: int) -> float:
        return self.base_ms + self.per_token_ms * tokens


def min_gain(committed: float, tokens: int, cost: ForwardCost) -> float:
    """The expected accepted tokens one more node must add to raise a step's goodput: b * T / t(N),
    for a step that commits `committed` tokens (T) from `tokens` tree tokens (N)."""
    time = cost.time_ms(tokens)
    return cost.per_token_ms * committed / time if time > 0 else 0.0


def allocate(alphas: Mapping[K, float], step_tokens: int, max_tree_nodes: int, cost: ForwardCost) -> dict[K, int]:
    """Each open session's node budget (root included) for its next tree, by predicted acceptance.

    alphas: each open session's per-level acceptance estimate. Every session gets its root, even
    when there are more sessions than step_tokens; then nodes go, one at a time, to the session
    whose next node gains most (alpha ** k for its k-th drafted node), while the step has nodes
    left, the session is under max_tree_nodes and the gain is above `min_gain`. Ties go to the
    session listed first."""
    budgets = {key: 1 for key in alphas}
    committed, tokens = float(len(budgets)), len(budgets)  # every root commits its bonus token
    heap = [(-alpha, i, key, alpha) for i, (key, alpha) in enumerate(alphas.items()) if max_tree_nodes > 1]
    heapq.heapify(heap)
    while heap and tokens < step_tokens:
        negative_gain, i, key, alpha = heapq.heappop(heap)
        gain = -negative_gain
        if gain <= 0 or gain <= min_gain(committed, tokens, cost):
            break  # gains only fall from here, and the threshold only rises
        budgets[key] += 1
        committed += gain
        tokens += 1
        if budgets[key] < max_tree_nodes:
            heapq.heappush(heap, (-gain * alpha, i, key, alpha))
    return budgets


def even_budget(sessions: int, step_tokens: int, min_tree_nodes: int, max_tree_nodes: int) -> int:
    """The even split: step_tokens // sessions, at least min_tree_nodes, at most max_tree_nodes."""
    share = step_tokens // max(1, sessions)
    return max(min(min_tree_nodes, max_tree_nodes), min(max_tree_nodes, share))


class ForwardCostFit:
    """`ForwardCost` fitted online to measured forwards (tokens, seconds): least squares over
    decayed sums, the prior standing in until forwards of different sizes were seen."""

    def __init__(self, prior: ForwardCost, decay: float = 0.98, min_spread_tokens: float = 4.0):
        self.prior, self.decay, self.min_spread = prior, decay, min_spread_tokens
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        """One forward over `tokens` new tokens took `seconds`."""
        ms, d = seconds * 1e3, self.decay
        self._w, self._n, self._t = d * self._w + 1.0, d * self._n + tokens, d * self._t + ms
        self._nn, self._nt = d * self._nn + tokens * tokens, d * self._nt + tokens * ms

    def cost(self) -> ForwardCost:
        """The fitted cost; the prior while the forwards seen are too alike in size to fit a slope
        (their spread below min_spread_tokens) or the fit is not a cost (a negative part)."""
        if self._w <= 0:
            return self.prior
        mean_n, mean_t = self._n / self._w, self._t / self._w
        variance = self._nn / self._w - mean_n * mean_n
        if variance < self.min_spread ** 2:
            return self.prior
        slope = (self._nt / self._w - mean_n * mean_t) / variance
        base = mean_t - slope * mean_n
        if slope < 0 or base < 0:
            return self.prior
        return ForwardCost(base, slope)
