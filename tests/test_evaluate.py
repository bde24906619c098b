"""Scoring: answer extraction, standard errors, and MCQ scoring on a real tiny model."""

from __future__ import annotations

import math

import pytest

from rankscope.evaluate import mean_stderr
from rankscope.tasks.base import extract_hash_answer, normalize_number


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("3 plus 4 is 7 . #### 7", "7", "7"),
        ("#### 1,080", "1080", "1080"),
        ("so $1,080.00 total\n#### $1,080.00", "1080", "1080"),
        ("it is 12 then 15", None, "15"),
        ("no numbers here", None, None),
        ("#### -3", "-3", "-3"),
        ("#### 7.50", "7.5", "7.5"),
        ("first #### 3 then #### 5", "5", "5"),
        ("#### ", None, None),
    ],
)
def test_extraction(text, strict, flexible):
    assert extract_hash_answer(text) == {"strict": strict, "flexible": flexible}


def test_normalize_number():
    assert normalize_number(" 1,234 ") == "1234" and normalize_number("x") == "x"


def test_mean_stderr_matches_sample_formula():
    xs = [1.0, 0.0, 1.0, 1.0]
    mean, se = mean_stderr(xs)
    var = sum((x - 0.75) ** 2 for x in xs) / 3
    assert mean == 0.75 and se == pytest.approx(math.sqrt(var / 4))
    assert math.isnan(mean_stderr([1.0])[1])
