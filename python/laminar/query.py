"""The lazy query builder and live result handles.

A query is described step by step (``filter``, ``select``, ``window``, ``group_by``, ``agg``,
``emit``); nothing runs until :meth:`Query.collect` registers it with the engine and returns a
:class:`QueryResult`, a live handle whose rows grow as data is pushed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

import pyarrow as pa

from ._durations import Duration, to_millis
from .errors import QueryError
from .expr import Expr, col
from .specs import Agg, Emit, Window

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .engine import Engine, Source

__all__ = ["Stream", "WindowedStream", "GroupedWindow", "Query", "QueryResult"]

_LATE_POLICIES = {"drop": "drop", "side": "side_output"}


class _Plan:
    """Common part of every builder stage: the input sources and the steps so far."""

    def __init__(self, engine: "Engine", inputs: tuple["Source", ...], ops: tuple[dict, ...]):
        self._engine = engine
        self._inputs = inputs
        self._ops = ops

    def plan(self) -> dict:
        """The plan as the engine receives it (a JSON-compatible dict)."""
        return {"inputs": [s.name for s in self._inputs], "ops": list(self._ops)}

    def _register(self, name: Optional[str], engine: Optional["Engine"] = None) -> "QueryResult":
        engine = engine or self._engine
        return engine._add_query(name, self.plan(), late=self._has_late_output())

    def _has_late_output(self) -> bool:
        return any(op.get("late") == "side_output" for op in self._ops)


class Stream(_Plan):
    """A lazy stream: a source, possibly filtered and projected."""

    def filter(self, predicate: Expr) -> "Stream":
        """Keeps rows where ``predicate`` is true (null counts as false)."""
        if not isinstance(predicate, Expr):
            raise QueryError(f"filter() takes an expression such as lm.col('x') > 0, got {predicate!r}")
        return Stream(self._engine, self._inputs, self._ops + ({"op": "filter", "predicate": predicate._node},))

    def select(self, *columns: Union[str, Expr], **named: Expr) -> "Stream":
        """Keeps or computes columns: ``select("key", "price", value=lm.col("price") * lm.col("qty"))``.

        The event time travels along with every stream even when its column is not selected,
        so a window can still follow.
        """
        out: list[tuple[str, dict]] = []
        for c in columns:
            if isinstance(c, str):
                out.append((c, col(c)._node))
            elif isinstance(c, Expr):
                if c.output_name is None:
                    raise QueryError("give computed columns a name: select(total=expr) or expr.alias('total')")
                out.append((c.output_name, c._node))
            else:
                raise QueryError(f"select() takes column names or expressions, got {c!r}")
        for name, e in named.items():
            if not isinstance(e, Expr):
                e = col(e) if isinstance(e, str) else None
                if e is None:
                    raise QueryError(f"select({name}=...) needs an expression")
            out.append((name, e._node))
        if not out:
            raise QueryError("select() needs at least one column")
        return Stream(self._engine, self._inputs, self._ops + ({"op": "select", "columns": out},))

    def window(self, window: Window, *, allowed_lateness: Duration = 0, late: str = "drop") -> "WindowedStream":
        """Assigns rows to event-time windows.

        ``allowed_lateness``: how long after its end a window stays open for late rows (the
        window emits once, when the watermark passes end + allowed lateness).
        ``late``: what happens to rows whose window has already closed: ``"drop"`` (counted in
        ``Engine.metrics()``) or ``"side"`` (collected by ``QueryResult.late()``).
        """
        if not isinstance(window, Window):
            raise QueryError(f"window() takes a window such as lm.tumbling('1s'), got {window!r}")
        if late not in _LATE_POLICIES:
            raise QueryError(f"late must be 'drop' or 'side', got {late!r}")
        return WindowedStream(self, window, to_millis(allowed_lateness, "allowed_lateness"), _LATE_POLICIES[late])

    def union(self, *others: "Stream") -> "Stream":
        """One stream of the rows of several sources of the same schema. Its watermark is the
        smallest of theirs (idle sources excepted)."""
        streams = (self,) + others
        for s in streams:
            if not isinstance(s, Stream) or s._ops:
                raise QueryError("union() combines sources; apply filter/select after the union")
            if s._engine is not self._engine:
                raise QueryError("union() needs sources of the same engine")
        inputs = tuple(dict.fromkeys(i for s in streams for i in s._inputs))
        return Stream(self._engine, inputs, ())

    def collect(self, name: Optional[str] = None) -> "QueryResult":
        """Runs the stream as a query and returns its live result handle (rows pass through as
        they arrive)."""
        return self._register(name)

    def group_by(self, *keys: str) -> Any:
        raise QueryError(
            "group_by(...).agg(...) needs a window first, e.g. "
            "s.window(lm.tumbling('1s')).group_by('key').agg(n=lm.count())"
        )


class WindowedStream:
    """A stream assigned to windows; continue with :meth:`group_by` or :meth:`agg`."""

    def __init__(self, stream: Stream, window: Window, lateness_ms: int, late: str):
        self._stream, self._window, self._lateness, self._late = stream, window, lateness_ms, late

    def group_by(self, *keys: str) -> "GroupedWindow":
        """Groups each window by one or more key columns (integers, strings, booleans, dates,
        timestamps)."""
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise QueryError(f"group_by() takes column names, got {keys!r}")
        if len(set(keys)) != len(keys):
            raise QueryError(f"group_by() names a column twice: {keys!r}")
        return GroupedWindow(self, tuple(keys))

    def agg(self, **aggs: Agg) -> "Query":
        """Aggregates each whole window (no key): ``agg(n=lm.count(), px=lm.avg("price"))``."""
        return GroupedWindow(self, ()).agg(**aggs)


class GroupedWindow:
    """A windowed stream grouped by keys; finish with :meth:`agg`."""

    def __init__(self, windowed: WindowedStream, keys: tuple[str, ...]):
        self._windowed, self._keys = windowed, keys

    def agg(self, **aggs: Agg) -> "Query":
        """Names and aggregates of the result: ``agg(n=lm.count(), total=lm.sum("value"))``."""
        if not aggs:
            raise QueryError("agg() needs at least one aggregate, e.g. agg(n=lm.count())")
        for name, a in aggs.items():
            if not isinstance(a, Agg):
                raise QueryError(f"agg({name}=...) needs an aggregate such as lm.sum('x'), got {a!r}")
        w = self._windowed
        return Query(w._stream, {
            "op": "window_aggregate",
            "window": w._window.to_plan(),
            "keys": list(self._keys),
            "aggs": [a.to_plan(name) for name, a in aggs.items()],
            "allowed_lateness_ms": w._lateness,
            "late": w._late,
            "emit": "on_window_close",
        })


class Query(_Plan):
    """A complete windowed query. Run it with :meth:`collect` or ``lm.run(query, data)``."""

    def __init__(self, stream: Stream, step: dict):
        super().__init__(stream._engine, stream._inputs, stream._ops + (step,))
        self._last: Optional[QueryResult] = None

    def emit(self, strategy: Emit) -> "Query":
        """Chooses when results are emitted (default: :func:`laminar.on_window_close`)."""
        if not isinstance(strategy, Emit):
            raise QueryError(f"emit() takes a strategy such as lm.on_window_close(), got {strategy!r}")
        *head, last = self._ops
        q = Query.__new__(Query)
        _Plan.__init__(q, self._engine, self._inputs, tuple(head) + ({**last, "emit": strategy.kind},))
        q._last = None
        return q

    def collect(self, name: Optional[str] = None) -> "QueryResult":
        """Registers the query with its engine and returns the live result handle."""
        self._last = self._register(name)
        return self._last

    def late(self) -> "QueryResult":
        """The late rows of the query's most recent :meth:`collect` (needs ``late="side"``)."""
        if self._last is None:
            raise QueryError("collect() the query first; late() reads the late rows of that result")
        return self._last.late()


