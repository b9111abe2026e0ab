"""The zoo's corpus: prompts with continuations, by task family, split deterministically.

Each family is a module of `specroute.zoo.families` registered in `FAMILIES`; every source is
something the Python interpreter ships or a generator seeded here, so the corpus builds offline
and is the same on every machine with the same Python and seed. The corpus puts every prompt at
a token boundary, deduplicates prompts within a family, shuffles with the seed, and splits.

Splits are decided per example by a hash of its text and the seed, and prompts are unique within
a family, so no test prompt is seen in training.

This module knows nothing about tokenizers or models.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from specroute.zoo.families import Example, code, extraction, math, prose, structured, translation

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)


FAMILIES: dict[str, Callable[[int], Iterator[Example]]] = {
    "code": code.examples,
    "prose": prose.examples,
    "math": math.examples,
    "translation": translation.examples,
    "extraction": extraction.examples,
    "structured": structured.examples,
}


def at_token_boundary(example: Example) -> Example:
    """Moves the prompt's trailing whitespace to the continuation.

    A byte-level BPE merges a newline with the indentation after it; a prompt ending in a bare
    newline would end in a token that, in training, only ever precedes the end of a text.
    """
    stripped = example.prompt.rstrip()
    return Example(example.task, stripped, example.prompt[len(stripped):] + example.continuation)


def _split_of(example: Example, seed: int) -> str:
    # Keyed by the whole text, so where the prompt ends does not move an example between splits.
    digest = hashlib.sha256(f"{seed}:{example.prompt}{example.continuation}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < SPLIT_FRACTIONS[0] else "validation" if u < sum(SPLIT_FRACTIONS[:2]) else "test"


def build_corpus(families: list[str], seed: int, max_per_family: int | None = None) -> dict[str, list[Example]]:
    """{split: examples}, deterministic for a given seed, families and Python version."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for family in families:
        seen, examples = set(), []
        for ex in map(at_token_boundary, FAMILIES[family](seed)):
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                examples.append(ex)
        random.Random(seed).shuffle(examples)
        for ex in examples[:max_per_family]:
            splits[_split_of(ex, seed)].append(ex)
    return splits


def save_corpus(splits: dict[str, list[Example]], out: Path) -> dict[str, str]:
    """Writes one JSONL file per split; returns {split: file name}."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, examples in splits.items():
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(asdict(ex)) + "\n" for ex in examples))
        files[split] = path.name
    return files


def load_split(path: Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in path.read_text().splitlines() if line]
