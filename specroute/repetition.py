"""How much of a text repeats itself: distinct-n and the repeat share, on token ids.

- distinct-n (Li et al., 2016): distinct n-grams over all n-grams of one text;
- repeat share: the share of a continuation's tokens that complete an n-gram (n = 6) already seen
  earlier in the prompt or the continuation. Copying is what lookups (prompt lookup, datastores)
  predict exactly, so every benchmark reports it beside tau: a reader sees how much of a figure
  is copying.

Pure functions; this module knows nothing about models or tokenizers.
"""

from __future__ import annotations

REPEAT_N = 6


def distinct_n(tokens: list[int], n: int) -> float:
    """Distinct n-grams over all n-grams of `tokens` (1.0 when it has none)."""
    grams = [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repeat_share(prompt: list[int], continuation: list[int], n: int = REPEAT_N) -> float:
    """The share of continuation tokens that complete an n-gram seen earlier in prompt +
    continuation (0.0 for an empty continuation)."""
    if not continuation:
        return 0.0
    seq = list(prompt) + list(continuation)
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for end in range(n, len(seq) + 1):  # the n-gram seq[end - n: end] ends at token end - 1
        gram = tuple(seq[end - n: end])
        if end - 1 >= len(prompt) and gram in seen:
            repeats += 1
        seen.add(gram)
    return repeats / len(continuation)


def mean_repeat_share(pairs: list[tuple[list[int], list[int]]]) -> float | None:
    """The mean repeat share over (prompt, continuation) pairs; None for no pairs."""
    return sum(repeat_share(p, c) for p, c in pairs) / len(pairs) if pairs else None
