"""The task datastore: exact n-gram lookup, frequency ranking, document ends, files."""

import numpy as np
import pytest

from drafter_service.datastore import Datastore

EOS = 0
DOCS = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 10], [5, 6, 7, 8, 9], [1, 6, 7, 2]]


def test_longest_suffix_wins_and_followers_are_read():
    store = Datastore.from_documents(DOCS, EOS, min_ngram=1, max_ngram=3)
    # [5, 6, 7] occurs three times; its followers stop at each document's end token.
    assert sorted(store.continuations([4, 5, 6, 7], depth=4)) == [(8, 9, EOS), (8, 9, EOS), (8, 10, EOS)]
    # [9, 6, 7] occurs nowhere, [6, 7] four times: the shorter suffix answers.
    assert sorted(store.continuations([9, 6, 7], depth=1)) == [(2,), (8,), (8,), (8,)]


def test_ranked_prefixes_are_most_frequent_first_and_parents_first():
    store = Datastore.from_documents(DOCS, EOS, min_ngram=1, max_ngram=3)
    ranked = store.ranked_prefixes([5, 6, 7], depth=3)
    assert ranked[:2] == [(8,), (8, 9)]  # 3 and 2 of the 3 occurrences
    for i, prefix in enumerate(ranked):
        assert prefix[:-1] == () or ranked.index(prefix[:-1]) < i


def test_no_match_and_unknown_tokens_give_nothing():
    store = Datastore.from_documents(DOCS, EOS, min_ngram=2, max_ngram=3)
    assert store.continuations([42, 43], depth=4) == []
    assert store.continuations([7], depth=4) == []  # shorter than min_ngram
    assert store.continuations([6, 10_000], depth=4) == []  # beyond the store's token width


def test_max_matches_bounds_the_occurrences_read():
    store = Datastore.from_documents([[3, 4]] * 100, EOS, min_ngram=1, max_ngram=2)
    assert len(store.continuations([3], depth=2, max_matches=7)) == 7


def test_save_and_load_round_trip(tmp_path):
    store = Datastore.from_documents(DOCS, EOS, min_ngram=2, max_ngram=4)
    store.save(tmp_path / "code.npz")
    loaded = Datastore.load(tmp_path / "code.npz")
    assert np.array_equal(loaded.tokens, store.tokens) and (loaded.min_ngram, loaded.max_ngram) == (2, 4)
    assert loaded.continuations([5, 6, 7], 2) == store.continuations([5, 6, 7], 2)


@pytest.mark.parametrize("tokens, kwargs, message", [
    (np.array([], dtype=np.int64), {}, "non-empty"),
    (np.array([1, -2, 3]), {}, ">= 0"),
    (np.array([1, 2, 3]), {"min_ngram": 3, "max_ngram": 2}, "min_ngram"),
    (np.array([1, 2, (1 << 20)]), {"max_ngram": 4}, "63-bit"),
])
def test_bad_stores_are_refused(tokens, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Datastore(tokens, EOS, **kwargs)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        Datastore.load(tmp_path / "nope.npz")
