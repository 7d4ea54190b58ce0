"""Building blocks of queries: windows, watermark strategies, aggregates and emit strategies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ._durations import Duration, to_millis
from .errors import QueryError

__all__ = [
    "Window", "tumbling",
    "Watermark", "bounded_delay", "ascending", "punctuated",
    "Agg", "count", "sum", "min", "max", "avg", "first", "last",
    "Emit", "on_window_close",
]


# --- windows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A window definition; create with :func:`tumbling`."""

    kind: str
    size_ms: int
    offset_ms: int = 0

    def to_plan(self) -> dict:
        return {"kind": self.kind, "size_ms": self.size_ms, "offset_ms": self.offset_ms}


def tumbling(size: Duration, *, offset: Duration = 0) -> Window:
    """Fixed-size, non-overlapping windows ``[start, start + size)``.

    ``offset`` shifts where windows start: ``tumbling("1d", offset="19h")`` gives days that
    start at 19:00 UTC.
    """
    return Window("tumbling", to_millis(size, "window size", allow_zero=False), to_millis(offset, "window offset"))


# --- watermarks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Watermark:
    """How a source derives its watermark; create with :func:`bounded_delay`,
    :func:`ascending` or :func:`punctuated`."""

    kind: str
    delay_ms: int = 0
    column: Optional[str] = None


def bounded_delay(delay: Duration) -> Watermark:
    """Watermark = largest event time seen minus ``delay``: events may arrive up to ``delay``
    out of order; later ones are late."""
    return Watermark("bounded_delay", to_millis(delay, "watermark delay"))


def ascending() -> Watermark:
    """Watermark = largest event time seen: for data that arrives in event-time order."""
    return Watermark("ascending")


def punctuated(column: str) -> Watermark:
    """Watermarks carried in the data: the largest non-null value of ``column`` (int64 epoch ms
    or a timestamp) seen so far."""
    if not isinstance(column, str) or not column:
        raise QueryError(f"punctuated() takes the name of the watermark column, got {column!r}")
    return Watermark("punctuated", column=column)


# --- aggregates ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Agg:
    """An aggregate function applied to a column; create with :func:`count`, :func:`sum`, ..."""

    func: str
    column: Optional[str] = None

    def to_plan(self, name: str) -> dict:
        return {"name": name, "func": self.func, "column": self.column}


def _column(func: str, column: object) -> str:
    if not isinstance(column, str) or not column:
        raise QueryError(f"{func}() takes a column name, e.g. lm.{func}(\"price\"); got {column!r}")
    return column


def count(column: Optional[str] = None) -> Agg:
    """Number of rows, or of non-null values of ``column``."""
    return Agg("count", None if column is None else _column("count", column))


def sum(column: str) -> Agg:  # noqa: A001 - mirrors polars' lm.sum
    """Sum of the non-null values (int64 for integer input, float64 for floats)."""
    return Agg("sum", _column("sum", column))


def min(column: str) -> Agg:  # noqa: A001
    """Smallest non-null value."""
    return Agg("min", _column("min", column))


def max(column: str) -> Agg:  # noqa: A001
    """Largest non-null value."""
    return Agg("max", _column("max", column))


def avg(column: str) -> Agg:
    """Mean of the non-null values (float64)."""
    return Agg("avg", _column("avg", column))


def first(column: str) -> Agg:
    """First non-null value in arrival order."""
    return Agg("first", _column("first", column))


def last(column: str) -> Agg:
    """Last non-null value in arrival order."""
    return Agg("last", _column("last", column))


# --- emit strategies -----------------------------------------------------------------------
@dataclass(frozen=True)
class Emit:
    """When a windowed query emits; create with :func:`on_window_close`."""

    kind: str


def on_window_close() -> Emit:
    """One row per window and key, when the watermark passes the window's end plus the
    allowed lateness (the default)."""
    return Emit("on_window_close")

