"""The `extraction` family: retrieval-augmented answering whose answers quote the context.

Passages are English paragraphs of the interpreter's documentation topics (`pydoc_data`), so the
family builds offline. Each prompt is a passage and a question about it; the continuation is one
or two sentences of that passage, copied verbatim inside quotes:

    Context: <passage>
    Question: Which sentence mentions "descriptor"?
    ----- continuation -----
    \nAnswer: "<a sentence of the passage>"

The answer is always an exact substring of the prompt's context, which is what makes this family
the home ground of drafters that copy from the prompt (prompt lookup, n-gram). Questions name a
word, phrase, opening or ending that occurs in exactly one sentence, so each has one right answer.

`random.Random(seed)` picks the passage order, sentence order and the words questions name; the
same seed and Python version give the same examples. This module knows nothing about tokenizers,
models or splits: `specroute.zoo.corpus` deduplicates and splits what it yields.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example

TASK = "extraction"
PASSAGE_CHARS = (200, 450)  # short enough that passage and question fit MAX_PROMPT_CHARS
MAX_EXAMPLES = 4000

# A sentence ends at . ! or ? followed by a space and something that can open a sentence.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(“])")
_WORD = re.compile(r"[A-Za-z][A-Za-z_]{4,}")
_STOPWORDS = frozenset(
    "about above after again against being below between could every other their there these "
    "those through under until where which while would should might whose within without "
    "also only such than then them they this that with from into have been will when what".split()
)
# "The X is a ...", "A X are the ...", '"X" means ...': a subject term and a defining predicate.
_DEFINITION = re.compile(
    r'^((?:The|An|A)(?: [\w\-]+){1,3}|"[^"]{1,40}") (?:(?:is|are) (?:a|an|the|one of|called|used|defined)\b|means|refers to)'
)


def examples(seed: int) -> Iterator[Example]:
    """Yields up to MAX_EXAMPLES examples with unique prompts, lazily, deterministic for `seed`."""
    rng = random.Random(seed)
    order = passages()
    rng.shuffle(order)
    seen: set[str] = set()
    for passage in order:
        sentences = split_sentences(passage)
        indices = list(range(len(sentences)))
        rng.shuffle(indices)
        for i in indices:
            askers = list(_ASKERS)
            rng.shuffle(askers)
            for ask in askers:
                qa = ask(sentences, i, rng)
                if qa is None:
                    continue
                question, answer = qa
                prompt = f"Context: {passage}\nQuestion: {question}"
                continuation = f'\nAnswer: "{answer}"'
                if prompt in seen or len(prompt) > MAX_PROMPT_CHARS or len(continuation) > MAX_CONTINUATION_CHARS:
                    continue
                seen.add(prompt)
                yield Example(TASK, prompt, continuation)
                if len(seen) >= MAX_EXAMPLES:
                    return


def passages() -> list[str]:
    """English paragraphs of the documentation topics, whitespace normalised, in topic-name order."""
    from pydoc_data.topics import topics

    found = []
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(paragraph.split())
            # Grammar productions and interactive sessions are not prose to ask questions about.
            if not PASSAGE_CHARS[0] <= len(text) <= PASSAGE_CHARS[1] or "::=" in text or ">>>" in text:
                continue
            if text.count("*") <= 6 and len(split_sentences(text)) >= 2:
                found.append(text)
    return found


def split_sentences(passage: str) -> list[str]:
    """The passage's sentences; each is an exact substring, joined in the passage by one space."""
    return [s for s in _SENTENCE_BREAK.split(passage) if s]


# An asker turns sentence i of a passage into (question, answer), or None where it does not apply.
Asker = Callable[[list[str], int, random.Random], tuple[str, str] | None]


def _ask_mentions(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    word = _distinctive_word(sentences, i, rng)
    return None if word is None else (f'Which sentence mentions "{word}"?', sentences[i])


def _ask_about(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    words = sentences[i].split()
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:]) if _WORD.fullmatch(a) and _WORD.fullmatch(b)]
    pairs = [p for p in pairs if _occurrences(sentences, p) == [i]]
    return None if not pairs else (f"What does the passage say about {rng.choice(pairs)}?", sentences[i])


def _ask_begins(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    opening = " ".join(sentences[i].split()[: rng.randint(3, 5)])
    unique = sum(s.startswith(opening) for s in sentences) == 1
    return (f'Quote the sentence that begins "{opening}".', sentences[i]) if unique else None


def _ask_ends(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    ending = " ".join(sentences[i].split()[-rng.randint(3, 5):])
    unique = sum(s.endswith(ending) for s in sentences) == 1
    return (f'Quote the sentence that ends "{ending}"', sentences[i]) if unique else None


def _ask_defines(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    match = _DEFINITION.match(sentences[i])
    if match is None:
        return None
    term = re.sub(r"^(The|An|A) ", lambda m: m.group(1).lower() + " ", match.group(1))
    return f"Quote the sentence that defines {term}.", sentences[i]


def _ask_two(sentences: list[str], i: int, rng: random.Random) -> tuple[str, str] | None:
    if i + 1 >= len(sentences):
        return None
    word = _distinctive_word(sentences, i, rng)
    if word is None:
        return None
    # Sentences are joined by one space in the normalised passage, so this is a substring of it.
    return f'Quote the sentence that mentions "{word}" and the sentence after it.', f"{sentences[i]} {sentences[i + 1]}"


_ASKERS: tuple[Asker, ...] = (_ask_mentions, _ask_about, _ask_begins, _ask_ends, _ask_defines, _ask_two)


def _distinctive_word(sentences: list[str], i: int, rng: random.Random) -> str | None:
    """A word of sentence i, not a stopword, that no other sentence of the passage contains."""
    words = sorted({w for w in _WORD.findall(sentences[i]) if w.lower() not in _STOPWORDS})
    words = [w for w in words if _occurrences(sentences, w) == [i]]
    return rng.choice(words) if words else None


def _occurrences(sentences: list[str], phrase: str) -> list[int]:
    pattern = re.compile(rf"(?<![\w]){re.escape(phrase)}(?![\w])", re.IGNORECASE)
    return [j for j, s in enumerate(sentences) if pattern.search(s)]
