"""The one interface every drafter implements, and the registry that creates drafters by kind.

A `Drafter` is the loaded, shareable part (a model's weights, an n-gram setting). Each generation
opens its own `DraftSession`, which has two verbs (as in HF's candidate generators):
- `propose(limit)`: a draft tree rooted at the last committed token;
- `observe(verdict)`: commit the verifier's decision and adapt.
A session may also draft ahead (`draft_ahead`, `adopt`): guess the verdict of the tree being
verified and draft the next tree meanwhile, for a loop whose verifier runs elsewhere.

A drafter that reads the target's hidden states says which (`Drafter.state_request`); the
verifier session is then opened asking for them, the prefill's rows reach the session once
through `prime` before its first proposal, and each verdict's rows (the root, then the accepted
nodes) through `observe` (`Verdict.states`). So after `prime` and every `observe`, a session holds
one row per committed token but the last.

New drafters are one new module that registers itself with `@register_drafter("kind")`, listed in
`drafter_service.kinds` (which the package imports, so every kind is registered before any lookup);
nothing else in the code base switches on drafter kinds. This module imports no kind.

This module knows nothing about the verifier's cache or how trees are verified.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, ClassVar

from pydantic import BaseModel

from core.contracts import DraftTree, Verdict
from core.sampling import SamplingParams
from core.states import HiddenStates, StateRequest


@dataclass(frozen=True)
class DraftLimit:
    """The most a tree may hold this round, set by the verifier's node limit and the context left.

    max_nodes counts the root; max_depth counts drafted levels below the root.
    """

    max_nodes: int
    max_depth: int

    @property
    def allows_drafting(self) -> bool:
        return self.max_nodes > 1 and self.max_depth > 0


@dataclass
class Guess:
    """A verdict guessed before it came, and the next tree drafted for it (drafting ahead).

    `path`: the tree indices of the guessed accepted nodes (root excluded, root to leaf), `bonus`
    the guessed bonus token; `tree` is the tree the session proposes if the verdict is exactly that,
    and `state` the session state it was drafted from, adopted with `DraftSession.adopt`.
    """

    path: tuple[int, ...]
    bonus: int
    tree: DraftTree
    state: "DraftSession"

    def matches(self, verdict: Verdict) -> bool:
        return verdict.accepted_nodes == self.path and verdict.bonus_token == self.bonus


class DraftSession(ABC):
    """Per-generation drafting state. `context` is every committed token; its last is the root."""

    max_guesses: int = 0
    """How many verdicts `draft_ahead` may guess per round; 0: this session never drafts ahead."""

    def __init__(self, prompt_ids: list[int], sampling: SamplingParams):
        if not prompt_ids:
            raise ValueError("a draft session needs at least one prompt token")
        self.context: list[int] = list(prompt_ids)
        self.sampling = sampling

    def prime(self, states: HiddenStates) -> None:
        """The target's states of the prefilled tokens (every context token but the last), once, before
        the first proposal; only for drafters with a `state_request`."""

    @abstractmethod
    def propose(self, limit: DraftLimit) -> DraftTree:
        """A tree rooted at context[-1], within limit."""

    def observe(self, verdict: Verdict) -> None:
        """Commit the accepted tokens and the bonus. Subclasses extend this to adapt."""
        self.context.extend(verdict.emitted_tokens)

    def draft_ahead(self, tree: DraftTree, limit_after: Callable[[int], DraftLimit], count: int) -> list[Guess]:
        """While `tree` is being verified: up to `count` guessed verdicts, most likely first, each
        with the next tree drafted for it, within `limit_after(num_emitted)`. The session itself is
        unchanged: a guess drafts on a copy of it. Sessions that cannot guess return []."""
        return []

    def adopt(self, guess: Guess) -> None:
        """Takes a guess whose verdict came true: the session is then as if it had observed that
        verdict and proposed `guess.tree`."""
        raise NotImplementedError(f"{type(self).__name__} does not draft ahead")

    def close(self) -> None:
        """Free per-generation resources (caches). Idempotent."""


class Drafter(ABC):
    """A loaded drafter of one kind. `Config` is its pydantic configuration."""

    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    tokenizer = None
    """The drafter's own tokenizer, when it has one: it must equal the target's."""
    state_request: StateRequest | None = None
    """The target's hidden states its sessions read (None: tokens only, and the verifier sends none)."""

    @abstractmethod
    def start(self, prompt_ids: list[int], sampling: SamplingParams) -> DraftSession:
        """Open a session for one generation."""

    def record_to(self, recorder) -> bool:
        """Sends its sessions' drafted nodes and verdicts to `recorder` (an
        `drafter_service.acceptance_log.AcceptanceRecorder`; None: stop). False when this kind
        drafts without a model, so has nothing to log."""
        return False

    @property
    def name(self) -> str:
        return self.kind


_REGISTRY: dict[str, type[Drafter]] = {}

DRAFTER_FILE = "specroute_drafter.json"
"""A drafter directory that is not a plain HF model names its kind here: {"kind": ..., ...}."""


def directory_kind(path: str | Path) -> str | None:
    """The kind a drafter directory records in DRAFTER_FILE; None for a plain model directory."""
    marker = Path(path) / DRAFTER_FILE
    if not marker.is_file():
        return None
    kind = json.loads(marker.read_text()).get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"{marker} names no drafter kind")
    return kind


def register_drafter(kind: str) -> Callable[[type[Drafter]], type[Drafter]]:
    def wrap(cls: type[Drafter]) -> type[Drafter]:
        if kind in _REGISTRY:
            raise ValueError(f"drafter kind {kind!r} is registered twice")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls
    return wrap


def drafter_kinds() -> list[str]:
    """The registered kinds."""
    return sorted(_REGISTRY)


def drafter_config_model(kind: str) -> type[BaseModel]:
    """The pydantic Config of a registered kind (to validate settings before loading anything)."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown drafter kind {kind!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[kind].Config


def create_drafter(kind: str, config: dict | BaseModel) -> Drafter:
    """Validates `config` against the kind's Config model and builds the drafter."""
    try:
        cls = _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown drafter kind {kind!r}; known: {sorted(_REGISTRY)}") from None
    if not isinstance(config, cls.Config):
        config = cls.Config.model_validate(config)
    return cls(config)
