"""emovit_utils.numbers: the one test of a usable number; booleans, NaN and infinities never pass."""

import math

import pytest

from emovit_utils.numbers import is_finite_number, is_whole_number


@pytest.mark.parametrize("value, minimum, expected", [
    (3, 1, True), (1, 1, True), (0, 1, False), (True, 0, False), (2.0, 0, False), ("3", 0, False), (-5, None, True),
])
def test_is_whole_number(value, minimum, expected):
    assert is_whole_number(value, minimum) is expected


@pytest.mark.parametrize("value, bounds, expected", [
    (0.5, {"minimum": 0}, True), (0, {"minimum": 0}, True), (0, {"minimum": 0, "above": True}, False),
    (1, {"minimum": 0, "above": True, "maximum": 1}, True), (1.01, {"minimum": 0, "maximum": 1}, False),
    (math.nan, {}, False), (math.inf, {"minimum": 0}, False), (-math.inf, {}, False), (False, {}, False),
    ("1", {}, False), (-2.5, {}, True), (-2.5, {"minimum": 0}, False),
])
def test_is_finite_number(value, bounds, expected):
    assert is_finite_number(value, **bounds) is expected
