"""Detected tasks are named by words a person reads as what their prompts are about: the most
distinctive words of each cluster, never stop words or code keywords, unique and stable."""

import numpy as np

from specroute.offline.detect import NAME_STOP_WORDS, _name_clusters

CODE = [f"def {name}(self, value=None):\n    \"\"\"Return the {noun} of the widget.\"\"\"" for name, noun in
        [("width", "width"), ("height", "height"), ("colour", "colour"), ("border", "border"), ("font", "font")]]
PROSE = [f"The {noun} statement binds the name in the current scope; the interpreter evaluates it." for noun in
         ("import", "global", "nonlocal", "assignment", "del")]


def test_names_come_from_distinctive_words_not_stop_words_or_keywords():
    labels = np.array([0] * len(CODE) + [1] * len(PROSE))
    tasks = _name_clusters(CODE + PROSE, labels, 2)
    names = [t["name"] for t in tasks]
    assert names == ["value-widget", "binds-current"], names  # words in every prompt of one cluster, none of the other
    for task in tasks:
        words = task["name"].split("-")
        assert not set(words) & NAME_STOP_WORDS and not {"def", "self", "the"} & set(words), task
        assert task["top_terms"] and task["name"].startswith(task["top_terms"][0])
    assert [t["size"] for t in tasks] == [5, 5]


def test_names_are_unique_and_stable():
    prompts = CODE + CODE[::-1] + PROSE  # two clusters with the same words: the second needs another name
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5)
    first = [t["name"] for t in _name_clusters(prompts, labels, 3)]
    assert first == ["value-widget", "value-widget-border", "binds-current"]  # the next distinctive word
    assert [t["name"] for t in _name_clusters(prompts, labels, 3)] == first


def test_a_cluster_without_words_is_named_by_its_label():
    tasks = _name_clusters(["1 + 2", "3 * 4", "the cat sat on the mat", "a dog sat on a log"], np.array([0, 0, 1, 1]), 2)
    assert tasks[0]["name"] == "task0" and tasks[0]["top_terms"] == []
    assert tasks[1]["name"] != "task1"
