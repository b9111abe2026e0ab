"""Which drafter serves a task next: Thompson sampling over recent rewards, exploration bounded.

Each eligible drafter of a task is an arm. Its reward is a request's decoding tokens/s. The
belief about an arm's mean reward is Gaussian: a prior from the drafter assignment's measurement
(worth `prior_weight` requests), updated with the arm's recent rewards from Redis (a window, so an
arm that degrades is seen to degrade). With probability 1 - `explore` the arm with the best
posterior mean is served; otherwise a Thompson draw picks one (Russo et al., 2018, "A Tutorial
on Thompson Sampling"), so at most an `explore` share of traffic goes to an arm that is not the
current best.

Pure: no Redis, no clock. The caller passes the statistics and a random generator.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from router.stats import ArmStats


class PolicyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    explore: float = Field(0.1, ge=0, le=1, description="Most traffic share that may go to a non-best arm.")
    prior_weight: float = Field(4.0, gt=0, description="How many requests the measured prior is worth.")
    prior_cv: float = Field(0.25, gt=0, description="Assumed spread of rewards, as a share of the mean.")


@dataclass(frozen=True)
class Choice:
    drafter: str
    explored: bool
    means: dict[str, float]


def posterior(prior_mean: float, stats: ArmStats | None, config: PolicyConfig) -> tuple[float, float]:
    """(mean, standard deviation) of an arm's mean reward."""
    rewards = stats.recent if stats else []
    n = len(rewards)
    weight = config.prior_weight + n
    mean = (config.prior_weight * prior_mean + sum(rewards)) / weight
    spread = config.prior_cv * max(mean, prior_mean, 1e-9)
    if n > 1:
        observed = sum(rewards) / n
        spread = max(spread, math.sqrt(sum((r - observed) ** 2 for r in rewards) / (n - 1)))
    return mean, spread / math.sqrt(weight)


def choose(priors: dict[str, float], stats: dict[str, ArmStats], rng: random.Random,
           config: PolicyConfig = PolicyConfig()) -> Choice:
    """One drafter among `priors`' keys (the eligible ones, with their measured mean reward)."""
    if not priors:
        raise ValueError("no eligible drafter")
    beliefs = {d: posterior(prior, stats.get(d), config) for d, prior in priors.items()}
    means = {d: mean for d, (mean, _) in beliefs.items()}
    best = max(means, key=means.get)
    if len(priors) > 1 and rng.random() < config.explore:
        drawn = {d: rng.gauss(mean, sd) for d, (mean, sd) in beliefs.items()}
        pick = max(drawn, key=drawn.get)
        return Choice(pick, pick != best, means)
    return Choice(best, False, means)
