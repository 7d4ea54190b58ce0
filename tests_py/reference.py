"""Plain-Python reference models of laminar, written for clarity, not speed: tumbling windows
(this docstring), then sliding and session windows, the emit strategies, interval joins and
lookup joins, each following docs/SEMANTICS.md. The property tests compare the engine against
them; tests_py/test_reference_models.py checks the models on worked examples.

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


def split(rows: list, cuts: Sequence[int]) -> list[list]:
    """``rows`` cut into consecutive batches at the (unsorted) ``cuts``, as the models take them."""
    out, prev = [], 0
    for c in sorted(cuts) + [len(rows)]:
        out.append(rows[prev:c])
        prev = c
    return out


def rows_of(table) -> list[dict]:
    """A pyarrow Table as a list of row dicts."""
    return table.to_pylist()


def canonical(rows: Iterable[dict], columns: Sequence[str]) -> list[tuple]:
    """Rows as sorted tuples of the given columns, floats rounded for comparison."""
    def norm(v):
        return round(v, 6) if isinstance(v, float) else v
    return sorted((tuple(norm(r[c]) for c in columns) for r in rows), key=repr)


# =============================================================================================
# Sliding and session windows, emit strategies (docs/SEMANTICS.md). Everything below is
# simulated batch by batch: rows are judged against the watermark in force *before* their
# batch, then the batch moves the watermark. Rows are numbered in arrival order (``seq``) so
# that first/last follow arrival order even when sessions merge.
# =============================================================================================

FLUSH = object()
"""Marks the watermark of the flush step (every input ended: +infinity)."""


class SourceWatermark:
    """One source's watermark: max event time seen - delay; None before the first row; never
    decreases."""

    def __init__(self, delay: int):
        self.delay = delay
        self.value: Optional[int] = None

    def advance(self, times: Sequence[int]) -> None:
        if times:
            cand = max(times) - self.delay
            self.value = cand if self.value is None else max(self.value, cand)


def combined_watermark(marks: Sequence[SourceWatermark]) -> Optional[int]:
    """A query's watermark: the minimum over its inputs, None while any input has none."""
    if any(m.value is None for m in marks):
        return None
    return min(m.value for m in marks)


def sliding_starts(t: int, size: int, slide: int, offset: int = 0) -> list[int]:
    """Starts of every window ``[s, s + size)`` with ``s = offset (mod slide)`` holding ``t``,
    latest first."""
    s = window_start(t, slide, offset)  # the latest aligned start <= t
    starts = []
    while s + size > t:
        starts.append(s)
        s -= slide
    return starts


def sessions_of(rows: Sequence[tuple[int, dict]], time: str, gap: int) -> list[list[tuple[int, dict]]]:
    """Splits ``(seq, row)`` pairs of one key into sessions: sorted by time, a new session starts
    where the time moves on by ``gap`` or more from the previous row (so rows closer than
    ``gap`` chain together transitively)."""
    out: list[list[tuple[int, dict]]] = []
    for item in sorted(rows, key=lambda sr: (sr[1][time], sr[0])):
        if out and item[1][time] - out[-1][-1][1][time] < gap:
            out[-1].append(item)
        else:
            out.append([item])
    return out


class Step:
    """The state after one input batch (or the final flush).

    ``windows``: every (window_start, window_end, key tuple) with its ``(seq, row)`` pairs, as
    they stand after this step (closed windows included; for sessions, the sessions that exist
    now, after merging). ``changed``: the windows (as they stand now) that this batch added a
    row to. ``late``: the batch's late rows. ``wm_before`` / ``wm_after``: the watermark in force
    before the batch and after it (``FLUSH`` for the flush step). ``lateness``: the query's
    allowed lateness."""

    def __init__(self, wm_before, wm_after, windows, changed, late, lateness):
        self.wm_before, self.wm_after = wm_before, wm_after
        self.lateness = lateness
        self.windows: dict[tuple, list[tuple[int, dict]]] = windows
        self.changed: set[tuple] = changed
        self.late: list[dict] = late


