"""Exactly-once sinks: where a query's results go, one checkpoint epoch at a time.

Attach a sink to a query instead of collecting it::

    out = per_sec.sink(lm.files("out/per_sec", format="parquet"))      # files
    per_sec.sink(lambda epoch, table: db.upsert(epoch, table))        # a callback

Results are published per **epoch**: the results between two checkpoints. With a
``state_dir`` an epoch is published only once the checkpoint that covers it is complete
(two-phase commit), and after a crash the engine publishes exactly what the uninterrupted run
would have: no duplicate, no gap. Without a ``state_dir`` an epoch closes every
``checkpoint_every``, at ``flush()`` and at ``close()``.

- :func:`files` writes each epoch as Parquet or JSON-lines files into a directory, through a
  ``_staging/`` subdirectory (ignored by dataset readers); a committed file appears whole, by
  an atomic rename, and is never rewritten.
- A callback ``fn(epoch: int, table: pyarrow.Table)`` receives each committed epoch once, in
  order, on the Python thread that called the engine (``push``, ``flush``, ``checkpoint``,
  ``close``, ...). If the process dies before the callback returns, the same epoch (same id,
  same rows) is delivered again after recovery: record the epoch ids you applied to make the
  effect idempotent. If the callback raises, the call that delivered it raises
  :class:`~laminar.errors.SinkError` and the epoch is delivered again at the next call.

The exact rules are in ``docs/SEMANTICS.md`` ("Sinks").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import pyarrow as pa

from .errors import QueryError, SinkError

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .query import QueryResult

__all__ = ["FileTarget", "files", "SinkHandle", "Callback"]

Callback = Callable[[int, pa.Table], None]

_FORMATS = {"parquet": "parquet", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}
_EXTENSIONS = {"parquet": ".parquet", "jsonl": ".jsonl"}


@dataclass(frozen=True)
class FileTarget:
    """A directory of result files (see :func:`files`)."""

    path: str
    format: str
    #: Fault injection for tests (see :func:`files`); None in production.
    disk_budget: Optional[int] = None


def files(path: Union[str, "os.PathLike[str]"], format: str = "parquet", *,
          _disk_budget: Optional[int] = None) -> FileTarget:
    """A sink target: files in directory ``path`` (created if missing), ``format``
    ``"parquet"`` (Snappy-compressed) or ``"jsonl"`` (one JSON object per row).

    Files are named ``part-<lineage>-<epoch>-<n>.<ext>``; read them all with
    :meth:`SinkHandle.read`, ``pyarrow.parquet.read_table(path)`` or
    ``pyarrow.dataset.dataset(path)``. One engine at a time may write to a directory.

    A full disk stops the engine with :class:`~laminar.errors.SinkError` ("the disk holding
    ... is full"); nothing of the epoch being written is published. Free space and create the
    engine again on the same ``state_dir``: recovery publishes what was staged and the log
    replays the rest. ``_disk_budget`` is fault injection for tests: the sink's file writes
    fail as on a full disk once they total that many bytes.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise QueryError(f"files() takes a directory path, got {path!r}")
    if format not in _FORMATS:
        raise QueryError(f"format must be 'parquet' or 'jsonl', got {format!r}")
    if _disk_budget is not None and (isinstance(_disk_budget, bool) or not isinstance(_disk_budget, int) or _disk_budget < 0):
        raise QueryError(f"_disk_budget must be an int >= 0 or None, got {_disk_budget!r}")
    return FileTarget(os.fspath(path), _FORMATS[format], _disk_budget)


class SinkHandle:
    """A query whose results go to a sink. ``metrics()`` shows what was written and
    published; for a file sink, :meth:`read` returns every published row."""

    def __init__(self, engine: "Engine", name: str, target: Union[FileTarget, Callback], has_late_output: bool):
        self._engine = engine
        self.name = name
        self.target = target
        self._has_late_output = has_late_output

    def metrics(self) -> dict:
        """Rows written and published, epochs and files published, the last published epoch,
        and what recovery published or discarded."""
        return self._engine.metrics()["sinks"][self.name]

    def files(self) -> list[str]:
        """The published files of a file sink, oldest epoch first."""
        if not isinstance(self.target, FileTarget):
            raise QueryError(f"sink {self.name!r} is a callback; it writes no files")
        ext = _EXTENSIONS[self.target.format]
        try:
            names = sorted(n for n in os.listdir(self.target.path) if n.startswith("part-") and n.endswith(ext))
        except FileNotFoundError:
            return []
        return [os.path.join(self.target.path, n) for n in names]

    def read(self) -> pa.Table:
        """Every published row of a file sink as one pyarrow Table (empty if none yet)."""
        paths = self.files()
        if not paths:
            return pa.table({})
        if self.target.format == "parquet":  # type: ignore[union-attr]
            import pyarrow.parquet as pq

            tables = [pq.read_table(p) for p in paths]
        else:
            import pyarrow.json as pj

            tables = [pj.read_json(p) for p in paths]
        return pa.concat_tables(tables, promote_options="default")

    def late(self) -> "QueryResult":
        """Late rows of the query (``late="side"`` only): they are not sent to the sink."""
        from .query import QueryResult

        if not self._has_late_output:
            raise QueryError("this query drops late rows; use .window(..., late='side') to collect them")
        return QueryResult(self._engine, self.name, late=True)

    def __repr__(self) -> str:
        what = f"files {self.target.path!r} ({self.target.format})" if isinstance(self.target, FileTarget) else "a callback"
        return f"<SinkHandle {self.name!r} -> {what}>"


def check_target(target: object) -> Union[FileTarget, Callback]:
    """``target`` if it can be a sink, else a QueryError saying what can."""
    if isinstance(target, FileTarget) or callable(target):
        return target  # type: ignore[return-value]
    raise QueryError(
        "sink() takes lm.files(path, format=...) or a callable fn(epoch, table); "
        f"got {target!r}"
    )


def deliver(name: str, fn: Callback, native: Any) -> None:
    """Hands every committed, unacknowledged epoch of callback sink ``name`` to ``fn``,
    acknowledging each once ``fn`` returns."""
    while True:
        nxt = native.sink_next(name)
        if nxt is None:
            return
        epoch, table = nxt
        try:
            fn(epoch, table)
        except Exception as e:
            raise SinkError(
                f"the callback of sink {name!r} raised on epoch {epoch}: {e!r}; "
                "the epoch is delivered again at the next call"
            ) from e
        native.sink_ack(name, epoch)
