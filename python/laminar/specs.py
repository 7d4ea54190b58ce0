"""Building blocks of queries: windows, watermark strategies, aggregates and emit strategies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ._durations import Duration, to_millis
from .errors import QueryError

__all__ = [
    "Window", "tumbling", "sliding", "session",
    "Watermark", "bounded_delay", "ascending", "punctuated",
    "Agg", "count", "sum", "min", "max", "avg", "first", "last",
    "Emit", "on_window_close", "final", "on_update", "periodic", "changelog",
]


# --- windows -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A window definition; create with :func:`tumbling`, :func:`sliding` or :func:`session`."""

    kind: str
    size_ms: int = 0
    offset_ms: int = 0
    slide_ms: int = 0
    gap_ms: int = 0

    def to_plan(self) -> dict:
        if self.kind == "session":
            return {"kind": "session", "gap_ms": self.gap_ms}
        plan = {"kind": self.kind, "size_ms": self.size_ms, "offset_ms": self.offset_ms}
        if self.kind == "sliding":
            plan["slide_ms"] = self.slide_ms
        return plan


def tumbling(size: Duration, *, offset: Duration = 0) -> Window:
    """Fixed-size, non-overlapping windows ``[start, start + size)``.

    ``offset`` shifts where windows start: ``tumbling("1d", offset="19h")`` gives days that
    start at 19:00 UTC.
    """
    return Window("tumbling", to_millis(size, "window size", allow_zero=False), to_millis(offset, "window offset"))


def sliding(size: Duration, *, every: Duration, offset: Duration = 0) -> Window:
    """Windows of length ``size`` starting every ``every`` (hopping windows): each row is in
    ``ceil(size / every)`` windows. ``every`` must not exceed ``size``.

    Rows are stored once, in panes of ``gcd(size, every)``, never copied per window.
    """
    size_ms = to_millis(size, "window size", allow_zero=False)
    slide_ms = to_millis(every, "sliding window step (every=)", allow_zero=False)
    if slide_ms > size_ms:
        raise QueryError(
            f"sliding(size={size_ms} ms, every={slide_ms} ms): the step must not exceed the size; "
            "for gaps between windows filter the rows instead"
        )
    return Window("sliding", size_ms, to_millis(offset, "window offset"), slide_ms=slide_ms)


def session(gap: Duration) -> Window:
    """Per-key sessions: rows of one key less than ``gap`` apart belong to one session
    ``[first, last + gap)``; an out-of-order row that bridges two sessions merges them."""
    return Window("session", gap_ms=to_millis(gap, "session gap", allow_zero=False))


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
    """When a windowed query emits; create with :func:`on_window_close`, :func:`final`,
    :func:`on_update`, :func:`periodic` or :func:`changelog`."""

    kind: str
    interval_ms: int = 0

    def to_plan(self) -> dict:
        if self.kind == "periodic":
            return {"kind": "periodic", "interval_ms": self.interval_ms}
        return {"kind": self.kind}


def on_window_close() -> Emit:
    """A row per window and key when the watermark reaches the window's end (the default).
    Rows arriving later but within the allowed lateness re-emit the updated row."""
    return Emit("on_window_close")


def final() -> Emit:
    """Exactly one row per window and key, once the allowed lateness has expired."""
    return Emit("final")


def on_update() -> Emit:
    """After every pushed batch, the current row of each window and key it changed."""
    return Emit("on_update")


def periodic(interval: Duration) -> Emit:
    """Every ``interval`` of processing time (checked on each engine call), the current row of
    each window and key changed since the last emit; each window's final row when it closes."""
    return Emit("periodic", to_millis(interval, "periodic interval", allow_zero=False))


def changelog() -> Emit:
    """After every pushed batch, for each window and key it changed: the previously emitted
    row with ``weight = -1`` (if any), then the current row with ``weight = +1``. Summing
    weights per distinct row gives the final result."""
    return Emit("changelog")

