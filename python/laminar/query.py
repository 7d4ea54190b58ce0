"""The lazy query builder and live result handles.

A query is described step by step (``filter``, ``select``, ``dedup``, ``window``,
``group_by``, ``agg``, ``emit``, ``join``, ``lookup``); nothing runs until
:meth:`Stream.collect` registers it with the engine and returns a :class:`QueryResult`, a
live handle whose rows grow as data is pushed. A windowed :class:`Query` is itself a stream
of result rows, so further steps (another window, a filter, a join) can follow it. The exact
semantics are in ``docs/SEMANTICS.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import pyarrow as pa

from ._durations import Duration, to_millis
from .errors import QueryError
from .expr import Expr, col
from .specs import Agg, Emit, Window

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .engine import Engine, Source
    from .sink import SinkHandle

__all__ = ["Stream", "WindowedStream", "GroupedWindow", "Query", "QueryResult"]

_LATE_POLICIES = {"drop": "drop", "side": "side_output"}
_JOIN_KINDS = ("inner", "left", "right", "full")
_LOOKUP_KINDS = ("left", "inner")


def _late_policy(late: str) -> str:
    if late not in _LATE_POLICIES:
        raise QueryError(f"late must be 'drop' or 'side', got {late!r}")
    return _LATE_POLICIES[late]


def _key_list(on: Union[str, Sequence[str]], what: str) -> list[str]:
    keys = [on] if isinstance(on, str) else list(on) if isinstance(on, (list, tuple)) else None
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise QueryError(f"{what} on= takes a column name or a list of names, got {on!r}")
    if len(set(keys)) != len(keys):
        raise QueryError(f"{what} on= names a column twice: {on!r}")
    return keys


def _ops_have_side_output(ops: Sequence[dict]) -> bool:
    for op in ops:
        if op.get("late") == "side_output":
            return True
        if op.get("op") == "join" and _ops_have_side_output(op["right"]["ops"]):
            return True
    return False


class _Plan:
    """Common part of every builder stage: the input sources and the steps so far."""

    def __init__(self, engine: "Engine", inputs: tuple["Source", ...], ops: tuple[dict, ...],
                 joined: tuple[tuple["Source", ...], ...] = ()):
        self._engine = engine
        # Empty for a Source, which is its own input (not stored: that would be a reference
        # cycle, and keep a dropped engine alive until the cycle collector runs).
        self._input_sources = inputs
        self._ops = ops
        # The sources each join step adds (the plan names them inside the step).
        self._joined = joined

    @property
    def _inputs(self) -> tuple["Source", ...]:
        return self._input_sources or (self,)  # type: ignore[return-value]

    def plan(self) -> dict:
        """The plan as the engine receives it (a JSON-compatible dict)."""
        return {"inputs": [s.name for s in self._inputs], "ops": list(self._ops)}

    def _register(self, name: Optional[str], engine: Optional["Engine"] = None) -> "QueryResult":
        engine = engine or self._engine
        return engine._add_query(name, self.plan(), late=self._has_late_output())

    def sink(self, target: Any, name: Optional[str] = None) -> "SinkHandle":
        """Runs the stream as a query whose results go to ``target`` exactly once, one
        checkpoint epoch at a time, instead of to a result handle: ``lm.files(path,
        format="parquet" | "jsonl")`` or a callable ``fn(epoch, table)``. See
        :mod:`laminar.sink`. Returns a :class:`~laminar.sink.SinkHandle`."""
        return self._engine._add_sink(name, self.plan(), target, late=self._has_late_output())

    def _has_late_output(self) -> bool:
        return _ops_have_side_output(self._ops)

    def _sources(self) -> tuple["Source", ...]:
        """Every source this stream reads, joins included."""
        out = list(self._inputs)
        for extra in self._joined:
            out.extend(extra)
        return tuple(dict.fromkeys(out))


class Stream(_Plan):
    """A lazy stream: a source, possibly filtered and projected."""

    def filter(self, predicate: Expr) -> "Stream":
        """Keeps rows where ``predicate`` is true (null counts as false)."""
        if not isinstance(predicate, Expr):
            raise QueryError(f"filter() takes an expression such as lm.col('x') > 0, got {predicate!r}")
        return self._then({"op": "filter", "predicate": predicate._node})

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
        return self._then({"op": "select", "columns": out})

    def dedup(self, on: Union[str, Sequence[str]], within: Duration, *, state: str = "memory") -> "Stream":
        """Drops duplicate rows: a row is dropped when the last row *kept* with the same ``on``
        key is less than ``within`` away from it in event time (either direction); otherwise it
        is kept and becomes its key's reference. Rows pass through unchanged (same columns);
        null keys count as equal. ::

            clicks = eng.source("clicks", time="ts", watermark=lm.bounded_delay("1s"))
            firsts = clicks.dedup(on=["user", "url"], within="10s")
            per_min = firsts.window(lm.tumbling("1m")).group_by("url").agg(n=lm.count())

        ``on``: a column name or a list of them (integers, strings, booleans, dates or
        timestamps). ``within``: a duration such as ``"10s"`` or int milliseconds, > 0. Rows
        behind the watermark are late: dropped and counted as ``late_dropped`` in
        ``Engine.metrics()`` (duplicates as ``duplicates_dropped``). The state per key is
        dropped once the watermark has passed it by ``within``, so it stays bounded. With
        several cores, rows are routed by the ``on`` keys. Semantics: ``docs/SEMANTICS.md``,
        "Dedup".

        ``state``: where the per-key state lives: ``"memory"`` (default), or ``"mmap"`` for more
        keys than memory holds, a memory-mapped file per core that recent writes are merged
        into (under the engine's ``state_dir``, else the system's temporary directory; the
        file is deleted with the engine, and checkpoints copy the state as usual).
        """
        keys = _key_list(on, "dedup()")
        if within is None:
            raise QueryError("dedup() needs within=, a duration such as '10s' or int milliseconds")
        within_ms = to_millis(within, "dedup within", allow_zero=False)
        step = {"op": "dedup", "on": keys, "within_ms": within_ms}
        if state == "mmap":
            step["mmap_dir"] = self._engine._scratch_dir()
        elif state != "memory":
            raise QueryError(f'dedup state= takes "memory" or "mmap", got {state!r}')
        return self._then(step)

    def window(self, window: Window, *, allowed_lateness: Duration = 0, late: str = "drop") -> "WindowedStream":
        """Assigns rows to event-time windows.

        ``allowed_lateness``: how long after its end a window stays open for late rows. With
        the default emit (:func:`laminar.on_window_close`) a window emits when the watermark
        reaches its end and again after a push that brings allowed-late rows; use
        :func:`laminar.final` for exactly one row once the lateness has expired.
        ``late``: what happens to rows whose window has already closed: ``"drop"`` (counted in
        ``Engine.metrics()``) or ``"side"`` (collected by ``QueryResult.late()``).
        """
        if not isinstance(window, Window):
            raise QueryError(
                f"window() takes a window such as lm.tumbling('1s'), lm.sliding('10s', every='1s') "
                f"or lm.session('300ms'), got {window!r}"
            )
        return WindowedStream(self, window, to_millis(allowed_lateness, "allowed_lateness"), _late_policy(late))

    def join(
        self,
        other: "Stream",
        *,
        on: Union[str, Sequence[str]],
        within: tuple[Duration, Duration],
        how: str = "inner",
        allowed_lateness: Duration = 0,
        late: str = "drop",
    ) -> "Stream":
        """Interval join: rows of this stream (left) and ``other`` (right) with equal ``on`` keys
        where ``left.t + lo <= right.t <= left.t + hi`` for ``within=(lo, hi)`` (inclusive;
        ``lo`` may be negative, e.g. ``("-5s", "5s")``).

        ``how``: ``"inner"``, ``"left"``, ``"right"`` or ``"full"``; outer joins emit each
        unmatched row once, with nulls, when no match is possible any more. Result columns:
        every left column, then the right columns other than the keys (``_right`` is appended
        to a name already taken). State is dropped as the watermark passes, so it stays
        bounded. ``allowed_lateness``/``late`` as for windows: rows more than that behind the
        watermark are not joined (dropped and counted, or ``late="side"``).
        """
        if not isinstance(other, Stream):
            raise QueryError(f"join() takes another stream of the same engine, got {type(other).__name__}")
        if other._engine is not self._engine:
            raise QueryError("join() needs streams of the same engine")
        keys = _key_list(on, "join()")
        if not isinstance(within, (tuple, list)) or len(within) != 2:
            raise QueryError(f"within= takes a pair (lo, hi) such as ('0s', '10s'), got {within!r}")
        lo = to_millis(within[0], "join within lower bound", allow_negative=True)
        hi = to_millis(within[1], "join within upper bound", allow_negative=True)
        if lo > hi:
            raise QueryError(f"join within=(lo, hi) needs lo <= hi, got ({lo} ms, {hi} ms)")
        if how not in _JOIN_KINDS:
            raise QueryError(f"how must be one of {', '.join(map(repr, _JOIN_KINDS))}, got {how!r}")
        step = {
            "op": "join",
            "right": other.plan(),
            "on": keys,
            "lower_ms": lo,
            "upper_ms": hi,
            "how": how,
            "allowed_lateness_ms": to_millis(allowed_lateness, "allowed_lateness"),
            "late": _late_policy(late),
        }
        return self._then(step, joined=(other._sources(),))

    def lookup(
        self,
        table: Any,
        *,
        on: Union[str, Sequence[str]],
        how: str = "left",
        ttl: Optional[Duration] = None,
        loader: Optional[Callable[[pa.Table], Any]] = None,
        name: Optional[str] = None,
    ) -> "Stream":
        """Enriches each row with the row of a reference table that has the same ``on`` key.

        ``table``: a pandas/polars DataFrame, pyarrow Table, dict of columns, or a
        :class:`~laminar.LookupTable` from :meth:`Engine.table`. ``how``: ``"left"`` (keep
        rows without a match, with nulls) or ``"inner"``. ``ttl``: entries older than this
        (processing time since loaded) count as missing. ``loader``: called at most once per
        push with a pyarrow Table of the distinct keys that are missing or expired; the rows it
        returns are added to the table. Replace the table later with
        ``Engine.update_table(name, data)``.
        """
        from .engine import LookupTable

        keys = _key_list(on, "lookup()")
        if how not in _LOOKUP_KINDS:
            raise QueryError(f"lookup how must be 'left' or 'inner', got {how!r}")
        if isinstance(table, LookupTable):
            if ttl is not None or loader is not None or name is not None:
                raise QueryError("ttl, loader and name belong to the table: pass them to Engine.table()")
            handle = table
            if handle.on != keys:
                raise QueryError(f"table '{handle.name}' is keyed on {handle.on}, not {keys}")
        else:
            handle = self._engine.table(name, table, on=keys, ttl=ttl, loader=loader)
        handle._readers.update(s.name for s in self._sources())
        step = {"op": "lookup", "table": handle.name, "on": keys, "how": how}
        return self._then(step)

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

    def _then(self, step: dict, joined: tuple = ()) -> "Stream":
        """This stream followed by ``step`` (``joined``: the sources a join step adds)."""
        return Stream(self._engine, self._inputs, self._ops + (step,), self._joined + joined)

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
            "emit": {"kind": "on_window_close"},
        })


class Query(Stream):
    """A complete windowed query. Run it with :meth:`collect` or ``lm.run(query, data)``.

    It is also a stream of its result rows (event time ``window_end - 1``), so another
    window, a filter or a join can follow; the earlier window must then emit final rows
    (:func:`laminar.final`, or the default with no allowed lateness).
    """

    def __init__(self, stream: Stream, step: dict):
        super().__init__(stream._engine, stream._inputs, stream._ops + (step,), stream._joined)
        self._last: Optional[QueryResult] = None

    def emit(self, strategy: Emit) -> "Query":
        """Chooses when results are emitted (default: :func:`laminar.on_window_close`)."""
        if not isinstance(strategy, Emit):
            raise QueryError(
                "emit() takes a strategy: lm.on_window_close(), lm.final(), lm.on_update(), "
                f"lm.periodic('1s') or lm.changelog(); got {strategy!r}"
            )
        *head, last = self._ops
        q = Query.__new__(Query)
        _Plan.__init__(q, self._engine, self._inputs, tuple(head) + ({**last, "emit": strategy.to_plan()},),
                       self._joined)
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
        new = native.take_late(self.name) if self._is_late else native.take_output(self.name)
        self._engine._deliver()  # a poll may close an epoch of the sinks
        return new

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

