"""``lm.run``: the one-shot form for finite data (notebooks, tests, benchmarks)."""

from __future__ import annotations

from typing import Any, Mapping, Union

import pyarrow as pa

from .errors import QueryError
from .query import Query, Stream

__all__ = ["run"]


def run(query: Union[Query, Stream], data: Union[Any, Mapping[str, Any]]) -> pa.Table:
    """Runs ``query`` over finite ``data`` in a fresh engine and returns every result.

    ``data`` is what ``Source.push`` accepts, or, for a query over several sources, a dict
    ``{source_name: data}``. The sources are declared in the fresh engine exactly as in the
    query's own engine (time column, watermark, schema); the query's engine is not touched.
    Input is pushed source by source, then flushed, so all windows close. Lookup tables the
    query reads are declared again from their current data (and loaders).
    """
    from .engine import Engine  # import cycle: engine imports query

    if not isinstance(query, (Query, Stream)):
        raise QueryError(f"run() takes a query built from a source, got {type(query).__name__}")
    sources = {s.name: s for s in query._sources()}
    if isinstance(data, Mapping) and set(data) <= set(sources) and data:
        feeds = dict(data)
    elif len(sources) == 1:
        feeds = {next(iter(sources)): data}
    else:
        raise QueryError(
            f"the query reads sources {sorted(sources)}; pass data as a dict {{source_name: data}}"
        )
    with Engine() as eng:
        for name, src in sources.items():
            eng._declare(name, src._spec)
        for t in query._engine._tables.values():
            t._declare_in(eng)
        result = query._register("run", eng)
        for name, d in feeds.items():
            eng.sources[name].push(d)
        eng.flush()
        return result.to_arrow()
