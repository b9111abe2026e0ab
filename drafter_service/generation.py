"""The speculative loop: propose, verify, observe, commit, round by round.

Each round the drafter proposes a tree within the limits the verifier and the request leave,
the verifier accepts a path of drafted tokens and adds a bonus token (the target's own next token
after that path, so every round emits at least one), the drafter observes the verdict, and the
emitted tokens pass through the stop conditions (max new tokens, EOS, stop strings) and an
incremental detokeniser before they are yielded. With no drafter every tree is the root alone:
plain target decoding through the same code.

Counts (one definition for the whole project):
- num_drafted: drafted tree nodes, root excluded;
- num_accepted: drafted tokens the verifier kept;
- num_emitted: num_accepted + 1, the bonus included, as the verifier decided them;
- tau (acceptance length): total num_emitted / rounds, bonus included;
- acceptance_rate: total num_accepted / total num_drafted;
- num_generated: tokens delivered to the caller (after stop conditions cut a final round);
- tokens_per_s: num_generated over the loop's wall time; the prompt's prefill, done when the
  verifier session opens, is reported apart as prefill_time_s.

The loop sees the verifier only through the `Verifier` protocol, so the same code drives an
in-process session and a remote one. With a remote one (`RemoteVerifier`: `verify` split into
`submit` and `collect`) and a draft session that guesses, the loop drafts ahead: between sending
a tree and collecting its verdict the drafter drafts the next tree for its guesses of the
verdict, and a guess that came true saves that round's drafting (`_Ahead`). Output is unchanged:
any tree is verified losslessly, and a guessed tree is (up to floating-point rounding) the
one the drafter would have proposed.

A drafter that reads the target's hidden states gets the prefill's rows once (`DraftSession.prime`,
from the verifier's `prefill_states`) and each verdict's through `observe`.

`speculate` is the loop; `_Loop` holds one generation's state, with a method per step of a
round (propose, verify, observe, deliver). It knows nothing about how trees are built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, Protocol, runtime_checkable

from drafter_service.base import DraftLimit, DraftSession, Guess
from drafter_service.detokenize import IncrementalDetokenizer, StopStringMatcher
from core.contracts import DraftTree, Verdict
from core.reports import GenerationReport, RoundReport, accepted_positions
from core.states import HiddenStates

log = logging.getLogger(__name__)

FINISH_LENGTH = "length"
FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_CONTEXT = "context"


class Verifier(Protocol):
    """What the loop needs from a verifier session. `prefill_states`: the target's hidden states of
    the prefilled tokens, when the session was opened asking for them (`core.states`)."""

    max_tree_nodes: int
    prefill_states: HiddenStates | None

    @property
    def root(self) -> int: ...

    @property
    def can_continue(self) -> bool: ...

    @property
    def max_draft_depth(self) -> int: ...

    def verify(self, tree: DraftTree) -> Verdict: ...


@runtime_checkable
class RemoteVerifier(Verifier, Protocol):
    """A verifier that works elsewhere: `verify` split in two, so the loop can draft ahead
    between sending a tree and collecting its verdict."""

    def submit(self, tree: DraftTree) -> None: ...

    def collect(self) -> Verdict: ...


@dataclass(frozen=True)
class Chunk:
    """What one round delivers. finish_reason is set on the last chunk only."""

    token_ids: tuple[int, ...]
    text: str
    round: RoundReport | None
    finish_reason: str | None = None


@dataclass(frozen=True)
class StopConditions:
    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()


@dataclass
class Generation:
    """A finished generation: the generated ids only (no prompt), their text and stats."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = FINISH_LENGTH
    stats: GenerationReport = field(default_factory=GenerationReport)


def speculate(verifier: Verifier, drafter: DraftSession | None, tokenizer, prompt_ids: list[int],
              stop: StopConditions, stats: GenerationReport | None = None) -> Iterator[Chunk]:
    """Runs rounds until a stop condition; yields one Chunk per round.

    `stats`, if given, is updated in place as rounds complete.
    """
    loop = _Loop(verifier, drafter, tokenizer, prompt_ids, stop, stats if stats is not None else GenerationReport())
    if stop.max_new_tokens <= 0:
        yield Chunk((), "", None, FINISH_LENGTH)
        return
    yield from loop.run()


