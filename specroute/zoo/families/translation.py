"""The `translation` family: English sentences and their translation into Veltish, an invented
language with a fixed, rule-based grammar.

English sentences come from a small grammar (noun phrases with articles, adjectives and plurals;
a verb in the present, past or future; an object; an optional adverb and place phrase; statements,
negations and questions), sampled with `random.Random(seed)`. `translate` parses such a sentence
and renders it in Veltish:
- word order is subject, object, place, adverb, verb (SOV);
- "the" becomes the particle `sa` before the noun; "a" and bare plurals have no article;
- adjectives follow their noun; plural nouns take `-ri`;
- prepositions become postpositions after their noun phrase;
- the verb takes `-ta` in the past and `-vo` in the future; `nu` before the verb negates;
- a question ends with the particle `ka`.
Veltish words are made from a hash of the English lemma, so the lexicon is the same for every
seed and every machine. Only the seed changes which sentences are drawn.

This module knows nothing about tokenizers, models or corpus splits.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Iterator

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS, Example

LANGUAGE = "Veltish"
MAX_EXAMPLES = 4000
MAX_DRAWS = 40 * MAX_EXAMPLES

# (singular, plural); (base, third person singular, past).
NOUNS = (("dog", "dogs"), ("cat", "cats"), ("man", "men"), ("woman", "women"), ("child", "children"),
         ("bird", "birds"), ("teacher", "teachers"), ("farmer", "farmers"), ("king", "kings"),
         ("friend", "friends"), ("horse", "horses"), ("fox", "foxes"), ("boat", "boats"),
         ("house", "houses"), ("tree", "trees"), ("river", "rivers"), ("city", "cities"),
         ("box", "boxes"), ("letter", "letters"), ("stone", "stones"), ("garden", "gardens"),
         ("road", "roads"), ("book", "books"), ("apple", "apples"))
VERBS = (("see", "sees", "saw"), ("find", "finds", "found"), ("carry", "carries", "carried"),
         ("watch", "watches", "watched"), ("follow", "follows", "followed"), ("help", "helps", "helped"),
         ("know", "knows", "knew"), ("take", "takes", "took"), ("bring", "brings", "brought"),
         ("hold", "holds", "held"), ("visit", "visits", "visited"), ("call", "calls", "called"),
         ("like", "likes", "liked"), ("build", "builds", "built"), ("paint", "paints", "painted"))
ADJECTIVES = ("small", "big", "old", "young", "red", "green", "happy", "tired", "quiet", "strange",
              "bright", "heavy")
ADVERBS = ("quickly", "slowly", "quietly", "often", "again", "carefully", "gladly", "rarely")
PREPOSITIONS = ("in", "near", "with", "under", "behind", "across")
TENSES = ("present", "past", "future")

DEFINITE, NEGATION, QUESTION = "sa", "nu", "ka"
PLURAL_SUFFIX = "-ri"
TENSE_SUFFIX = {"present": "", "past": "-ta", "future": "-vo"}
_CONSONANTS = "ptkmnslrvdbgh"
_VOWELS = "aeiou"


def _build_lexicon() -> dict[str, str]:
    """English lemma -> Veltish word: consonant-vowel syllables read off the lemma's SHA-256.

    Words have at least two syllables, so they never collide with the one-syllable particles; a
    collision between words is resolved by reading one more syllable off the digest.
    """
    lemmas = [s for s, _ in NOUNS] + [v[0] for v in VERBS] + list(ADJECTIVES + ADVERBS + PREPOSITIONS)
    lexicon: dict[str, str] = {}
    for lemma in lemmas:
        digest = hashlib.sha256(lemma.encode()).digest()
        syllables = [_CONSONANTS[a % len(_CONSONANTS)] + _VOWELS[b % len(_VOWELS)]
                     for a, b in zip(digest[0::2], digest[1::2])]
        count = 2 + digest[-1] % 2
        while "".join(syllables[:count]) in lexicon.values():
            count += 1
        lexicon[lemma] = "".join(syllables[:count])
    return lexicon


LEXICON = _build_lexicon()
_NOUN_FORMS = {form: (s, form == p) for s, p in NOUNS for form in (s, p)}
_VERB_FORMS = {form: (v[0], tense) for v in VERBS for form, tense in zip(v, ("present", "present", "past"))}
_AUXILIARY_TENSE = {"do": "present", "does": "present", "did": "past", "will": "future"}


@dataclass(frozen=True)
class NounPhrase:
    noun: str  # lemma
    adjective: str | None
    plural: bool
    definite: bool


@dataclass(frozen=True)
class Clause:
    subject: NounPhrase
    verb: str  # lemma
    tense: str  # one of TENSES
    obj: NounPhrase
    adverb: str | None
    place: tuple[str, NounPhrase] | None  # (preposition, noun phrase)
    negated: bool
    question: bool


def english(clause: Clause) -> str:
    base, third, past = next(v for v in VERBS if v[0] == clause.verb)
    aux = {"past": "did", "future": "will"}.get(clause.tense, "do" if clause.subject.plural else "does")
    subject = _english_np(clause.subject)
    if clause.question:
        head = [aux, subject] + (["not"] if clause.negated else []) + [base]
    elif clause.negated:
        head = [subject, aux, "not", base]
    elif clause.tense == "future":
        head = [subject, "will", base]
    else:
        head = [subject, past if clause.tense == "past" else base if clause.subject.plural else third]
    words = head + [_english_np(clause.obj)]
    words += [clause.adverb] if clause.adverb else []
    words += [clause.place[0], _english_np(clause.place[1])] if clause.place else []
    text = " ".join(words)
    return text[0].upper() + text[1:] + ("?" if clause.question else ".")


def _english_np(np: NounPhrase) -> str:
    singular, plural = next(n for n in NOUNS if n[0] == np.noun)
    words = ([np.adjective] if np.adjective else []) + [plural if np.plural else singular]
    if np.definite:
        return " ".join(["the"] + words)
    if np.plural:
        return " ".join(words)
    return " ".join(["an" if words[0][0] in "aeiou" else "a"] + words)


def parse(sentence: str) -> Clause:
    """The clause of an English sentence of this module's grammar; ValueError for anything else."""
    question = sentence.endswith("?")
    words = sentence.rstrip(".?").lower().split()
    pos, aux = (1, words[0]) if question and words else (0, None)
    subject, pos = _parse_np(words, pos)
    if not question and pos < len(words) and words[pos] in _AUXILIARY_TENSE:
        aux, pos = words[pos], pos + 1
    negated = pos < len(words) and words[pos] == "not"
    pos += negated
    verb, tense = _VERB_FORMS.get(_word(words, pos), (None, None))
    if verb is None or (aux is not None and aux not in _AUXILIARY_TENSE):
        raise ValueError(f"not a sentence of the grammar: {sentence!r}")
    if aux is not None:
        tense = _AUXILIARY_TENSE[aux]
    obj, pos = _parse_np(words, pos + 1)
    adverb = words[pos] if _word(words, pos) in ADVERBS else None
    pos += adverb is not None
    place = None
    if _word(words, pos) in PREPOSITIONS:
        np, end = _parse_np(words, pos + 1)
        place, pos = (words[pos], np), end
    if pos != len(words):
        raise ValueError(f"not a sentence of the grammar: {sentence!r}")
    return Clause(subject, verb, tense, obj, adverb, place, negated, question)


