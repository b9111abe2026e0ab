"""Tests for incremental detokenisation and stop strings, on a tiny byte-level BPE built here."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from drafter_service.detokenize import IncrementalDetokenizer, StopStringMatcher

_CORPUS = [
    "héllo wörld — 日本語 emoji 🙂",
    "hello world, the quick brown fox jumps over the lazy dog",
    "naïve café résumé — 東京 🙂🙃 déjà vu",
    "def f(x):\n    return x + 1\n",
]

_SAMPLES = [
    "héllo wörld — 日本語 emoji 🙂",
    " 東京 is 日本 🙂🙃!",
    "🙂🙂🙂 café\n日本語日本語",
    "plain ascii text only",
    "ünïcödé 🎉 mixed 語",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
    )
    raw.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")


def _stream(
    tokenizer: PreTrainedTokenizerFast, prompt: str, generated: list[int], chunks: list[int]
) -> list[str]:
    """Pushes `generated` in chunks of the given sizes; returns the pieces, flush last."""
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode(prompt))
    pieces, start = [], 0
    for size in chunks:
        pieces.append(detok.push(generated[start : start + size]))
        start += size
    assert start == len(generated)
    pieces.append(detok.flush())
    return pieces


def _random_chunks(rng: random.Random, total: int, max_size: int) -> list[int]:
    chunks = []
    while total > 0:
        size = rng.randint(1, min(max_size, total))
        chunks.append(size)
        total -= size
    return chunks


# --- IncrementalDetokenizer ---------------------------------------------------------------------


def test_tokenizer_splits_characters_across_tokens(tokenizer):
    # The remaining tests only mean something if some token holds part of a character.
    ids = tokenizer.encode("日本語 🙂")
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


@pytest.mark.parametrize("sample", _SAMPLES)
def test_one_token_at_a_time_matches_full_decode(tokenizer, sample):
    generated = tokenizer.encode(sample)
    pieces = _stream(tokenizer, "prompt: ", generated, [1] * len(generated))
    assert "".join(pieces) == tokenizer.decode(generated, skip_special_tokens=True) == sample
    assert not any("\ufffd" in piece for piece in pieces)


@pytest.mark.parametrize("seed", range(20))
def test_random_chunks_match_full_decode(tokenizer, seed):
    rng = random.Random(seed)
    sample = " ".join(rng.choice(_SAMPLES) for _ in range(4))
    generated = tokenizer.encode(sample)
    chunks = _random_chunks(rng, len(generated), max_size=6)
    pieces = _stream(tokenizer, rng.choice(["", "q", "日本 "]), generated, chunks)
    assert "".join(pieces) == sample
    assert not any("\ufffd" in piece for piece in pieces)


def test_special_tokens_are_skipped(tokenizer):
    eos = tokenizer.eos_token_id
    generated = tokenizer.encode("日本") + [eos] + tokenizer.encode(" 語") + [eos]
    pieces = _stream(tokenizer, "", generated, [1] * len(generated))
    assert "".join(pieces) == tokenizer.decode(generated, skip_special_tokens=True) == "日本 語"


def test_split_character_is_held_then_released(tokenizer):
    generated = tokenizer.encode("a🙂")
    split_at = next(
        k
        for k in range(1, len(generated))
        if tokenizer.decode(generated[:k]).endswith("\ufffd")
    )
    detok = IncrementalDetokenizer(tokenizer, [])
    before = detok.push(generated[:split_at])
    assert "\ufffd" not in before
    assert "🙂" not in before
    after = detok.push(generated[split_at:])
    assert before + after == "a🙂"
    assert after.endswith("🙂")
    assert detok.flush() == ""


def test_flush_releases_incomplete_character_as_decoded(tokenizer):
    generated = tokenizer.encode("x🙂")
    cut = next(
        k for k in range(1, len(generated)) if tokenizer.decode(generated[:k]).endswith("\ufffd")
    )
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("hi "))
    text = detok.push(generated[:cut])
    assert text + detok.flush() == tokenizer.decode(generated[:cut])
    assert detok.flush() == ""


def test_empty_push_and_empty_generation(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("prompt"))
    assert detok.push([]) == ""
    assert detok.flush() == ""


def test_prompt_is_context_not_output(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, tokenizer.encode("hello wörld"))
    assert detok.push(tokenizer.encode(" 日本")) + detok.flush() == " 日本"


def test_window_stays_short_on_long_generation(tokenizer):
    calls: list[int] = []

    class CountingTokenizer:
        def decode(self, token_ids, skip_special_tokens=False):
            calls.append(len(token_ids))
            return tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    generated = tokenizer.encode(" ".join(_SAMPLES * 10))
    detok = IncrementalDetokenizer(CountingTokenizer(), [])
    text = "".join(detok.push(generated[i : i + 3]) for i in range(0, len(generated), 3))
    assert text + detok.flush() == tokenizer.decode(generated)
    assert max(calls) <= 16


# --- StopStringMatcher --------------------------------------------------------------------------


def _feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, stopped = [], False
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
    if not stopped:
        out.append(matcher.flush())
    return "".join(out), stopped


def test_empty_stop_string_rejected():
    with pytest.raises(ValueError):
        StopStringMatcher(["ok", ""])


def test_no_stop_strings_passes_through():
    matcher = StopStringMatcher([])
    assert matcher.feed("anything") == ("anything", False)
    assert matcher.flush() == ""


def test_stop_within_one_chunk():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("abc STOP def") == ("abc ", True)
    assert matcher.stopped
    assert matcher.matched == "STOP"


def test_stop_across_chunks():
    matcher = StopStringMatcher(["</answer>"])
    assert matcher.feed("result: 42</an") == ("result: 42", False)
    assert matcher.feed("sw") == ("", False)
    assert matcher.feed("er> trailing") == ("", True)


def test_stop_at_very_start():
    matcher = StopStringMatcher(["\n\n"])
    assert matcher.feed("\n") == ("", False)
    assert matcher.feed("\nmore") == ("", True)


def test_partial_prefix_that_does_not_match_is_released():
    matcher = StopStringMatcher(["###"])
    assert matcher.feed("a ##") == ("a ", False)
    assert matcher.feed(" b") == ("## b", False)
    assert matcher.feed("#") == ("", False)
    assert matcher.flush() == "#"
    assert not matcher.stopped


def test_text_after_stop_is_never_emitted():
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("xEN") == ("x", False)
    assert matcher.feed("Dyz") == ("", True)
    assert matcher.feed("more text") == ("", True)
    assert matcher.flush() == ""


def test_earliest_complete_stop_wins():
    matcher = StopStringMatcher(["world", "lo"])
    assert matcher.feed("hello world") == ("hel", True)
    assert matcher.matched == "lo"


def test_overlapping_prefixes_are_tracked():
    # "aab" may start at the second "a" of "aaab": the held tail must keep that possibility open.
    matcher = StopStringMatcher(["aab"])
    assert _feed_all(matcher, ["a", "a", "a", "b", "c"]) == ("a", True)


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_agree_with_whole_text(seed):
    rng = random.Random(seed)
    stops = ["<|end|>", "\n\nQ:", "🙂🙃"]
    parts = ["<|", "end", "|>", "\n", "Q:", "🙂", "🙃", "x", "日"]
    text = "".join(rng.choice(parts) for _ in range(30))
    cuts = sorted(rng.sample(range(1, len(text)), k=min(8, len(text) - 1)))
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    first = min((text.find(s) for s in stops if s in text), default=-1)
    expected = (text[:first], True) if first != -1 else (text, False)
    assert _feed_all(StopStringMatcher(stops), pieces) == expected


def test_detokenizer_and_matcher_together(tokenizer):
    generated = tokenizer.encode("日本語 🙂 done🙂🙃 ignored")
    detok = IncrementalDetokenizer(tokenizer, [])
    matcher = StopStringMatcher(["🙂🙃"])
    emitted = []
    for i in range(0, len(generated), 2):
        text, stopped = matcher.feed(detok.push(generated[i : i + 2]))
        emitted.append(text)
        if stopped:
            break
    assert stopped
    assert "".join(emitted) == "日本語 🙂 done"
