"""Parsing of durations: ``"200ms"``, ``"1s"``, ``"1m30s"``, ``timedelta`` or int milliseconds."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction
from typing import Union

from .errors import DurationError

Duration = Union[str, timedelta, int]
"""A duration: a string like ``"250ms"``, ``"1.5s"``, ``"5m"``, ``"1h30m"``, a
:class:`datetime.timedelta`, or an int number of milliseconds."""

_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "min": 60_000_000,
             "h": 3_600_000_000, "d": 86_400_000_000, "w": 604_800_000_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|m|h|d|w)")


def to_millis(
    value: Duration, what: str = "duration", *, allow_zero: bool = True, allow_negative: bool = False
) -> int:
    """Converts a duration to whole milliseconds, or raises :class:`DurationError`.
    With ``allow_negative``, a leading ``-`` (or a negative int/timedelta) is accepted."""
    if allow_negative:
        if isinstance(value, str) and value.strip().startswith("-"):
            return -to_millis(value.strip()[1:], what, allow_zero=True)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return value
        if isinstance(value, timedelta) and value < timedelta(0):
            return -to_millis(-value, what, allow_zero=True)
    if isinstance(value, bool):
        raise DurationError(f"{what}: expected a duration like '200ms', got {value!r}")
    if isinstance(value, int):
        micros = value * 1000
    elif isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, total, seen = 0, Fraction(0), False
        for m in _PART.finditer(text):
            if m.start() != pos and text[pos:m.start()].strip():
                break
            total += Fraction(m.group(1)) * _UNITS_US[m.group(2)]
            pos, seen = m.end(), True
        if not seen or text[pos:].strip():
            raise DurationError(
                f"{what}: cannot read {value!r}; write a number and a unit, e.g. '200ms', '1s', "
                "'5m', '1h30m' (units: us, ms, s, m or min, h, d, w)"
            )
        if total.denominator != 1:
            raise DurationError(f"{what}: {value!r} is finer than a microsecond")
        micros = int(total)
    else:
        raise DurationError(
            f"{what}: expected a string like '200ms', a timedelta or int milliseconds, "
            f"got {type(value).__name__}"
        )
    if micros < 0:
        raise DurationError(f"{what}: must not be negative, got {value!r}")
    if micros % 1000:
        raise DurationError(f"{what}: {value!r} is not a whole number of milliseconds")
    ms = micros // 1000
    if ms == 0 and not allow_zero:
        raise DurationError(f"{what}: must be longer than zero, got {value!r}")
    return ms
