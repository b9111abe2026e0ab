"""The `plain` drafter: drafts nothing, so every round verifies the root alone and emits one
token, the target's own. It is plain decoding in the drafter's seat.

The router sends a request here when speculation measured slower than none for its task and
sampling mode (`router.assign`): a drafter whose tokens are rarely accepted costs its drafting
and a wider verification every round and returns less than that. Served, a round still crosses
the drafter-verifier hop; in-process it is the engine without a drafter.

This module knows nothing about models, lookups or sampling.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from drafter_service.base import DraftLimit, DraftSession, Drafter, register_drafter
from core.contracts import DraftTree
from core.sampling import SamplingParams


class PlainConfig(BaseModel):
    """The `plain` drafter has no settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PlainSession(DraftSession):
    def propose(self, limit: DraftLimit) -> DraftTree:
        return DraftTree.root_only(self.context[-1])


@register_drafter("plain")
class PlainDrafter(Drafter):
    """Holds nothing; one instance serves every request."""

    Config = PlainConfig

    def __init__(self, config: PlainConfig):
        self.config = config

    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> PlainSession:
        return PlainSession(prompt_ids, sampling)
