import re

import pytest

from specroute.zoo.families import math as math_family

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@pytest.fixture(scope="module")
def examples():
    return list(math_family.examples(0))


def _check_equation(a: int, op: str, b: int, c: int) -> None:
    if op == "/":
        assert b != 0 and a % b == 0 and a // b == c
    else:
        assert OPS[op](a, b) == c


def test_same_seed_same_sequence(examples):
    assert list(math_family.examples(0)) == examples


def test_different_seeds_differ(examples):
    assert list(math_family.examples(1)) != examples


def test_enough_unique_prompts(examples):
    assert len({ex.prompt for ex in examples}) >= 3000


def test_task_and_lengths(examples):
    for ex in examples:
        assert ex.task == "math"
        assert 0 < len(ex.prompt) <= 600
        assert 0 < len(ex.continuation) <= 1200


def test_token_boundary(examples):
    for ex in examples:
        assert ex.prompt == ex.prompt.rstrip()
        assert ex.prompt.endswith("?")
        assert ex.continuation.startswith("\n")


def test_solutions_are_correct(examples):
    for ex in examples:
        lines = ex.continuation.strip("\n").split("\n")
        *steps, answer_line = lines
        assert steps, ex
        last_result = None
        for i, line in enumerate(steps, start=1):
            assert line.startswith(f"Step {i}: "), line
            equations = EQUATION.findall(line)
            # Every "=" in a step belongs to a parsed binary equation: nothing goes unchecked.
            assert equations and len(equations) == line.count("="), line
            for a, op, b, c in equations:
                _check_equation(int(a), op, int(b), int(c))
                last_result = int(c)
        match = re.fullmatch(r"Answer: (\d+)", answer_line)
        assert match, answer_line
        assert int(match.group(1)) == last_result


def test_every_template_is_used(examples):
    assert len(math_family.TEMPLATES) >= 8
    # A phrase from one wording of each template.
    markers = ("pays with $", "more, then gives", "km per hour for", "-hour break", "in each box",
               "times as old as", "per hour and works", "% discount", "a week for", "museum tickets")
    for marker in markers:
        assert any(marker in ex.prompt for ex in examples), marker


def test_inexact_division_is_refused():
    with pytest.raises(ValueError):
        math_family._op(7, "/", 2)
