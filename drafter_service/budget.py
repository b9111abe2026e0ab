"""How deep to draft: a confidence-based early stop, and budgets adapted from observed acceptance.

Early stop: drafting deeper stops when the drafter's confidence in the next token falls below a
threshold lambda. The confidence signal depends on what acceptance means:
- sampling: AdaEDL's entropy bound (Agrawal et al., 2024): the target accepts a drafted token
  with probability at least about 1 - sqrt(gamma * H(q)), H(q) the drafter's entropy;
- greedy: the drafter's probability of its top token (as HF assisted generation's confidence
  threshold), since a greedy draft is accepted exactly when it is the target's argmax. The
  entropy bound can stop a distilled drafter after one level although most of its top tokens
  are accepted: a drafter can be right while its distribution is wide.

Adaptation (heuristic, tuned by measurement): after each verdict,
- lambda moves toward the acceptance we observe: when drafted tokens are accepted less often than
  `target_acceptance`, lambda rises (stop earlier); more often, it falls (draft deeper), below 0
  if need be, where it no longer stops anything;
- the depth budget grows by one level when the whole drafted depth was accepted and shrinks by
  one when the accepted length fell at least two levels short (HF transformers adapts its number
  of assistant tokens the same way).

This module is pure arithmetic: it knows nothing about models, trees or the verifier.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


LAMBDA_MIN = -1.0
"""Lowest threshold: the entropy bound is negative for wide distributions, and a drafter whose
drafts are accepted anyway should not be stopped by it."""


class BudgetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    adaptive: bool = Field(True, description="Adapt depth and early stop from observed acceptance; off = static tree.")
    min_depth: int = Field(1, ge=1, description="The depth budget never falls below this.")
    entropy_gamma: float = Field(0.6, gt=0.0, description="gamma in the AdaEDL bound 1 - sqrt(gamma * H(q)).")
    initial_lambda: float = Field(0.2, ge=LAMBDA_MIN, le=1.0, description="Starting early-stop threshold lambda.")
    target_acceptance: float = Field(0.7, gt=0.0, lt=1.0, description="Per-token acceptance lambda steers toward.")
    lambda_step: float = Field(0.05, ge=0.0, le=1.0, description="How far lambda moves per round.")


def acceptance_lower_bound(entropy: float, gamma: float) -> float:
    """AdaEDL's entropy-based lower bound on the acceptance probability of the next token."""
    return 1.0 - math.sqrt(max(0.0, gamma * entropy))


def draft_confidence(probs, greedy: bool, gamma: float) -> float:
    """The early-stop signal for one distribution probs: [V] (module doc)."""
    if greedy:
        return float(probs.max())
    entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum())
    return acceptance_lower_bound(entropy, gamma)


class DraftBudget:
    """Per-session budget. `depth` is the current depth limit; `should_stop` the early stop."""

    def __init__(self, config: BudgetConfig, max_depth: int):
        self.config = config
        self.max_depth = max_depth
        self.depth = max_depth
        self.threshold = config.initial_lambda

    def should_stop(self, confidence: float) -> bool:
        """True when the best frontier node's next token is unlikely to be accepted.

        confidence: `draft_confidence` of that node's distribution."""
        return self.config.adaptive and confidence < self.threshold

    def observe(self, drafted_depth: int, accepted_depth: int) -> None:
        """drafted_depth: levels drafted this round; accepted_depth: levels the verifier accepted."""
        if not self.config.adaptive or drafted_depth == 0:
            return
        rate = accepted_depth / drafted_depth
        step = self.config.lambda_step * (self.config.target_acceptance - rate)
        self.threshold = min(1.0, max(LAMBDA_MIN, self.threshold + step))
        if accepted_depth >= drafted_depth and drafted_depth >= self.depth:
            self.depth = min(self.max_depth, self.depth + 1)
        elif accepted_depth <= drafted_depth - 2:
            self.depth = max(self.config.min_depth, self.depth - 1)
