"""Tests for the `structured` family: records converted between key-value lines, JSON and CSV.

The parsers here are written independently of the module's renderer, from the formats its
docstring documents, so a round trip checks the rendering rather than the renderer against itself.
"""

from __future__ import annotations

import csv
import io
import json
import re
from itertools import islice

import pytest

from specroute.zoo.families import Example
from specroute.zoo.families.structured import DIRECTIONS, examples, render

HEADER = re.compile(r"Convert (key-value lines|JSON|CSV) to (key-value lines|JSON|CSV):\n")
FORMAT_OF_NAME = {"key-value lines": "kv", "JSON": "json", "CSV": "csv"}

Records = list[list[tuple[str, object]]]


@pytest.fixture(scope="module")
def seed0() -> list[Example]:
    return list(examples(0))


def _typed(text: str) -> object:
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d\d", text):
        return float(text)
    return text


def _parse(text: str, fmt: str) -> Records:
    """Records as ordered (field, typed value) pairs, so field order counts too."""
    if fmt == "json":
        return [list(record.items()) for record in json.loads(text)]
    if fmt == "csv":
        header, *rows = list(csv.reader(io.StringIO(text)))
        assert all(len(row) == len(header) for row in rows)
        return [[(k, _typed(v)) for k, v in zip(header, row)] for row in rows]
    records = []
    for block in text.split("\n\n"):
        pairs = [line.split(": ", 1) for line in block.split("\n")]
        records.append([(k, _typed(v)) for k, v in pairs])
    return records


def _direction(example: Example) -> tuple[str, str, str]:
    match = HEADER.match(example.prompt)
    assert match, example.prompt
    source, target = FORMAT_OF_NAME[match[1]], FORMAT_OF_NAME[match[2]]
    return source, target, example.prompt[match.end():]


def test_task_is_structured(seed0):
    assert {ex.task for ex in seed0} == {"structured"}


def test_same_seed_same_sequence(seed0):
    assert list(islice(examples(0), 500)) == seed0[:500]


def test_different_seeds_differ():
    assert list(islice(examples(1), 50)) != list(islice(examples(2), 50))


def test_at_least_3000_unique_prompts(seed0):
    assert len({ex.prompt for ex in seed0}) == len(seed0) >= 3000


def test_within_corpus_limits(seed0):
    assert max(len(ex.prompt) for ex in seed0) <= 600
    assert max(len(ex.continuation) for ex in seed0) <= 1200


def test_prompt_ends_without_whitespace_and_continuation_opens_a_line(seed0):
    assert all(ex.prompt == ex.prompt.rstrip() for ex in seed0)
    assert all(ex.continuation.startswith("\n") and ex.continuation[1:].strip() for ex in seed0)


def test_every_direction_occurs(seed0):
    assert {_direction(ex)[:2] for ex in seed0} == set(DIRECTIONS)
    assert len(DIRECTIONS) == 6


@pytest.mark.parametrize("source,target", DIRECTIONS)
def test_conversion_is_exact(seed0, source, target):
    checked = 0
    for ex in seed0:
        ex_source, ex_target, records_text = _direction(ex)
        if (ex_source, ex_target) != (source, target):
            continue
        records = _parse(records_text, source)
        assert 1 <= len(records) <= 4
        assert _parse(ex.continuation[1:], target) == records, ex
        checked += 1
    assert checked > 300


def test_values_are_typed_and_decimals_show_two_places(seed0):
    kinds = set()
    for ex in seed0:
        source, target, records_text = _direction(ex)
        if source == "json":
            for record in json.loads(records_text):
                kinds.update(type(v) for v in record.values())
            for number in re.findall(r": (-?\d+\.\d+)", records_text):
                assert re.fullmatch(r"-?\d+\.\d[1-9]", number), number
    assert kinds == {str, int, float, bool}


def test_csv_quotes_values_with_commas():
    records = [{"title": "Salt, Smoke and Stars", "year": 1999}]
    assert render(records, "csv") == 'title,year\n"Salt, Smoke and Stars",1999'
    assert _parse(render(records, "csv"), "csv") == [list(records[0].items())]


def test_render_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        render([{"a": 1}], "xml")