def window_trace(
    batches: Sequence[Sequence[dict]],
    *,
    kind: str,
    time: str,
    keys: Sequence[str],
    size: Optional[int] = None,
    slide: Optional[int] = None,
    offset: int = 0,
    gap: Optional[int] = None,
    lateness: int = 0,
    delay: int = 0,
) -> list[Step]:
    """Simulates one windowed query over ``batches``; returns one :class:`Step` per batch plus
    a last one for ``flush()``. ``kind``: "tumbling" (``size``), "sliding" (``size``,
    ``slide``) or "session" (``gap``)."""
    if kind == "tumbling":
        kind, slide = "sliding", size
    assert kind in ("sliding", "session"), kind
    wm = SourceWatermark(delay)
    seq = 0
    fixed: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)   # tumbling / sliding
    per_key: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)  # sessions
    steps: list[Step] = []
    for batch in batches:
        before = wm.value
        late: list[dict] = []
        batch_seqs: set[int] = set()
        touched: set[tuple] = set()
        for row in batch:
            key = tuple(row[k] for k in keys)
            t = row[time]
            if kind == "sliding":
                # a row counts in each of its windows that is still open; late if none is
                starts = [s for s in sliding_starts(t, size, slide, offset)
                          if before is None or s + size + lateness > before]
                if not starts:
                    late.append(row)
                    continue
                for s in starts:
                    fixed[(s, s + size, key)].append((seq, row))
                    touched.add((s, s + size, key))
            else:
                if before is not None and t < before - lateness:
                    late.append(row)
                    continue
                per_key[key].append((seq, row))
                batch_seqs.add(seq)
            seq += 1
        wm.advance([r[time] for r in batch])
        if kind == "sliding":
            windows = {w: list(rs) for w, rs in fixed.items()}
            changed = touched
        else:
            windows, changed = {}, set()
            for key, rows in per_key.items():
                for sess in sessions_of(rows, time, gap):
                    w = (sess[0][1][time], sess[-1][1][time] + gap, key)
                    windows[w] = sess
                    if any(s in batch_seqs for s, _ in sess):
                        changed.add(w)
        steps.append(Step(before, wm.value, windows, changed, late, lateness))
    last = steps[-1].windows if steps else {}
    steps.append(Step(wm.value, FLUSH, dict(last), set(), [], lateness))
    return steps


def window_row(w: tuple, rows: Sequence[tuple[int, dict]], keys: Sequence[str],
               aggs: dict[str, tuple[str, Optional[str]]]) -> dict:
    """The result row of window ``w`` = (start, end, key tuple) over its ``(seq, row)`` pairs;
    aggregates see the rows in arrival order."""
    ordered = [r for _, r in sorted(rows, key=lambda sr: sr[0])]
    out = {"window_start": w[0], "window_end": w[1]}
    out.update(dict(zip(keys, w[2])))
    for name, (func, column) in aggs.items():
        out[name] = _agg(func, [r[column] for r in ordered] if column else ordered)
    return out


def trace_late(trace: Sequence[Step]) -> list[dict]:
    return [r for step in trace for r in step.late]


def _flat(per_step: list[list[dict]], keep: bool):
    return per_step if keep else [r for rows in per_step for r in rows]


def emit_final(trace: Sequence[Step], keys, aggs, *, per_step: bool = False):
    """``final()``: one row per window and key, emitted after the batch whose watermark closes
    the window (``end + allowed lateness <= W``), the rest at the flush. ``per_step``: a list
    of rows per step (batch, then flush) instead of one flat list."""
    done: set[tuple] = set()
    out: list[list[dict]] = []
    for step in trace:
        now = []
        for w in sorted(step.windows, key=repr):
            closed = step.wm_after is FLUSH or (step.wm_after is not None
                                                and w[1] + step.lateness <= step.wm_after)
            if closed and w not in done:
                now.append(window_row(w, step.windows[w], keys, aggs))
                done.add(w)
        out.append(now)
    return _flat(out, per_step)