class _Loop:
    """One generation's rounds: the state `speculate` keeps between them, a method per step."""

    def __init__(self, verifier: Verifier, drafter: DraftSession | None, tokenizer, prompt_ids: list[int],
                 stop: StopConditions, stats: GenerationReport):
        self.verifier, self.drafter, self.stop, self.stats = verifier, drafter, stop, stats
        self.start = time.perf_counter()
        self.detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        self.matcher = StopStringMatcher(list(stop.stop_strings)) if stop.stop_strings else None
        self.ahead = _Ahead(drafter, verifier)
        self.ready: DraftTree | None = None  # the next tree, drafted ahead for a verdict that came true
        if drafter is not None and getattr(verifier, "prefill_states", None) is not None:
            drafter.prime(verifier.prefill_states)

    def run(self) -> Iterator[Chunk]:
        """One chunk per round until a stop condition or the end of the context window."""
        while True:
            if not self.verifier.can_continue:
                yield Chunk((), _final_text(self.detok, self.matcher), None, FINISH_CONTEXT)
                return
            remaining = self.stop.max_new_tokens - self.stats.num_generated
            verdict, round_stats = self._round(remaining)
            chunk = self._deliver(verdict, remaining, round_stats)
            yield chunk
            if chunk.finish_reason is not None:
                return

    def _round(self, remaining: int) -> tuple[Verdict, RoundReport]:
        """Propose, verify, observe; the round's figures are added to the stats."""
        t0 = time.perf_counter()
        drafted_ahead = self.ready is not None
        tree = self._propose(remaining)
        t1 = time.perf_counter()
        verdict, guess = self._verify(tree, remaining)
        t2 = time.perf_counter()
        self._observe(verdict, guess)
        t3 = time.perf_counter()
        round_stats = RoundReport(1, verdict.num_drafted, verdict.num_accepted, verdict.num_emitted,
                                  draft_time_s=(t1 - t0) + (t3 - t2), verify_time_s=t2 - t1,
                                  rounds_drafted_ahead=int(drafted_ahead),
                                  accepted_per_position=accepted_positions(verdict.num_accepted))
        self.stats.add(round_stats)
        return verdict, round_stats

    def _propose(self, remaining: int) -> DraftTree:
        """The tree drafted ahead for this verdict, else the drafter's proposal, else the root alone."""
        if self.ready is not None:
            tree, self.ready = self.ready, None
            return tree
        if self.drafter is not None:
            return self.drafter.propose(_draft_limit(self.verifier, remaining))
        return DraftTree.root_only(self.verifier.root)

    def _verify(self, tree: DraftTree, remaining: int) -> tuple[Verdict, Guess | None]:
        """The tree's verdict, and the guess of it that came true when drafting ahead."""
        if self.ahead.enabled:
            return self.ahead.verify(tree, remaining)
        return self.verifier.verify(tree), None

    def _observe(self, verdict: Verdict, guess: Guess | None) -> None:
        """The drafter learns the verdict; a guess that came true brings the next tree with it."""
        if guess is not None:
            self.drafter.adopt(guess)
            self.ready = guess.tree
        elif self.drafter is not None:
            self.drafter.observe(verdict)

    def _deliver(self, verdict: Verdict, remaining: int, round_stats: RoundReport) -> Chunk:
        """The round's emitted tokens through the stop conditions and the detokeniser, as a chunk."""
        delivered, text, finish = self._cut(verdict.emitted_tokens[:remaining])
        self.stats.num_generated += len(delivered)
        self.stats.wall_time_s = time.perf_counter() - self.start
        if finish is None and self.stats.num_generated >= self.stop.max_new_tokens:
            finish = FINISH_LENGTH
        if finish in (FINISH_LENGTH, FINISH_EOS):
            text.append(_final_text(self.detok, self.matcher))
        return Chunk(tuple(delivered), "".join(text), round_stats, finish)

    def _cut(self, tokens: tuple[int, ...]) -> tuple[list[int], list[str], str | None]:
        """Tokens up to and including the first that ends the generation (a stop string or EOS),
        their text pieces, and that reason (None if none did)."""
        delivered, text = [], []
        for token in tokens:
            delivered.append(token)
            piece = self.detok.push([token])
            if self.matcher is not None:
                piece, stopped = self.matcher.feed(piece)
                text.append(piece)
                if stopped:
                    return delivered, text, FINISH_STOP
            else:
                text.append(piece)
            if token in self.stop.eos_token_ids:
                return delivered, text, FINISH_EOS
        return delivered, text, None


