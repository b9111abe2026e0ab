"""The typed reports of a generation: what its rounds did, and what the whole generation did.

A `RoundReport` counts one verification round, or several merged into one streamed chunk: trees
drafted and tokens accepted and emitted (bonus included), the time drafting and verifying, and how
many rounds were drafted ahead (while the previous tree was still being verified). A
`GenerationReport` is a `RoundReport` over every round of a generation plus what only the whole
generation knows: tokens generated, wall and prefill time, the prompt's length, the verifier
replica that served it and how often the session failed over.

The same two types travel from the loop that fills them (`drafter_service.generation`), through
the drafter service and the router, to the client SDK, whose codec (`core.public_codec`) is the
only place they become protobuf messages. Times are seconds everywhere here; only the wire
carries milliseconds.

Vocabulary: tau (the acceptance length) is num_emitted / rounds, the bonus token included; the
acceptance rate is num_accepted / num_drafted.

Plain dataclasses: they pickle across Ray and hold no tensors. This module knows nothing about
models, gRPC or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class RoundReport:
    """The counts and times of `rounds` verification rounds (one, unless merged)."""

    rounds: int = 1
    num_drafted: int = 0
    num_accepted: int = 0
    num_emitted: int = 0
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    rounds_drafted_ahead: int = 0
    # accepted_per_position[i]: rounds whose accepted path reached draft position i + 1 (vLLM's
    # per-position acceptance counter); position 1 is the root's child.
    accepted_per_position: list[int] = field(default_factory=list)

    @property
    def tau(self) -> float:
        """Mean emitted tokens per verification round, bonus included."""
        return self.num_emitted / self.rounds if self.rounds else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0

    def add(self, other: RoundReport) -> None:
        """Adds another report's round counts and times to this one, in place."""
        for f in fields(RoundReport):
            if f.name == "accepted_per_position":
                self.accepted_per_position = add_per_position(self.accepted_per_position, other.accepted_per_position)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def then(self, later: RoundReport) -> RoundReport:
        """These rounds and later ones as one report (a new object)."""
        merged = RoundReport(**{f.name: getattr(self, f.name) for f in fields(RoundReport)})
        merged.accepted_per_position = list(self.accepted_per_position)
        merged.add(later)
        return merged


def add_per_position(a: list[int], b: list[int]) -> list[int]:
    """Two per-position counts added position by position (the shorter padded with zeros)."""
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [x + (shorter[i] if i < len(shorter) else 0) for i, x in enumerate(longer)]


def accepted_positions(num_accepted: int) -> list[int]:
    """One round's per-position acceptance: its accepted path reached positions 1..num_accepted."""
    return [1] * num_accepted


@dataclass
class GenerationReport(RoundReport):
    """Every round of one generation (or, merged, of many), and what the generation alone knows."""

    rounds: int = 0
    num_generated: int = 0
    wall_time_s: float = 0.0  # the speculative loop's time; the prompt's prefill is apart
    prefill_time_s: float = 0.0
    prompt_tokens: int = 0
    verifier_replica: str = ""
    failovers: int = 0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens over the loop's wall time (prefill excluded)."""
        return self.num_generated / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def merge(self, other: GenerationReport) -> None:
        """Adds another generation's counts and times (for totals over many prompts)."""
        self.add(other)
        self.num_generated += other.num_generated
        self.wall_time_s += other.wall_time_s
        self.prefill_time_s += other.prefill_time_s
        self.prompt_tokens += other.prompt_tokens
        self.failovers += other.failovers

    def as_dict(self) -> dict:
        """The counts, times and derived figures as plain JSON values (for result files)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(tau=self.tau, acceptance_rate=self.acceptance_rate, tokens_per_s=self.tokens_per_s)
        return out