def emit_changelog(trace: Sequence[Step], keys, aggs, *, kind: str, per_step: bool = False):
    """``changelog()``: after every input batch, for each window and key the batch changed, the
    previously emitted row (if any) with weight -1, then the current row with weight +1. For
    sessions, every emitted session that a changed session now covers (its own earlier shape,
    or a session merged into it) is retracted. Nothing is emitted at the flush."""
    emitted: dict[tuple, dict] = {}
    steps: list[list[dict]] = []
    for step in trace:
        out: list[dict] = []
        steps.append(out)
        for w in sorted(step.changed, key=repr):
            if kind == "session":
                # sessions of one key never overlap, so an emitted session overlapping the
                # changed one is an earlier state of it (or was merged into it)
                gone = [e for e in emitted if e[2] == w[2] and e[0] < w[1] and w[0] < e[1]]
            else:
                gone = [w] if w in emitted else []
            for e in gone:
                out.append({**emitted.pop(e), "weight": -1})
            row = window_row(w, step.windows[w], keys, aggs)
            out.append({**row, "weight": 1})
            emitted[w] = row
    return _flat(steps, per_step)


def emit_on_update(trace: Sequence[Step], keys, aggs, *, kind: str, per_step: bool = False):
    """``on_update()``: after every input batch, the current row of each window and key the
    batch changed (the +1 rows of the changelog); nothing at the flush."""
    steps = [[{k: v for k, v in r.items() if k != "weight"} for r in rows if r["weight"] == 1]
             for rows in emit_changelog(trace, keys, aggs, kind=kind, per_step=True)]
    return _flat(steps, per_step)


def emit_on_window_close(trace: Sequence[Step], keys, aggs, *, per_step: bool = False):
    """``on_window_close()`` for tumbling and sliding windows: a window's row once the
    watermark after a batch reaches its end (``end <= W``); again after any later batch that
    changes it (rows within the allowed lateness); every window not fired yet fires at the
    flush. (Not modelled for sessions: whether a fired session that grows fires again at once
    or at its new end is not pinned down by SEMANTICS.md.)"""
    fired: set[tuple] = set()
    steps: list[list[dict]] = []
    for step in trace:
        out: list[dict] = []
        steps.append(out)
        for w in sorted(step.windows, key=repr):
            due = step.wm_after is FLUSH or (step.wm_after is not None and w[1] <= step.wm_after)
            if (w not in fired and due) or (w in fired and w in step.changed):
                out.append(window_row(w, step.windows[w], keys, aggs))
                fired.add(w)
    return _flat(steps, per_step)


def window_states(trace: Sequence[Step], keys, aggs) -> list[dict]:
    """Every state any window (and key) was in after some batch: what a processing-time
    strategy such as ``periodic()`` may emit."""
    seen: dict[tuple, dict] = {}
    for step in trace:
        for w, rows in step.windows.items():
            row = window_row(w, rows, keys, aggs)
            seen[tuple(sorted(row.items(), key=repr))] = row
    return list(seen.values())


def final_and_late(batches: Sequence[Sequence[dict]], *, kind: str, keys: Sequence[str],
                   aggs: dict[str, tuple[str, Optional[str]]], **query) -> tuple[list[dict], list[dict]]:
    """(final rows, late rows) of one windowed query; ``query``: the other parameters of
    :func:`window_trace` (time, the window's, lateness, delay)."""
    trace = window_trace(batches, kind=kind, keys=keys, **query)
    return emit_final(trace, keys, aggs), trace_late(trace)


def sliding(batches: Sequence[Sequence[dict]], *, size: int, slide: int, **query) -> tuple[list[dict], list[dict]]:
    """Sliding windows ``[s, s + size)``, ``s = offset (mod slide)``: (final rows, late rows).
    A row counts in each of its windows not yet closed (``end + lateness <= W`` closes) when
    its batch arrives; it is late only if all of them are closed. ``query``: as
    :func:`final_and_late` (time, keys, aggs, offset, lateness, delay)."""
    return final_and_late(batches, kind="sliding", size=size, slide=slide, **query)


def session(batches: Sequence[Sequence[dict]], *, gap: int, **query) -> tuple[list[dict], list[dict]]:
    """Session windows per key: (final rows, late rows). A row is late when ``t < W -
    lateness``; the other rows of a key form sessions of rows less than ``gap`` apart
    (transitively); a session's window is ``[first, last + gap)``. ``query``: as
    :func:`final_and_late` (time, keys, aggs, lateness, delay).

    Clustering all on-time rows at the end is exact: a session closes only once ``last + gap
    + lateness <= W``, and any row accepted after that has ``t >= W - lateness >= last + gap``,
    so it can neither join nor bridge a closed session."""
    return final_and_late(batches, kind="session", gap=gap, **query)