def _word(words: list[str], pos: int) -> str | None:
    return words[pos] if pos < len(words) else None


def _parse_np(words: list[str], pos: int) -> tuple[NounPhrase, int]:
    article = _word(words, pos)
    pos += article in ("the", "a", "an")
    adjective = words[pos] if _word(words, pos) in ADJECTIVES else None
    pos += adjective is not None
    if _word(words, pos) not in _NOUN_FORMS:
        raise ValueError(f"expected a noun at word {pos} of {' '.join(words)!r}")
    noun, plural = _NOUN_FORMS[words[pos]]
    return NounPhrase(noun, adjective, plural, article == "the"), pos + 1


def translate(sentence: str) -> str:
    """The Veltish for an English sentence of this module's grammar."""
    clause = parse(sentence)
    words = [_veltish_np(clause.subject), _veltish_np(clause.obj)]
    words += [_veltish_np(clause.place[1]), LEXICON[clause.place[0]]] if clause.place else []
    words += [LEXICON[clause.adverb]] if clause.adverb else []
    words += [NEGATION] if clause.negated else []
    words += [LEXICON[clause.verb] + TENSE_SUFFIX[clause.tense]]
    words += [QUESTION] if clause.question else []
    return " ".join(words) + ("?" if clause.question else ".")


def _veltish_np(np: NounPhrase) -> str:
    words = [DEFINITE] if np.definite else []
    words += [LEXICON[np.noun] + (PLURAL_SUFFIX if np.plural else "")]
    return " ".join(words + ([LEXICON[np.adjective]] if np.adjective else []))


def _random_np(rng: random.Random) -> NounPhrase:
    adjective = rng.choice(ADJECTIVES) if rng.random() < 0.5 else None
    return NounPhrase(rng.choice(NOUNS)[0], adjective, rng.random() < 0.4, rng.random() < 0.6)


def _random_clause(rng: random.Random) -> Clause:
    subject, verb, tense, obj = _random_np(rng), rng.choice(VERBS)[0], rng.choice(TENSES), _random_np(rng)
    adverb = rng.choice(ADVERBS) if rng.random() < 0.3 else None
    place = (rng.choice(PREPOSITIONS), _random_np(rng)) if rng.random() < 0.3 else None
    return Clause(subject, verb, tense, obj, adverb, place, rng.random() < 0.25, rng.random() < 0.25)


def examples(seed: int) -> Iterator[Example]:
    """Up to MAX_EXAMPLES examples with unique prompts, drawn deterministically from the seed."""
    rng = random.Random(seed)
    seen: set[str] = set()
    for _ in range(MAX_DRAWS):
        if len(seen) >= MAX_EXAMPLES:
            return
        sentence = english(_random_clause(rng))
        prompt = f"Translate to {LANGUAGE}: {sentence}"
        continuation = f"\n{LANGUAGE}: {translate(sentence)}"
        if prompt in seen or len(prompt) > MAX_PROMPT_CHARS or len(continuation) > MAX_CONTINUATION_CHARS:
            continue
        seen.add(prompt)
        yield Example("translation", prompt, continuation)
