"""Interleaved measurement shared by the per-method benchmarks (`bench drafters`, `bench steering`).

`measure_interleaved` runs, per repeat, every prompt of every scope (a task, or a prompt set such
as out-of-distribution prompts) at every temperature through every method back to back (greedy,
and seeded sampling: prompt i gets seed i), after one unmeasured warm-up per scope, method and
temperature; each generation adds to its method's `Tally` for that scope and repeat. Summaries
(medians over repeats, what each benchmark reports) are the callers'. This module knows nothing
about which methods or drafters are measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from specroute.engine import Engine
from specroute.measure import sampling_at, temperature_key

POSITIONS = 8
"""Draft positions whose acceptance a tally counts (the share of rounds reaching position k)."""


@dataclass
class Tally:
    """One method's figures on one scope in one repeat."""

    tokens: int = 0
    seconds: float = 0.0  # wall time of generate(), prefill included
    loop_s: float = 0.0  # the speculative loop's own time (the report's wall time)
    rounds: int = 0
    emitted: int = 0
    draft_s: float = 0.0
    drafted: int = 0  # drafted nodes (root excluded)
    accepted: int = 0  # drafted nodes accepted
    per_position: list[int] = field(default_factory=lambda: [0] * POSITIONS)
    outputs: list[list[int]] = field(default_factory=list)

    def add(self, tokens: list[int], seconds: float, stats) -> None:
        self.tokens += len(tokens)
        self.seconds += seconds
        self.loop_s += stats.wall_time_s
        self.outputs.append(list(tokens))
        self.rounds += stats.rounds
        self.emitted += stats.num_emitted
        self.draft_s += stats.draft_time_s
        self.drafted += stats.num_drafted
        self.accepted += stats.num_accepted
        for i, n in enumerate(stats.accepted_per_position[:POSITIONS]):
            self.per_position[i] += n

    def merge(self, other: "Tally") -> None:
        for name in ("tokens", "seconds", "loop_s", "rounds", "emitted", "draft_s", "drafted", "accepted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.per_position = [a + b for a, b in zip(self.per_position, other.per_position)]
        self.outputs += other.outputs

    @staticmethod
    def merged(tallies: list["Tally"]) -> "Tally":
        out = Tally()
        for t in tallies:
            out.merge(t)
        return out

    @property
    def tau(self) -> float:
        return self.emitted / self.rounds if self.rounds else 0.0

    @property
    def nodes_per_round(self) -> float:
        return self.drafted / self.rounds if self.rounds else 0.0

    @property
    def rejected_share(self) -> float:
        """The share of drafted nodes the verifier rejected."""
        return 1 - self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def per_round_ms(self, seconds: float) -> float:
        return 1e3 * seconds / self.rounds if self.rounds else 0.0


# {temperature key: [one repeat: {scope: {method: Tally}}]}
Runs = dict[str, list[dict[str, dict[str, Tally]]]]


def measure_interleaved(methods: dict[str, dict[str, Engine]], prompts: dict[str, list[list[int]]],
                        max_new_tokens: int, repeats: int, temperatures: tuple[float, ...], desc: str) -> Runs:
    """methods: {method: {scope: engine}}; prompts: {scope: [prompt ids]}."""
    for scope, scope_ids in prompts.items():  # warm-up, unmeasured
        for t in temperatures:
            for engines in methods.values():
                if scope_ids:
                    engines[scope].generate(scope_ids[0], 8, sampling=sampling_at(t, 0))
    flat = [(scope, ids) for scope, scope_ids in prompts.items() for ids in scope_ids]
    runs: Runs = {temperature_key(t): [] for t in temperatures}
    with tqdm(total=repeats * len(flat) * len(temperatures) * len(methods), desc=desc) as bar:
        for _ in range(repeats):
            rep = {temperature_key(t): {s: {m: Tally() for m in methods} for s in prompts} for t in temperatures}
            for seed, (scope, ids) in enumerate(flat):
                for t in temperatures:
                    for name, engines in methods.items():
                        start = time.perf_counter()
                        result = engines[scope].generate(ids, max_new_tokens, sampling=sampling_at(t, seed))
                        rep[temperature_key(t)][scope][name].add(result.token_ids, time.perf_counter() - start,
                                                                 result.stats)
                        bar.update()
            for key, tables in rep.items():
                runs[key].append(tables)
    return runs