class QueryResult:
    """A live result: rows accumulate as the engine produces them.

    ``poll()`` returns the rows produced since the previous ``poll()``; ``to_arrow()`` and
    ``to_pandas()`` return everything produced so far.
    """

    def __init__(self, engine: "Engine", name: str, *, late: bool = False, has_late_output: bool = False):
        self._engine = engine
        self.name = name
        self._is_late = late
        self._has_late_output = has_late_output
        self._chunks: list[pa.Table] = []
        self._late_handle: Optional[QueryResult] = None

    def _fetch(self) -> Optional[pa.Table]:
        native = self._engine._native
        return native.take_late(self.name) if self._is_late else native.take_output(self.name)

    def poll(self) -> pa.Table:
        """Rows produced since the last ``poll()`` (an empty table if none)."""
        new = self._fetch()
        if new is None:
            return pa.table({})
        if new.num_rows or not self._chunks:
            self._chunks.append(new)
        return new

    def to_arrow(self) -> pa.Table:
        """Every row produced so far, as a pyarrow Table."""
        self.poll()
        if not self._chunks:
            return pa.table({})
        return pa.concat_tables(self._chunks).combine_chunks()

    def to_pandas(self) -> "pandas.DataFrame":
        """Every row produced so far, as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    @property
    def schema(self) -> Optional[pa.Schema]:
        """Result schema, or None until the query's source has a schema."""
        self.poll()
        return next((c.schema for c in self._chunks if c.num_columns), None)

    def late(self) -> "QueryResult":
        """Handle on the rows that arrived after their window closed (``late="side"`` only)."""
        if self._is_late:
            raise QueryError("this is already the late-row handle")
        if not self._has_late_output:
            raise QueryError("this query drops late rows; use .window(..., late='side') to collect them")
        if self._late_handle is None:
            self._late_handle = QueryResult(self._engine, self.name, late=True)
        return self._late_handle

    def __len__(self) -> int:
        return self.to_arrow().num_rows

    def __repr__(self) -> str:
        kind = "late rows of" if self._is_late else "result of"
        return f"<QueryResult {kind} {self.name!r}: {sum(c.num_rows for c in self._chunks)} rows so far>"

    def _repr_html_(self) -> str:
        t = self.to_arrow()
        head = f"<p><b>{self.name}</b>: {t.num_rows} rows</p>"
        try:
            return head + t.slice(max(0, t.num_rows - 20)).to_pandas().to_html(max_rows=20)
        except ImportError:  # pragma: no cover - pandas missing
            return head + f"<pre>{t}</pre>"

