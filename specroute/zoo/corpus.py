"""The zoo's corpus: prompts with continuations, by task family, split deterministically.

Everything comes from what the Python interpreter ships, so the corpus builds offline and is the
same on every machine with the same Python:
- `code`: functions of the standard library's own source. Prompt: the signature and docstring;
  continuation: the body.
- `prose`: paragraphs of the interpreter's documentation topics (`pydoc_data`). Prompt: the
  opening sentence; continuation: the rest of the paragraph.

Splits are decided per example by a hash of its text and the seed, and prompts are unique within
a family, so no test prompt is seen in training. Further families register in `FAMILIES`.

This module knows nothing about tokenizers or models.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import sysconfig
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from specroute.zoo.families import Example

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)
MAX_PROMPT_CHARS = 600
MAX_CONTINUATION_CHARS = 1200


def stdlib_functions() -> Iterator[Example]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
                continue
            doc = node.body[0]
            if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                continue
            head = "".join(lines[node.lineno - 1: doc.end_lineno])
            body = "".join(lines[doc.end_lineno: node.end_lineno])
            if 0 < len(head) <= MAX_PROMPT_CHARS and 20 <= len(body.strip()):
                yield _at_token_boundary("code", _dedent_block(head), _dedent_like(head, body)[:MAX_CONTINUATION_CHARS])


def pydoc_paragraphs() -> Iterator[Example]:
    from pydoc_data.topics import topics
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(paragraph.split())
            if len(text) < 160 or text.count("*") > 6:
                continue
            cut = text.find(". ")
            if 20 <= cut <= MAX_PROMPT_CHARS:
                yield _at_token_boundary("prose", text[: cut + 1], text[cut + 1:][:MAX_CONTINUATION_CHARS])


FAMILIES: dict[str, Callable[[], Iterator[Example]]] = {
    "code": stdlib_functions,
    "prose": pydoc_paragraphs,
}


def _at_token_boundary(task: str, prompt: str, continuation: str) -> Example:
    """Moves the prompt's trailing whitespace to the continuation.

    A byte-level BPE merges a newline with the indentation after it; a prompt ending in a bare
    newline would end in a token that, in training, only ever precedes the end of a text.
    """
    stripped = prompt.rstrip()
    return Example(task, stripped, prompt[len(stripped):] + continuation)


def _dedent_block(text: str) -> str:
    indent = len(text) - len(text.lstrip(" "))
    return "".join(line[indent:] if line[:indent].isspace() else line for line in text.splitlines(keepends=True))


def _dedent_like(head: str, body: str) -> str:
    indent = len(head) - len(head.lstrip(" "))
    return "".join(line[indent:] if line[:indent].isspace() else line for line in body.splitlines(keepends=True))


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
        for ex in FAMILIES[family]():
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
