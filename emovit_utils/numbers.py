# Copyright 2026 The EmoVIT Hugging Face authors. All rights reserved.
#
# Licensed under the BSD 3-Clause License (the "License"); you may not use this file except in compliance with the
# License. You may obtain a copy of the License in the LICENSE file at the root of this repository.
"""The one test of whether a value from a flag, a file or a settings object is a usable number.

JSON and YAML give booleans where a number was meant (`true` is 1 to Python) and floats that are NaN or infinite;
both are refused here, so a ceiling, a rate or a price is always a real number in its range."""

import math


def is_whole_number(value, minimum: int | None = None) -> bool:
    """An int (not a bool), at least `minimum` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_finite_number(value, minimum: float | None = None, above: bool = False, maximum: float | None = None) -> bool:
    """An int or float (not a bool), finite, at least `minimum` (above it with `above`) and at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if minimum is not None and (value < minimum or (above and value == minimum)):
        return False
    return maximum is None or value <= maximum


__all__ = ["is_finite_number", "is_whole_number"]
