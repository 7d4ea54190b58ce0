"""laminar: an embedded streaming engine for Python.

Define event-time windows with a fluent, lazy builder, push pandas / polars / pyarrow data, and
get results computed by a vectorised Rust engine::

    import laminar as lm
    eng = lm.Engine()
    s = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    q = s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count(), total=lm.sum("value"))
    out = q.collect()
    s.push(df)
    eng.flush()
    out.to_pandas()      # window_start, window_end, key, n, total

or, for finite data, ``lm.run(q, df)``.
"""

from . import errors
from ._durations import Duration
from ._laminar import __version__
from .client import Client, Subscription, connect
from .engine import Engine, LookupTable, PushReceipt, Source, repair_state_dir
from .errors import LaminarError
from .expr import Expr, col, lit
from .query import GroupedWindow, Query, QueryResult, Stream, WindowedStream
from .run import run
from .server import Server
from .sink import SinkHandle, files
from .specs import (
    Agg,
    Emit,
    Watermark,
    Window,
    ascending,
    avg,
    bounded_delay,
    changelog,
    count,
    final,
    first,
    last,
    max,
    min,
    on_update,
    on_window_close,
    periodic,
    punctuated,
    session,
    sliding,
    sum,
    tumbling,
)

__all__ = [
    "__version__", "errors", "LaminarError", "Duration",
    "Engine", "Source", "PushReceipt", "LookupTable", "Stream", "WindowedStream", "GroupedWindow", "Query", "QueryResult", "run",
    "files", "SinkHandle", "repair_state_dir", "connect", "Client", "Subscription", "Server",
    "Expr", "col", "lit",
    "Window", "tumbling", "sliding", "session", "Watermark", "bounded_delay", "ascending", "punctuated",
    "Agg", "count", "sum", "min", "max", "avg", "first", "last",
    "Emit", "on_window_close", "final", "on_update", "periodic", "changelog",
]
