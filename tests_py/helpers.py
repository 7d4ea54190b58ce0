"""Helpers shared by the tests: running a query over explicit batches."""

from __future__ import annotations

import time as _time
from typing import Callable, Optional, Sequence

import pyarrow as pa

import laminar as lm


def table_from_rows(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def run_in_batches(
    build: Callable[[lm.Source], lm.Query],
    batches: Sequence[pa.Table],
    *,
    time: str = "ts",
    watermark: Optional[lm.Watermark] = None,
    schema: Optional[pa.Schema] = None,
    pause: Optional[Callable[[], float]] = None,
    with_late: bool = False,
):
    """Declares a source, builds the query with ``build``, pushes each batch (sleeping
    ``pause()`` seconds between pushes if given), flushes, returns (results, late or None, metrics)."""
    eng = lm.Engine()
    src = eng.source("s", time=time, watermark=watermark, schema=schema)
    q = build(src)
    out = q.collect("q")
    for b in batches:
        src.push(b)
        if pause is not None:
            _time.sleep(pause())
    eng.flush()
    late = out.late().to_arrow() if with_late else None
    metrics = eng.metrics()["queries"]["q"]
    return out.to_arrow(), late, metrics