FINAL_MODELS = {"tumbling": tumbling, "sliding": sliding, "session": session}
"""The (final rows, late rows) model of each window kind, by name."""


def fold_changelog(rows: Iterable[dict], columns: Sequence[str]) -> list[dict]:
    """Sums the ``weight`` of each distinct row (over ``columns``, exact values) and returns the
    rows whose sum is not zero, each repeated ``weight`` times (so a weight of 2 shows up as a
    duplicate). A negative sum (a retraction of something never emitted) fails."""
    totals: dict[tuple, int] = defaultdict(int)
    for r in rows:
        assert r["weight"] in (1, -1), r
        totals[tuple(r[c] for c in columns)] += r["weight"]
    out = []
    for values, weight in totals.items():
        assert weight >= 0, f"row retracted more often than emitted: {dict(zip(columns, values))}"
        out.extend(dict(zip(columns, values)) for _ in range(weight))
    return out


def last_per_window(rows: Iterable[dict], key_columns: Sequence[str]) -> list[dict]:
    """The last row emitted for each (window_start, window_end, *key_columns), ``rows`` being
    in emission order."""
    last: dict[tuple, dict] = {}
    for r in rows:
        last[(r["window_start"], r["window_end"], *(r[k] for k in key_columns))] = r
    return list(last.values())


# =============================================================================================
# Interval join
# =============================================================================================

JOIN_TYPES = ("inner", "left", "right", "full")


def join_columns(left_columns: Sequence[str], right_columns: Sequence[str],
                 on: Sequence[str]) -> list[tuple[str, str, str]]:
    """Result columns of a join: (output name, side "left"/"right", input column). Every left
    column, then the right columns that are not ``on`` keys; a right column whose name is
    already taken gets the suffix ``_right``."""
    out = [(c, "left", c) for c in left_columns]
    taken = set(left_columns)
    for c in right_columns:
        if c in on:
            continue
        name = c + "_right" if c in taken else c
        taken.add(name)
        out.append((name, "right", c))
    return out


def _joined(cols, on, left: Optional[dict], right: Optional[dict]) -> dict:
    """One result row; for a right row alone, the key columns hold the right row's keys."""
    out = {}
    for name, side, c in cols:
        if side == "left":
            if left is not None:
                out[name] = left[c]
            else:
                out[name] = right[c] if c in on else None
        else:
            out[name] = right[c] if right is not None else None
    return out