def _draft_limit(verifier: Verifier, remaining: int, num_emitted: int = 0) -> DraftLimit:
    """The limit of the tree drafted now (num_emitted = 0), or, drafting ahead, of the next round's
    tree if the round being verified emits num_emitted tokens: the verifier's node budget, and a
    depth within the context left and within the tokens still wanted (one of them the bonus)."""
    return DraftLimit(max_nodes=verifier.max_tree_nodes,
                      max_depth=min(verifier.max_draft_depth - num_emitted, remaining - num_emitted - 1))


ALREADY_WAITING_S = 0.5e-3
"""A verdict collected within this of the guesses' end had arrived before it (heuristic)."""


class _Ahead:
    """Drafting ahead: between sending a tree and collecting its verdict, the drafter guesses the
    verdict and drafts the next tree for each guess (`DraftSession.draft_ahead`).

    Only with a remote verifier (the guesses then run while the verifier works) and a session that
    guesses. How many guesses a round makes adapts: one fewer after a round whose verdict was
    already waiting when the guesses were done (they delayed it), one more (up to the session's
    `max_guesses`) after a round whose verdict took longer than another guess would have. A failure
    while drafting ahead is logged and turns it off for the rest of the generation: the guesses
    work on copies, so the session itself is intact.
    """

    def __init__(self, drafter: DraftSession | None, verifier: Verifier):
        self.drafter, self.verifier = drafter, verifier
        self.max = drafter.max_guesses if drafter is not None else 0
        self.enabled = self.max > 0 and isinstance(verifier, RemoteVerifier)
        self.count = self.max
        self.guess_s = 0.0  # the last round's time per guess

    def verify(self, tree: DraftTree, remaining: int) -> tuple[Verdict, Guess | None]:
        """The tree's verdict, and the guess that came true (None if none did)."""
        verifier = self.verifier
        verifier.submit(tree)
        start = time.perf_counter()
        try:
            limit_after = partial(_draft_limit, self.verifier, remaining)  # read before collect() moves the verifier on
            guesses = self.drafter.draft_ahead(tree, limit_after, self.count) if self.count else []
        except Exception:  # an optimisation must not cost the request: go on without it
            log.exception("drafting ahead failed; this generation goes on without it")
            guesses, self.enabled = [], False
        drafted = time.perf_counter()
        verdict = verifier.collect()
        waited = time.perf_counter() - drafted
        if guesses:
            self.guess_s = (drafted - start) / len(guesses)
        if guesses and waited < ALREADY_WAITING_S:
            self.count = max(0, self.count - 1)
        elif waited > self.guess_s:
            self.count = min(self.max, self.count + 1)
        guess = next((g for g in guesses if g.matches(verdict)), None)
        if guess is not None and guess.tree.num_nodes > verifier.max_tree_nodes:
            guess = None  # the verifier cut the node budget with this verdict
        return verdict, guess


def _final_text(detok: IncrementalDetokenizer, matcher: StopStringMatcher | None) -> str:
    """Releases text held back for completion, once no more tokens will come."""
    tail = detok.flush()
    if matcher is None:
        return tail
    piece, _ = matcher.feed(tail)
    return piece + matcher.flush()


def collect(chunks: Iterator[Chunk], stats: GenerationReport) -> Generation:
    """Drains a chunk stream into one Generation."""
    result = Generation(stats=stats)
    text = []
    for chunk in chunks:
        result.token_ids.extend(chunk.token_ids)
        text.append(chunk.text)
        if chunk.finish_reason is not None:
            result.finish_reason = chunk.finish_reason
    result.text = "".join(text)
    return result
