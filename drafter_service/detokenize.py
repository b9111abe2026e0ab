"""Incremental detokenisation and stop strings for a loop that commits 1..N tokens per round.

`IncrementalDetokenizer.push(ids)` returns the text that these ids make final. It never emits
half a character: byte-level tokens may split a multi-byte UTF-8 character, and the tokenizer's
decode then ends in U+FFFD; such a tail is held back until later tokens complete it, or until
`flush()` at the end of generation. Each push decodes only a short window (a few tokens already
emitted, plus the held-back and new ones) and diffs it against what the window had already given,
so its cost does not grow with the sequence. The pushes plus `flush()` add up to decoding all
generated ids at once (`skip_special_tokens=True`). The prompt's last tokens are only the first
window's context, so the first token is decoded where it stands: with a decoder that strips the
leading space of a text (Llama/Mistral metaspace), the stream keeps the space that separates it
from the prompt, which decoding the generated ids alone would drop. Byte-level BPE has no such
difference.

`StopStringMatcher.feed(text)` passes text through until a stop string appears, holding back any
tail that could still grow into one; the stop string and everything after it are never emitted.

This module knows nothing about models, sampling or which tokens end generation (EOS is the
caller's business); it assumes only that decoding more tokens appends to the text of fewer, apart
from an incomplete character at the end (true of byte-level BPE and byte-fallback decoders; not
of `clean_up_tokenization_spaces`, which may rewrite earlier text).
"""

from __future__ import annotations

from typing import Protocol, Sequence

_REPLACEMENT = "\ufffd"

# Tokens of already-emitted text kept in the window, as context for the next decode.
_CONTEXT_TOKENS = 4

# How many cut points to try when sliding the window; a cut inside a character or a byte-fallback
# group gives a window whose text is not a suffix of the full text.
_MAX_CUT_TRIES = 8

# An incomplete character decodes to at most a few U+FFFD (one per byte with byte-fallback; a long
# run of byte tokens only while the whole run is incomplete). A longer trailing run is taken to be
# invalid bytes for good, so garbage output cannot make the window grow without bound.
_MAX_HELD_REPLACEMENTS = 64


class Decoder(Protocol):
    """The one method used from an HF tokenizer."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


def _stable_length(text: str) -> int:
    """Length of `text` without a trailing run of U+FFFD, which later tokens may still complete."""
    end = len(text)
    while end > 0 and text[end - 1] == _REPLACEMENT:
        end -= 1
    if len(text) - end > _MAX_HELD_REPLACEMENTS:
        return len(text) - _MAX_HELD_REPLACEMENTS
    return end


class IncrementalDetokenizer:
    """Turns committed token ids into final text, a few tokens at a time.

    The state is a window of ids and `_emitted`, how many characters of the window's decoded text
    have been emitted (or are prompt context). Text past `_emitted` that is not yet final (an
    incomplete character) is held. Once the window has grown to twice the context, it slides
    forward to the last few tokens, so each decode stays short.
    """

    def __init__(
        self,
        tokenizer: Decoder,
        prompt_ids: Sequence[int],
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._window: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._emitted = len(self._decode(self._window))

    def push(self, token_ids: Sequence[int]) -> str:
        """Returns the new text made final by `token_ids` (possibly "")."""
        if not token_ids:
            return ""
        self._window.extend(token_ids)
        text = self._decode(self._window)
        stable = _stable_length(text)
        new_text = text[self._emitted : stable]
        self._emitted = max(self._emitted, stable)
        if len(self._window) >= 2 * _CONTEXT_TOKENS and self._emitted == stable:
            self._slide(text, held=len(text) - stable)
        return new_text

    def flush(self) -> str:
        """Returns whatever is held back, decoded as is (even an incomplete character)."""
        text = self._decode(self._window)
        rest = text[self._emitted :]
        self._emitted = max(self._emitted, len(text))
        return rest

    def _slide(self, text: str, held: int) -> None:
        """Drops window tokens whose text is emitted, keeping a few as context for the next decode.

        `text` is the decoded window, all emitted but its last `held` characters. A cut is taken
        only where the kept tokens decode to a suffix of `text` that holds the whole held tail
        and the character before it, so the tail's bytes are all kept; otherwise (a cut inside a
        character or a byte-fallback group) the window stays as it is until a later push.
        """
        first_cut = len(self._window) - _CONTEXT_TOKENS
        for cut in range(first_cut, max(first_cut - _MAX_CUT_TRIES, 0), -1):
            kept = self._window[cut:]
            kept_text = self._decode(kept)
            if (held == 0 or len(kept_text) > held) and text.endswith(kept_text):
                self._window = kept
                self._emitted = len(kept_text) - held
                return

    def _decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)


class StopStringMatcher:
    """Cuts generated text at the first stop string, which may arrive split over several feeds.

    Text that could be the start of a stop string is held until it is disambiguated. A stop string
    counts from the moment it is complete, even if a longer one starting earlier might still match.
    """

    def __init__(self, stop_strings: Sequence[str]) -> None:
        if any(s == "" for s in stop_strings):
            raise ValueError("stop strings must be non-empty")
        self._stop_strings = tuple(dict.fromkeys(stop_strings))
        self._longest = max((len(s) for s in self._stop_strings), default=0)
        self._held = ""
        self._matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self._matched is not None

    @property
    def matched(self) -> str | None:
        """The stop string that ended generation, or None."""
        return self._matched

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, stopped). After a stop, returns ("", True)."""
        if self._matched is not None:
            return "", True
        buffer = self._held + text
        match_start, matched = self._first_match(buffer)
        if matched is not None:
            self._matched = matched
            self._held = ""
            return buffer[:match_start], True
        hold = self._partial_match_length(buffer)
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """Releases held text at the end of generation; "" after a stop."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, buffer: str) -> tuple[int, str | None]:
        """The earliest start of a complete stop string in `buffer`, and which one."""
        best_start, best = len(buffer), None
        for stop in self._stop_strings:
            start = buffer.find(stop)
            if start != -1 and start < best_start:
                best_start, best = start, stop
        return best_start, best

    def _partial_match_length(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that is a proper prefix of some stop string."""
        for length in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[len(buffer) - length :]
            if any(stop.startswith(tail) for stop in self._stop_strings):
                return length
        return 0