def interval_join(
    left_batches: Sequence[Sequence[dict]],
    right_batches: Sequence[Sequence[dict]],
    order: Sequence[str],
    *,
    on: Sequence[str],
    lo: int,
    hi: int,
    how: str = "inner",
    lateness: int = 0,
    left_delay: int = 0,
    right_delay: int = 0,
    left_time: str = "ts",
    right_time: str = "ts",
    left_columns: Sequence[str],
    right_columns: Sequence[str],
) -> tuple[list[dict], list[dict]]:
    """(result rows, late rows) of ``left.join(right, on, within=(lo, hi), how)``.

    ``order``: "left" / "right" per push, saying whose next batch is pushed. Each source's
    watermark is its max event time seen - its delay; the join's watermark ``W`` is their
    minimum, None until both sides have seen a row. A row is late when ``t < W - lateness``
    (``W`` before its batch); late rows never join and come back shaped like an unmatched row
    of their side.

    Matching is computed over all on-time rows at the end. That is exact because state
    eviction never loses a match: a left row leaves state once ``l.t + hi < W - L``, and any
    right row accepted afterwards has ``r.t >= W - L > l.t + hi`` (symmetrically for right
    rows, using ``lo``). Null keys never match."""
    assert how in JOIN_TYPES, how
    assert sorted(order) == sorted(["left"] * len(left_batches) + ["right"] * len(right_batches))
    on = list(on)
    cols = join_columns(left_columns, right_columns, on)
    marks = {"left": SourceWatermark(left_delay), "right": SourceWatermark(right_delay)}
    times = {"left": left_time, "right": right_time}
    queues = {"left": list(left_batches), "right": list(right_batches)}
    kept: dict[str, list[dict]] = {"left": [], "right": []}
    late: list[dict] = []
    for side in order:
        batch = queues[side].pop(0)
        w = combined_watermark([marks["left"], marks["right"]])
        for row in batch:
            if w is not None and row[times[side]] < w - lateness:
                late.append(_joined(cols, on, row, None) if side == "left" else _joined(cols, on, None, row))
            else:
                kept[side].append(row)
        marks[side].advance([r[times[side]] for r in batch])

    def key(row):
        return tuple(row[c] for c in on)

    out: list[dict] = []
    matched_left: set[int] = set()
    matched_right: set[int] = set()
    for i, l in enumerate(kept["left"]):
        for j, r in enumerate(kept["right"]):
            if None in key(l) or key(l) != key(r):
                continue
            if l[left_time] + lo <= r[right_time] <= l[left_time] + hi:
                out.append(_joined(cols, on, l, r))
                matched_left.add(i)
                matched_right.add(j)
    if how in ("left", "full"):
        out += [_joined(cols, on, l, None) for i, l in enumerate(kept["left"]) if i not in matched_left]
    if how in ("right", "full"):
        out += [_joined(cols, on, None, r) for j, r in enumerate(kept["right"]) if j not in matched_right]
    return out, late


# =============================================================================================
# Lookup join
# =============================================================================================

def lookup(
    stream_rows: Sequence[dict],
    table_rows: Sequence[dict],
    *,
    on: Sequence[str],
    how: str = "left",
    stream_columns: Optional[Sequence[str]] = None,
    table_columns: Optional[Sequence[str]] = None,
) -> list[dict]:
    """Each stream row looked up in a fixed table. A key present twice in the table: the last
    row wins. Columns: the stream's, then the table's non-key columns (``_right`` on a clash).
    ``inner`` drops rows without a match, ``left`` keeps them with nulls. A null key never
    matches (assumed, as in the interval join)."""
    assert how in ("left", "inner"), how
    on = list(on)
    stream_columns = list(stream_columns if stream_columns is not None else stream_rows[0])
    table_columns = list(table_columns if table_columns is not None else table_rows[0])
    cols = join_columns(stream_columns, table_columns, on)
    table: dict[tuple, dict] = {}
    for r in table_rows:
        table[tuple(r[c] for c in on)] = r
    out = []
    for row in stream_rows:
        key = tuple(row[c] for c in on)
        match = None if None in key else table.get(key)
        if match is None and how == "inner":
            continue
        out.append(_joined(cols, on, row, match))
    return out


# =============================================================================================
# Dedup
# =============================================================================================

def dedup(
    batches: Sequence[Sequence[dict]],
    *,
    time: str,
    on: Sequence[str],
    within: int,
    delay: int = 0,
) -> tuple[list[dict], list[dict], list[dict]]:
    """(kept rows in arrival order, late rows, duplicate rows) of ``s.dedup(on, within)``.

    Per key (null keys compare equal) the model remembers the time ``k`` of the last row it
    kept. Rows are judged in arrival order: a row with ``t < W`` (the watermark in force before
    its batch: max event time seen - ``delay``) is late; otherwise it is a duplicate when its
    key has a ``k`` with ``|t - k| < within``, else it is kept and ``k := t``. Nothing ever
    expires here: the engine's expiry must not change any of this."""
    wm = SourceWatermark(delay)
    last: dict[tuple, int] = {}
    kept: list[dict] = []
    late: list[dict] = []
    dups: list[dict] = []
    for batch in batches:
        before = wm.value
        for row in batch:
            t = row[time]
            if before is not None and t < before:
                late.append(row)
                continue
            key = tuple(row[c] for c in on)
            if key in last and abs(t - last[key]) < within:
                dups.append(row)
                continue
            last[key] = t
            kept.append(row)
        wm.advance([r[time] for r in batch])
    return kept, late, dups
