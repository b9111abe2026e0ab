"""Task families of the zoo's corpus: one module per family, each a generator of examples.

A family module defines `examples(seed: int) -> Iterator[Example]`: deterministic for a seed,
prompts unique within the family. `specroute.zoo.corpus` registers the families, deduplicates,
splits and saves them.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PROMPT_CHARS = 600
MAX_CONTINUATION_CHARS = 1200
"""Every family keeps its examples within these limits."""


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    continuation: str
