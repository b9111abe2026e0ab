"""The translation family: deterministic per seed, enough unique prompts within the corpus limits,
and a Veltish whose lexicon and word order are fixed rules, the same for every seed."""

from collections import Counter
from itertools import islice

import pytest

from specroute.zoo.families.translation import (ADJECTIVES, ADVERBS, LEXICON, NOUNS, PREPOSITIONS, VERBS,
                                                examples, parse, translate)

from specroute.zoo.families import MAX_CONTINUATION_CHARS, MAX_PROMPT_CHARS

PREFIX = "Translate to Veltish: "
PARTICLES = {"sa", "nu", "ka"}


@pytest.fixture(scope="module")
def seed0():
    return list(examples(0))


def test_same_seed_same_sequence(seed0):
    assert list(examples(0)) == seed0


def test_different_seeds_differ(seed0):
    assert list(islice(examples(1), 100)) != seed0[:100]


def test_enough_unique_prompts_within_limits(seed0):
    assert len({ex.prompt for ex in seed0}) == len(seed0) >= 3000
    for ex in seed0:
        assert ex.task == "translation"
        assert ex.prompt.startswith(PREFIX) and ex.prompt == ex.prompt.rstrip()
        assert ex.continuation.startswith("\nVeltish: ")
        assert len(ex.prompt) <= MAX_PROMPT_CHARS and len(ex.continuation) <= MAX_CONTINUATION_CHARS


def test_golden_translation():
    assert translate("The small dog sees the old man.") == "sa budu huhi sa ritevi vami tohi."
    assert (translate("Did the happy children carry the heavy boxes quickly across the river?")
            == "sa pedahe-ri rude sa hovi-ri vomula sa naheri tenehi nima lupi-ta ka?")


def test_word_order_rules():
    dog, cat, see, old = LEXICON["dog"], LEXICON["cat"], LEXICON["see"], LEXICON["old"]
    # SOV, adjective after its noun, no article for "a".
    assert translate("A dog sees the old cat.") == f"{dog} sa {cat} {old} {see}."
    # Plural suffix on the noun, past suffix on the verb, negation right before the verb.
    assert translate("The dogs did not see cats.") == f"sa {dog}-ri {cat}-ri nu {see}-ta."
    # Question particle at the end; future suffix; preposition after its noun phrase.
    assert (translate("Will the dog see a cat in the house?")
            == f"sa {dog} {cat} sa {LEXICON['house']} {LEXICON['in']} {see}-vo ka?")


def test_parse_rejects_sentences_outside_the_grammar():
    for sentence in ["The dog sees.", "The unicorn sees the cat.", "The dog sees the cat the cat."]:
        with pytest.raises(ValueError):
            parse(sentence)


def test_lexicon_is_a_fixed_injective_map():
    lemmas = [n[0] for n in NOUNS] + [v[0] for v in VERBS] + list(ADJECTIVES + ADVERBS + PREPOSITIONS)
    assert sorted(LEXICON) == sorted(lemmas)
    assert len(set(LEXICON.values())) == len(LEXICON)
    assert not set(LEXICON.values()) & PARTICLES
    assert (LEXICON["dog"], LEXICON["see"], LEXICON["with"]) == ("budu", "tohi", "luhu")


def test_each_english_word_maps_to_its_lexicon_word_in_every_example(seed0):
    lemma_of = {form: n[0] for n in NOUNS for form in n} | {form: v[0] for v in VERBS for form in v}
    lemma_of |= {w: w for w in ADJECTIVES + ADVERBS + PREPOSITIONS}
    for ex in seed0 + list(islice(examples(7), 500)):
        english = ex.prompt[len(PREFIX):].rstrip(".?").lower().split()
        expected = Counter(LEXICON[lemma_of[w]] for w in english if w in lemma_of)
        veltish = ex.continuation[len("\nVeltish: "):].rstrip(".?").split()
        stems = Counter(w.split("-")[0] for w in veltish if w not in PARTICLES)
        assert stems == expected, ex
