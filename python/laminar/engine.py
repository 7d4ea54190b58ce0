"""The :class:`Engine` and its :class:`Source` objects."""

from __future__ import annotations

import glob
import itertools
import json
import os
import tempfile
import threading
import weakref
from typing import Any, Callable, Optional, Sequence, Union

import pyarrow as pa

from . import _laminar
from ._durations import Duration, to_millis
from ._input import to_arrow
from .errors import EngineClosedError, NameConflictError, QueryError
from .query import QueryResult, Stream
from .sink import Callback, FileTarget, SinkHandle, check_target, deliver
from .specs import Watermark, bounded_delay

if False:  # typing only
    from .server import Server  # noqa: F401

__all__ = ["Engine", "Source", "PushReceipt", "LookupTable", "repair_state_dir"]


def _name_for(name: Optional[str], prefix: str, counter: Any, taken: dict) -> str:
    """``name`` checked, or the next free ``<prefix><n>``."""
    if name is None:
        name = f"{prefix}{next(counter)}"
        while name in taken:
            name = f"{prefix}{next(counter)}"
    elif not isinstance(name, str) or not name:
        what = "query" if prefix == "q" else prefix
        raise QueryError(f"a {what} name must be a non-empty string, got {name!r}")
    return name


class Engine:
    """An embedded streaming engine.

    >>> eng = Engine()
    >>> trades = eng.source("trades", time="ts", watermark=bounded_delay("200ms"))

    Define queries on its sources, ``collect()`` them, ``push`` data, and ``flush()`` at the end
    of input. Pushing runs the engine with the GIL released; results completed by a push are
    available to ``poll()`` as soon as ``push`` returns.

    ``cores``: with 1 (the default) queries run on the pushing thread. With ``cores=N > 1``
    they run on N native threads, one reactor each, pinned to CPUs where allowed (``pin``):
    each pushed batch is split by the hash of the keys its queries group or join on and each
    part goes to the core that owns those keys; watermarks go to every core. ``push`` then
    returns once the batch is queued, and ``poll()``/``collect()``/``metrics()`` first wait
    for the cores to finish what was pushed before, so results are the same as with one core
    (row order across keys may differ). Any number of Python threads may push at once.

    ``backpressure`` (cores > 1): what ``push`` does when the cores are behind, i.e. a core
    already has ``credits`` routed batches waiting plus what it can borrow from the shared
    ``floating_credits``: ``"block"`` waits (the GIL is released meanwhile), ``"drop"``
    discards the batch (counted as ``dropped_rows`` in ``metrics()``; it does not move the
    watermark), ``"error"`` raises :class:`~laminar.errors.BackpressureError` and applies
    nothing of that batch. A backpressured core accepts batches again once its backlog is
    down to ``low_watermark`` (default ``credits // 2``).

    ``state_dir``: makes the pipeline durable. Every push (and table update, flush and
    processing-time step) is written to a write-ahead log in that directory before ``push``
    returns (group commit with ``fdatasync``; ``fsync=False`` leaves it to the OS: a killed
    process still loses nothing, a power cut may lose the last pushes, and on a disk whose
    sync costs more than processing a batch it is about twice as fast), and a
    checkpoint of every source and every query's state on every core is taken every
    ``checkpoint_every`` (``None``: only on :meth:`checkpoint`), keeping the last
    ``retain_checkpoints``. Creating an engine again on the same directory, with the same
    sources and queries, recovers: at the first push or poll (or :meth:`recover`) it loads the
    newest checkpoint and replays the log after it, so watermarks and open windows are as they
    were. Define every source, query and table before pushing. A directory is used by one
    engine at a time (a lock file). With durability, ``backpressure`` must be ``"block"`` (a
    dropped batch would be in the log). Producers that may retry after a crash pass ``seq``
    to :meth:`Source.push` and read :meth:`Source.position` to know where to resume. A
    producer that does not need each push durable before the next uses :meth:`Source.submit`
    (several pushes in flight share one sync, and the disk's wait overlaps the next push:
    where a sync costs more than processing a batch, about twice as fast) and :meth:`sync`.

    ``recovery``: what to do with a damaged write-ahead log at startup. ``"point_in_time"``
    (default) cuts the log at the first invalid record (a torn tail after a crash: records
    never acknowledged) and reports it in ``recover()["log_cut"]``;
    ``"tolerate_corrupted_tail"`` accepts damage only at the very end of the last segment and
    refuses anything else; ``"absolute_consistency"`` refuses any damage. A refused directory
    raises :class:`~laminar.errors.DurabilityError`; :func:`repair_state_dir` is the repair.
    """

    def __init__(
        self,
        cores: int = 1,
        state_dir: Optional[str] = None,
        *,
        backpressure: str = "block",
        credits: int = 32,
        floating_credits: int = 32,
        low_watermark: Optional[int] = None,
        pin: bool = True,
        inbox_capacity: int = 1024,
        checkpoint_every: Optional[Duration] = "1s",
        retain_checkpoints: int = 3,
        fsync: bool = True,
        recovery: str = "point_in_time",
        _wal_disk_budget: Optional[int] = None,
    ) -> None:
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise QueryError(f"cores must be a positive int, got {cores!r}")
        if state_dir is not None:
            if not isinstance(state_dir, (str, os.PathLike)):
                raise QueryError(f"state_dir must be a path, got {state_dir!r}")
            state_dir = os.fspath(state_dir)
            if backpressure != "block":
                raise QueryError("with a state_dir, backpressure must be 'block': a dropped or refused batch would already be in the log")
        if isinstance(retain_checkpoints, bool) or not isinstance(retain_checkpoints, int) or retain_checkpoints < 1:
            raise QueryError(f"retain_checkpoints must be an int >= 1, got {retain_checkpoints!r}")
        checkpoint_every_ms = None if checkpoint_every is None else to_millis(checkpoint_every, "checkpoint_every", allow_zero=False)
        if backpressure not in ("block", "drop", "error"):
            raise QueryError(f"backpressure must be 'block', 'drop' or 'error', got {backpressure!r}")
        for what, v, least in (("credits", credits, 1), ("floating_credits", floating_credits, 0), ("inbox_capacity", inbox_capacity, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise QueryError(f"{what} must be an int >= {least}, got {v!r}")
        if low_watermark is not None and (isinstance(low_watermark, bool) or not isinstance(low_watermark, int) or not 0 <= low_watermark < credits + floating_credits):
            raise QueryError(f"low_watermark must be an int in [0, credits + floating_credits), got {low_watermark!r}")
        self.cores = cores
        self._native = _laminar.Engine(
            inbox_capacity=inbox_capacity,
            cores=cores,
            backpressure=backpressure,
            credits=credits,
            floating_credits=floating_credits,
            low_watermark=low_watermark,
            pin=bool(pin),
            state_dir=state_dir,
            checkpoint_every_ms=checkpoint_every_ms,
            retain_checkpoints=retain_checkpoints,
            fsync=bool(fsync),
            recovery=recovery,
            wal_disk_budget=_wal_disk_budget,
        )
        self.state_dir = state_dir
        if state_dir is not None:
            # Files of a killed engine's scratch stores (the native engine holds the directory's
            # lock now, so none is in use); checkpoints hold what they held.
            for leftover in glob.glob(os.path.join(self._scratch_dir(), "scratch-*.state")):
                os.remove(leftover)
        # The engine never holds its source, result or sink handles strongly (they refer to
        # it): no reference cycle, so a dropped engine is freed, its core threads stopped, at
        # once rather than at the next full run of the cycle collector. What it must keep
        # (names, specs, tables, callbacks) it holds as plain data.
        self._source_specs: dict[str, dict] = {}
        self._sources: "weakref.WeakValueDictionary[str, Source]" = weakref.WeakValueDictionary()
        self._query_names: set[str] = set()
        self._tables: dict[str, LookupTable] = {}
        self._callbacks: dict[str, Callback] = {}
        self._delivery = threading.RLock()
        self._delivering = False
        self._names = itertools.count(1)
        self._table_names = itertools.count(1)
        self._closed = False
        self._servers: list = []

    def _scratch_dir(self) -> str:
        """Where operators keep state files that checkpoints copy (``dedup(state="mmap")``):
        ``<state_dir>/scratch``, emptied when the engine opens (the state directory's lock
        makes every file there a leftover of an engine that is gone), else the system's
        temporary directory."""
        if self.state_dir is None:
            return tempfile.gettempdir()
        return os.path.join(os.fspath(self.state_dir), "scratch")

    # --- sources ---------------------------------------------------------------------------
    def source(
        self,
        name: str,
        *,
        time: str,
        watermark: Optional[Watermark] = None,
        schema: Optional[pa.Schema] = None,
        idle_timeout: Optional[Duration] = None,
        max_future: Optional[Duration] = "1d",
    ) -> "Source":
        """Declares an input stream.

        ``time``: the event-time column, int64 epoch milliseconds or a timestamp (any unit,
        with or without a time zone). ``watermark``: how far out of order data may arrive
        (default: in order, ``bounded_delay("0ms")``). ``schema``: fixes the schema up front
        (otherwise the first push does). ``idle_timeout``: after this long without data
        (processing time) the source stops holding back the watermark of queries that read it
        together with other sources. ``max_future``: rows more than this ahead of the wall clock
        do not move the watermark (they are still processed, and counted as ``future_rows`` in
        ``metrics()``), so one bogus far-future timestamp cannot make all later data late.
        None disables the rule.
        """
        if not isinstance(name, str) or not name:
            raise QueryError(f"a source needs a non-empty name, got {name!r}")
        if name in self._source_specs:
            raise NameConflictError(f"source '{name}' already exists")
        if not isinstance(time, str) or not time:
            raise QueryError(f"time= names the event-time column, got {time!r}")
        watermark = watermark if watermark is not None else bounded_delay(0)
        if not isinstance(watermark, Watermark):
            raise QueryError(f"watermark= takes lm.bounded_delay(...), lm.ascending() or lm.punctuated(...), got {watermark!r}")
        if schema is not None and not isinstance(schema, pa.Schema):
            raise QueryError(f"schema= takes a pyarrow.Schema, got {type(schema).__name__}")
        spec = dict(
            time=time,
            watermark=watermark.kind,
            delay_ms=watermark.delay_ms,
            punctuation_column=watermark.column,
            max_future_ms=None if max_future is None else to_millis(max_future, "max_future"),
            idle_timeout_ms=None if idle_timeout is None else to_millis(idle_timeout, "idle_timeout", allow_zero=False),
            schema=schema,
        )
        self._check_open()
        return self._declare(name, spec)

    def _declare(self, name: str, spec: dict) -> "Source":
        """Declares source ``name`` with ``spec`` (also used by :func:`laminar.run` to copy
        another engine's sources)."""
        self._native.add_source(name, **spec)
        self._source_specs[name] = spec
        return self._source(name)

    def _source(self, name: str) -> "Source":
        """The handle of declared source ``name`` (a new one if the last was dropped)."""
        src = self._sources.get(name)
        if src is None:
            src = self._sources[name] = Source(self, name, self._source_specs[name])
        return src

    # --- lookup tables ---------------------------------------------------------------------
    def table(
        self,
        name: Optional[str],
        data: Any,
        *,
        on: Union[str, Sequence[str]],
        ttl: Optional[Duration] = None,
        loader: Optional[Callable[[pa.Table], Any]] = None,
    ) -> "LookupTable":
        """Declares a reference table for :meth:`Stream.lookup`, keyed on ``on``.

        ``data``: pandas/polars/pyarrow/dict (when a key repeats, the last row wins).
        ``ttl``: entries older than this (processing time since loaded) count as missing.
        ``loader(keys)``: called at most once per push with a pyarrow Table of the distinct
        keys of that push that are missing or expired; the rows it returns (any table-like with
        the table's columns) are added. Without a loader, missing keys give nulls (left lookup)
        or drop the row (inner).
        """
        self._check_open()
        name = _name_for(name, "table", self._table_names, self._tables)
        if name in self._tables:
            raise NameConflictError(f"table '{name}' already exists")
        keys = [on] if isinstance(on, str) else list(on)
        if loader is not None and not callable(loader):
            raise QueryError(f"loader= takes a callable keys_table -> table, got {loader!r}")
        ttl_ms = None if ttl is None else to_millis(ttl, "lookup ttl", allow_zero=False)
        data = to_arrow(data)
        if not isinstance(data, (pa.Table, pa.RecordBatch)):
            data = pa.table(data)
        self._native.add_table(name, keys, data, ttl_ms)
        handle = LookupTable(self, name, keys, loader, ttl_ms, data)
        self._tables[name] = handle
        return handle

    def update_table(self, name: str, data: Any) -> None:
        """Replaces every row of lookup table ``name`` while running; rows processed from now
        on see the new data."""
        self._check_open()
        if name not in self._tables:
            raise NameConflictError(f"unknown lookup table {name!r}; tables: {sorted(self._tables)}")
        data = to_arrow(data)
        if not isinstance(data, (pa.Table, pa.RecordBatch)):
            data = pa.table(data)
        self._native.update_table(name, data, True)
        self._tables[name]._data = data
        self._deliver()

    def _load_missing(self, source: str, data: Any) -> None:
        """Calls the loaders of the tables that ``source``'s rows are looked up in, once each,
        with the keys of ``data`` they lack, and adds what they return."""
        for t in self._tables.values():
            if t.loader is None or source not in t._readers:
                continue
            keys = self._native.table_misses(t.name, data)
            if keys is None or keys.num_rows == 0:
                continue
            rows = t.loader(keys)
            if rows is not None:
                self._native.update_table(t.name, to_arrow(rows), False)

    # --- queries ---------------------------------------------------------------------------
    def _add_query(self, name: Optional[str], plan: dict, *, late: bool) -> QueryResult:
        self._check_open()
        name = _name_for(name, "q", self._names, self._query_names)
        self._native.add_query(name, json.dumps(plan))
        self._query_names.add(name)
        return QueryResult(self, name, has_late_output=late)

    def _add_sink(self, name: Optional[str], plan: dict, target: object, *, late: bool) -> SinkHandle:
        self._check_open()
        target = check_target(target)
        name = _name_for(name, "q", self._names, self._query_names)
        self._native.add_query(name, json.dumps(plan))
        self._query_names.add(name)
        if isinstance(target, FileTarget):
            self._native.add_file_sink(name, name, target.path, target.format, target.disk_budget)
        else:
            self._native.add_callback_sink(name, name)
            self._callbacks[name] = target
        return SinkHandle(self, name, target, late)

    def _deliver(self) -> None:
        """Runs callback sinks on the epochs committed so far (never re-entered: a callback
        that calls the engine does not deliver recursively)."""
        if not self._callbacks:
            return
        with self._delivery:
            if self._delivering:
                return
            self._delivering = True
            try:
                for name, fn in self._callbacks.items():
                    deliver(name, fn, self._native)
            finally:
                self._delivering = False

    # --- lifecycle -------------------------------------------------------------------------
    def flush(self) -> None:
        """End of input: every source ends, every open window closes and emits. Pushing
        afterwards raises :class:`~laminar.errors.EngineClosedError`. Sinks publish every
        result (with a ``state_dir``, through a checkpoint)."""
        self._native.flush()
        self._deliver()

    def sync(self) -> None:
        """Waits until everything pushed so far, by any thread to any source (and every table
        update and flush), is durable in the write-ahead log: what :meth:`Source.submit`
        leaves to the caller. Returns at once without a ``state_dir``. Raises
        :class:`~laminar.errors.DurabilityError` when the log cannot make it durable, and
        :class:`~laminar.errors.EngineClosedError` (naming that error) once the engine has
        stopped on one."""
        self._check_open()
        self._native.pending_all().wait()

    def checkpoint(self) -> int:
        """Takes a checkpoint now (needs a ``state_dir``): every source's progress and every
        query's state on every core, after everything pushed so far. Returns its id.

        Raises :class:`~laminar.errors.DurabilityError` when the pipeline cannot be
        checkpointed (the log then keeps everything, so nothing is lost)."""
        self._check_open()
        cid = self._native.checkpoint()
        self._deliver()
        return cid

    def recover(self) -> dict:
        """Recovers from ``state_dir`` now, if not done yet: loads the newest checkpoint and
        replays the log after it. It also runs by itself at the first push or poll; call it
        first to read :meth:`Source.position` before pushing. Returns ``checkpoint`` (the id
        loaded, or None), ``replayed_records``, ``replay_failures`` (inputs that had failed
        live and failed again), ``seconds`` and ``log_cut``: what a torn or damaged log tail
        lost (None if nothing). A producer re-pushes from ``Source.position()``."""
        self._check_open()
        report = self._native.recover()
        self._deliver()
        return report

    def close(self) -> None:
        """Releases the engine. Results already collected stay readable."""
        if not self._closed:
            self._closed = True
            for srv in self._servers:
                srv.close()
            try:
                self._native.close()
            finally:
                self._deliver()

    def serve(self, host: str = "127.0.0.1", port: int = 0, *, token: Optional[str] = None,
              token_file: Optional[Union[str, "os.PathLike[str]"]] = None, max_connections: int = 256,
              max_payload: int = 16 * 1024 * 1024, max_batch_rows: Optional[int] = None,
              max_frames_per_sec: Optional[int] = None, max_bytes_per_sec: Optional[int] = None,
              max_output_bytes: int = 16 * 1024 * 1024, handshake_timeout: float = 10.0,
              shutdown_grace: float = 2.0) -> "Server":
        """Serves this engine to remote producers and consumers (:func:`laminar.connect`) over
        the wire protocol (``docs/protocol.md``), on one native I/O thread, until the returned
        :class:`~laminar.server.Server` is closed (or the engine is).

        ``port=0`` picks a free port (see ``Server.address``). ``token`` / ``token_file``: the
        token clients must present (without one, any client is accepted: serve on loopback or a
        private network only). Limits: ``max_connections`` (more are refused),
        ``max_payload`` (bytes per frame), ``max_batch_rows`` (rows per push),
        ``max_frames_per_sec`` / ``max_bytes_per_sec`` (per connection), ``max_output_bytes``
        (unsent output per connection before backpressure applies).

        A query subscribed remotely is read by its subscribers: do not also poll it locally
        (rows go to one reader or the other). The server dedups retried pushes per producer
        in memory; the table does not survive a restart.
        """
        from .server import Server, read_token_file

        self._check_open()
        if token is not None and token_file is not None:
            raise QueryError("give token or token_file, not both")
        if token_file is not None:
            token = read_token_file(token_file)
        if token is not None and not token:
            raise QueryError("token must not be empty (omit it to serve without a token)")
        native = self._native.serve(
            host=host, port=int(port), token=token, max_connections=int(max_connections),
            max_payload=int(max_payload), max_batch_rows=max_batch_rows,
            max_frames_per_sec=max_frames_per_sec, max_bytes_per_sec=max_bytes_per_sec,
            max_output_bytes=int(max_output_bytes), handshake_timeout_ms=int(handshake_timeout * 1000),
            shutdown_grace_ms=int(shutdown_grace * 1000),
        )
        srv = Server(native)
        self._servers.append(srv)
        return srv

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def metrics(self) -> dict:
        """Counters: per source (rows, watermark, idle, dropped rows, ...) and per query (rows
        in/out, late rows dropped or side-output, open windows, live and peak groups, rows held
        in join or dedup state, duplicates dropped, ...;
        summed over cores, with how each input is spread over them). With ``cores > 1`` also
        ``cores`` (per core: rows and batches processed, queue depth, credits in use, whether
        pinned or backpressured, busy seconds) and ``backpressure`` (policy, credits acquired,
        released, blocked, dropped, refused). With a ``state_dir`` also ``durability`` (WAL
        records, bytes and syncs, checkpoints taken and skipped, what recovery did). ``sinks``:
        per sink, rows written and published, epochs and files published."""
        self._native.check_idle()
        return self._native.metrics()

    @property
    def sources(self) -> dict[str, "Source"]:
        """The declared sources by name."""
        return {name: self._source(name) for name in self._source_specs}

    def __repr__(self) -> str:
        return f"<laminar.Engine sources={list(self._source_specs)} queries={sorted(self._query_names)}>"


class Source(Stream):
    """An input stream of an :class:`Engine`. Push data with :meth:`push`; build queries on it
    like on any :class:`~laminar.query.Stream`."""

    def __init__(self, engine: Engine, name: str, spec: dict) -> None:
        super().__init__(engine, (), ())
        self.name = name
        self._spec = spec

    def push(self, data: Any, seq: Optional[int] = None) -> bool:
        """Pushes rows: a pandas or polars DataFrame, a pyarrow Table or RecordBatch, anything
        with the Arrow PyCapsule interface, or a dict of columns.

        The data is validated whole (schema, time column) before any row is applied, then
        processed with the GIL released. Results it completes are ready when this returns.
        With a ``state_dir`` the push is durable in the write-ahead log when this returns
        (:meth:`submit` does not wait for that).

        ``seq``: the producer's sequence number for this push (increasing). A push whose
        ``seq`` is at or below the highest applied is a retry and is ignored: returns False
        (True when applied). After a restart, :meth:`position` tells where to resume.
        """
        data = self._prepare(data, seq)
        applied = self._engine._native.push(self.name, data, seq)
        self._engine._deliver()
        return applied

    def submit(self, data: Any, seq: Optional[int] = None) -> "PushReceipt":
        """:meth:`push` without waiting for durability: the rows are applied (their results
        are ready) and written to the write-ahead log when this returns, and the returned
        :class:`PushReceipt` tells when the log record is durable (``result()`` waits).

        One producer can so keep several pushes in flight: their records share ``fdatasync``
        calls (group commit) and the disk's wait overlaps the next push's processing,
        instead of one sync per push. A push counts as acknowledged, for a producer that may
        crash, only once its receipt's ``result()`` returned; after a crash, resume from
        :meth:`position` (with ``seq``) as with ``push``. :meth:`Engine.sync` waits for every
        push submitted so far. The log holds at most 64 MiB not yet written; beyond that,
        ``submit`` waits for the disk. Without a ``state_dir`` the receipt is done at once.

        Example, with at most 8 pushes not yet durable::

            inflight = collections.deque()
            for k, batch in enumerate(batches):
                inflight.append(src.submit(batch, seq=k))
                if len(inflight) > 8:
                    inflight.popleft().result()
            eng.sync()
        """
        data = self._prepare(data, seq)
        applied, commit = self._engine._native.submit(self.name, data, seq)
        self._engine._deliver()
        return PushReceipt(applied, commit)

    def _prepare(self, data: Any, seq: Optional[int]) -> Any:
        """Checks ``seq`` and the engine, converts ``data`` to Arrow and loads what lookup
        tables read by this source miss (their loaders): what every push does first."""
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise QueryError(f"seq must be a non-negative int, got {seq!r}")
        self._engine._check_open()
        data = to_arrow(data)
        if any(t.loader is not None and self.name in t._readers for t in self._engine._tables.values()):
            if not isinstance(data, (pa.Table, pa.RecordBatch)):
                data = pa.table(data)  # read a one-shot stream once, for the loader and the push
            self._engine._load_missing(self.name, data)
        return data

    def position(self) -> dict:
        """Where this source stands: ``rows`` and ``batches`` applied and ``last_seq``, the
        highest ``seq`` pushed with (None if none). After recovery, where the previous run
        left it: a restarted producer resumes after ``last_seq``."""
        self._engine._check_open()
        return self._engine._native.source_position(self.name)

    @property
    def schema(self) -> Optional[pa.Schema]:
        """The source's schema (None until declared or first pushed)."""
        return self._engine._native.source_schema(self.name)

    def __repr__(self) -> str:
        return f"<laminar.Source {self.name!r} time={self._spec['time']!r}>"


class PushReceipt:
    """What :meth:`Source.submit` returns: a push that is applied and in the write-ahead log,
    and maybe not durable yet.

    ``applied``: False when the push's ``seq`` showed it a retry of one applied before.
    """

    __slots__ = ("applied", "_commit")

    def __init__(self, applied: bool, commit: Any) -> None:
        self.applied = applied
        self._commit = commit

    def done(self) -> bool:
        """Whether :meth:`result` would return (or raise) without waiting."""
        return self._commit.done()

    def result(self) -> bool:
        """Waits, with the GIL released, until the push is durable; returns ``applied``.

        Raises :class:`~laminar.errors.DurabilityError` when the log could not make it
        durable (a disk error or a full disk): the engine is then stopped, and a new
        ``Engine`` on the same ``state_dir`` recovers what was durable."""
        self._commit.wait()
        return self.applied

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<laminar.PushReceipt applied={self.applied} {state}>"


class LookupTable:
    """A reference table of an :class:`Engine` (see :meth:`Engine.table`)."""

    def __init__(self, engine: Engine, name: str, on: list[str], loader: Optional[Callable[[pa.Table], Any]],
                 ttl_ms: Optional[int], data: Any):
        # Weak: the engine holds its tables (their loaders run on its pushes).
        self._engine_ref = weakref.ref(engine)
        self.name = name
        self.on = on
        self.loader = loader
        self._ttl_ms = ttl_ms
        self._data = data
        self._readers: set[str] = set()

    def _declare_in(self, engine: Engine) -> None:
        """Declares this table, with its current data, in another engine (for ``lm.run``)."""
        t = engine.table(self.name, self._data, on=self.on, ttl=self._ttl_ms, loader=self.loader)
        t._readers = set(self._readers)

    def update(self, data: Any) -> None:
        """Replaces every row of the table (same as ``Engine.update_table(name, data)``)."""
        engine = self._engine_ref()
        if engine is None:
            raise EngineClosedError(f"the engine of lookup table '{self.name}' no longer exists")
        engine.update_table(self.name, data)

    def __repr__(self) -> str:
        return f"<laminar.LookupTable {self.name!r} on={self.on}>"


def repair_state_dir(state_dir: Union[str, "os.PathLike[str]"]) -> dict:
    """Repairs a state directory that an :class:`Engine` refused to open: cuts the
    write-ahead log after its last valid record, and if the newest checkpoint (or the
    manifest naming it) is damaged or missing, falls back to the newest older checkpoint that
    verifies (the bad files are renamed ``*.damaged-<time>``, never deleted). Run it only
    after reading the error that pointed here: what it cuts is lost, and a producer re-pushes
    from :meth:`Source.position`. The directory must not be in use.

    Returns ``log_cut`` (what the log lost, or None), ``log_records`` (left in the log),
    ``checkpoint`` (the one recovery now starts from, or None) and ``fell_back``.
    """
    return _laminar.repair_state_dir(os.fspath(state_dir))
