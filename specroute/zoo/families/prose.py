"""The `prose` family: paragraphs of the interpreter's documentation topics (`pydoc_data`).

Prompt: a paragraph's opening sentence; continuation: the rest of the paragraph. Ships with the
interpreter, so it builds offline; the same for every seed. This module knows nothing about
tokenizers or splits.
"""

from __future__ import annotations

import re
from typing import Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example



def examples(seed: int) -> Iterator[Example]:
    del seed  # the documentation is what it is; the corpus shuffles
    from pydoc_data.topics import topics
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(paragraph.split())
            if len(text) < 160 or text.count("*") > 6:
                continue
            cut = text.find(". ")
            if 20 <= cut <= MAX_PROMPT_CHARS:
                yield Example("prose", text[: cut + 1], text[cut + 1:][:MAX_CONTINUATION_CHARS])
