"""A plain-Python reference model of laminar's tumbling windows, written for clarity, not
speed. The property tests compare the engine against it.

Semantics modelled (the engine's contract):
- watermark after a batch = max event time seen so far - delay, never decreasing, none before
  the first batch;
- a row is late iff its window [s, s + size) has closed: s + size + lateness <= the watermark
  in force *before* the row's batch;
- windows still open at the end of input close at flush;
- aggregates skip nulls; over no non-null value they are None, except count (0);
  first/last are the first/last non-null values in arrival order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Optional, Sequence


def window_start(ts: int, size: int, offset: int = 0) -> int:
    return ts - ((ts - offset) % size)  # Python's % is the floor modulo


def _agg(func: str, values: list) -> Any:
    present = [v for v in values if v is not None]
    if func == "count_rows":
        return len(values)
    if func == "count":
        return len(present)
    if not present:
        return None
    if func == "sum":
        return sum(present)
    if func == "min":
        return min(present)
    if func == "max":
        return max(present)
    if func == "avg":
        return sum(present) / len(present)
    if func == "first":
        return present[0]
    if func == "last":
        return present[-1]
    raise ValueError(func)


def tumbling(
    batches: Sequence[Sequence[dict]],
    *,
    time: str,
    keys: Sequence[str],
    aggs: dict[str, tuple[str, Optional[str]]],
    size: int,
    offset: int = 0,
    lateness: int = 0,
    delay: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Returns (result rows, late rows). ``aggs``: name -> (func, column); func "count_rows"
    counts rows, "count" counts non-null values of the column."""
    wm: Optional[int] = None
    max_seen: Optional[int] = None
    groups: dict[tuple, list[dict]] = defaultdict(list)
    late: list[dict] = []
    for batch in batches:
        for row in batch:
            s = window_start(row[time], size, offset)
            if wm is not None and s + size + lateness <= wm:
                late.append(row)
                continue
            groups[(s, tuple(row[k] for k in keys))].append(row)
        if batch:
            m = max(r[time] for r in batch)
            max_seen = m if max_seen is None else max(max_seen, m)
            cand = max_seen - delay
            wm = cand if wm is None else max(wm, cand)
    out = []
    for (s, key), rows in groups.items():
        row = {"window_start": s, "window_end": s + size}
        row.update(dict(zip(keys, key)))
        for name, (func, column) in aggs.items():
            row[name] = _agg(func, [r[column] for r in rows] if column else rows)
        out.append(row)
    return out, late


def rows_of(table) -> list[dict]:
    """A pyarrow Table as a list of row dicts."""
    return table.to_pylist()


def canonical(rows: Iterable[dict], columns: Sequence[str]) -> list[tuple]:
    """Rows as sorted tuples of the given columns, floats rounded for comparison."""
    def norm(v):
        return round(v, 6) if isinstance(v, float) else v
    return sorted((tuple(norm(r[c]) for c in columns) for r in rows), key=repr)
