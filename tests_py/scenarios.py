"""Hypothesis scenarios and engine runners shared by the property tests of sliding and session
windows, emit strategies, interval joins and timing independence.

Values are multiples of 0.25 (exact in binary), so sums do not depend on the order in which
the engine adds them up and results can be compared exactly."""

from __future__ import annotations

import random
import time as _time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import pyarrow as pa
from hypothesis import strategies as st

import laminar as lm
from reference import FINAL_MODELS, JOIN_TYPES, canonical, interval_join, rows_of, split, window_trace

WINDOW_KINDS = ("tumbling", "sliding", "session")

AGGS = {
    "n": ("count_rows", None),
    "nv": ("count", "value"),
    "total": ("sum", "value"),
    "lo": ("min", "value"),
    "hi": ("max", "value"),
    "mean": ("avg", "value"),
    "fst": ("first", "value"),
    "lst": ("last", "value"),
}
ORDER_FREE = ("n", "nv", "total", "lo", "hi", "mean")
"""Aggregates that do not depend on arrival order (first/last do)."""


def model_aggs(names: Sequence[str]) -> dict:
    return {n: AGGS[n] for n in names}


def lm_aggs(names: Sequence[str]) -> dict:
    made = dict(
        n=lm.count(), nv=lm.count("value"), total=lm.sum("value"), lo=lm.min("value"),
        hi=lm.max("value"), mean=lm.avg("value"), fst=lm.first("value"), lst=lm.last("value"),
    )
    return {n: made[n] for n in names}


VALUES = st.one_of(st.none(), st.integers(-4000, 4000).map(lambda i: i / 4))

KEY_KINDS = {
    # name: (columns with their arrow types, strategy of one key tuple)
    "none": ([], st.just(())),
    "int": ([("k", pa.int64())], st.tuples(st.integers(-2, 2))),
    "str": ([("k", pa.string())], st.tuples(st.sampled_from(["a", "b", "ccc", "", "é"]))),
    "bool": ([("k", pa.bool_())], st.tuples(st.booleans())),
    "int+str": ([("k", pa.int32()), ("k2", pa.string())],
                st.tuples(st.integers(0, 2), st.sampled_from(["x", "y"]))),
}


def random_split(rnd: random.Random, rows: list) -> list[list]:
    """``rows`` cut into up to 9 batches at random."""
    return split(rows, rnd.sample(range(len(rows) + 1), k=min(len(rows) + 1, rnd.randint(0, 8))))


def pause(rnd: random.Random) -> Callable[[], float]:
    """Random pauses of 0-2 ms between pushes."""
    return lambda: rnd.random() * 0.002


@st.composite
def event_rows(draw, columns: list, key_values, *, max_rows: int, max_disorder: int = 400,
               base_range: int = 5000):
    """Rows ``ts`` (int64), keys, ``value``; ``ts`` = a non-decreasing nominal time minus a jitter
    in ``0..disorder``. Returns (rows, disorder)."""
    n = draw(st.integers(0, max_rows))
    nominal = draw(st.integers(-base_range, base_range))
    disorder = draw(st.integers(0, max_disorder))
    rows = []
    for _ in range(n):
        nominal += draw(st.integers(0, 30))
        key = draw(key_values)
        row = {"ts": nominal - draw(st.integers(0, disorder))}
        row.update(dict(zip([c for c, _ in columns], key)))
        row["value"] = draw(VALUES)
        rows.append(row)
    return rows, disorder


@dataclass
class WindowScenario:
    kind: str
    rows: list
    batches: list
    schema: pa.Schema
    keys: list
    params: dict          # size / slide / offset / gap, as the reference model takes them
    lateness: int
    delay: int
    disorder: int

    def window(self) -> lm.Window:
        p = self.params
        if self.kind == "tumbling":
            return lm.tumbling(p["size"], offset=p["offset"])
        if self.kind == "sliding":
            return lm.sliding(p["size"], every=p["slide"], offset=p["offset"])
        return lm.session(p["gap"])

    def trace(self, batches: Optional[list] = None):
        return window_trace(self.batches if batches is None else batches, kind=self.kind, time="ts",
                            keys=self.keys, lateness=self.lateness, delay=self.delay, **self.params)

    def model(self, agg_names: Sequence[str]) -> tuple[list[dict], list[dict]]:
        """(final rows, late rows) by the reference model of the scenario's window kind."""
        return FINAL_MODELS[self.kind](self.batches, time="ts", keys=self.keys, aggs=model_aggs(agg_names),
                                       lateness=self.lateness, delay=self.delay, **self.params)

    def tables(self, batches: Optional[list] = None) -> list[pa.Table]:
        return [pa.Table.from_pylist(b, schema=self.schema) for b in (self.batches if batches is None else batches)]

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return (f"WindowScenario(kind={self.kind!r}, params={self.params}, keys={self.keys}, "
                f"lateness={self.lateness}, delay={self.delay}, batches={self.batches!r})")


@st.composite
def window_scenario(draw, kinds: Sequence[str] = WINDOW_KINDS, *, max_rows: int = 80,
                    nothing_late: bool = False, lateness: Optional[int] = None):
    """A windowed query over random out-of-order data split into random batches.

    ``nothing_late``: the watermark delay covers the disorder (and nothing is late)."""
    kind = draw(st.sampled_from(list(kinds)))
    key_kind = draw(st.sampled_from(sorted(KEY_KINDS)))
    columns, key_values = KEY_KINDS[key_kind]
    rows, disorder = draw(event_rows(columns, key_values, max_rows=max_rows))
    batches = split(rows, draw(st.lists(st.integers(0, len(rows)), max_size=6)))
    if kind == "tumbling":
        size = draw(st.integers(1, 300))
        params = dict(size=size, offset=draw(st.integers(0, size - 1)))
    elif kind == "sliding":
        slide = draw(st.integers(1, 80))
        # mostly sizes that are multiples of the slide, sometimes not
        size = draw(st.one_of(st.integers(1, 6).map(lambda m: m * slide), st.integers(slide, 6 * slide)))
        # offsets in 0..slide-1 only (SEMANTICS: s = offset mod slide; larger offsets would mean
        # the same windows, but that normalisation is not part of the contract)
        params = dict(size=size, slide=slide, offset=draw(st.integers(0, slide - 1)))
    else:
        params = dict(gap=draw(st.integers(1, 200)))
    delay = disorder if nothing_late else draw(st.integers(0, 300))
    schema = pa.schema([("ts", pa.int64()), *columns, ("value", pa.float64())])
    return WindowScenario(
        kind=kind, rows=rows, batches=batches, schema=schema, keys=[c for c, _ in columns],
        params=params, lateness=draw(st.integers(0, 200)) if lateness is None else lateness,
        delay=delay, disorder=disorder)


@dataclass
class Run:
    rows: list            # every result row, in emission order
    per_push: list        # the rows available after each push (and last, after the flush)
    late: Optional[list]
    metrics: dict
    columns: list = field(default_factory=list)


def run_window(sc: WindowScenario, agg_names: Sequence[str], *, emit=None, late: str = "side",
               batches: Optional[list] = None, pause: Optional[Callable[[], float]] = None,
               cores: int = 1) -> Run:
    """Runs the scenario's windowed query on a fresh engine of ``cores`` cores, pushing each
    batch (polling the result after each push), then flushes."""
    eng = lm.Engine(cores=cores)
    src = eng.source("s", time="ts", watermark=lm.bounded_delay(sc.delay), schema=sc.schema)
    w = src.window(sc.window(), allowed_lateness=sc.lateness, late=late)
    q = (w.group_by(*sc.keys) if sc.keys else w).agg(**lm_aggs(agg_names))
    if emit is not None:
        q = q.emit(emit)
    out = q.collect("q")
    per_push = []
    columns: list = []
    for t in sc.tables(batches):
        src.push(t)
        if pause is not None:
            _time.sleep(pause())
        got = out.poll()
        columns = columns or (got.column_names if got.num_rows else [])
        per_push.append(rows_of(got))
    eng.flush()
    got = out.poll()
    columns = columns or (got.column_names if got.num_rows else [])
    per_push.append(rows_of(got))
    late_rows = rows_of(out.late().to_arrow()) if late == "side" else None
    metrics = eng.metrics()["queries"]["q"]
    eng.close()
    return Run([r for p in per_push for r in p], per_push, late_rows, metrics, columns)


def scenario_aggs(sc: WindowScenario) -> Sequence[str]:
    """Every aggregate, but for sessions only those that do not depend on arrival order (first/last
    across session merges are tested on their own, in test_sliding_session_property)."""
    return ORDER_FREE if sc.kind == "session" else list(AGGS)


def result_columns(sc: WindowScenario, agg_names: Sequence[str], *, weight: bool = False) -> list:
    return ["window_start", "window_end", *sc.keys, *agg_names] + (["weight"] if weight else [])


def check_run(run: Run, want: list, want_late: list, cols: list, *, late: str, late_cols: list) -> None:
    """A run against the model's (rows, late rows): the same rows, with the columns ``cols`` in
    that order; late rows in the side output (compared over ``late_cols``) or counted as
    dropped; ``rows_out`` counts every result row."""
    assert canonical(run.rows, cols) == canonical(want, cols)
    if run.rows:
        assert run.columns == cols
    if late == "side":
        assert canonical(run.late, late_cols) == canonical(want_late, late_cols)
        assert run.metrics["late_side_output"] == len(want_late)
        assert run.metrics["late_dropped"] == 0
    else:
        assert run.metrics["late_dropped"] == len(want_late)
        assert run.metrics["late_side_output"] == 0
    assert run.metrics["rows_out"] == len(run.rows)


# --- interval joins ----------------------------------------------------------------------------
JOIN_KEY_KINDS = {
    "int": ([("id", pa.int64())], st.integers(0, 3)),
    "str": ([("id", pa.string())], st.sampled_from(["a", "b", "c"])),
    "int+str": ([("id", pa.int64()), ("id2", pa.string())],
                st.tuples(st.integers(0, 2), st.sampled_from(["x", "y"]))),
}


@dataclass
class JoinScenario:
    how: str
    on: list
    left_batches: list
    right_batches: list
    order: list
    left_schema: pa.Schema
    right_schema: pa.Schema
    lo: int
    hi: int
    lateness: int
    left_delay: int
    right_delay: int

    @property
    def left_rows(self):
        return [r for b in self.left_batches for r in b]

    @property
    def right_rows(self):
        return [r for b in self.right_batches for r in b]

    def model(self, left_batches=None, right_batches=None, order=None):
        lb = self.left_batches if left_batches is None else left_batches
        rb = self.right_batches if right_batches is None else right_batches
        return interval_join(
            lb, rb, self.order if order is None else order, on=self.on, lo=self.lo, hi=self.hi,
            how=self.how, lateness=self.lateness, left_delay=self.left_delay,
            right_delay=self.right_delay, left_columns=self.left_schema.names,
            right_columns=self.right_schema.names)

    def result_columns(self) -> list:
        from reference import join_columns
        return [c[0] for c in join_columns(self.left_schema.names, self.right_schema.names, self.on)]

    def __repr__(self) -> str:
        return (f"JoinScenario(how={self.how!r}, on={self.on}, within=({self.lo}, {self.hi}), "
                f"lateness={self.lateness}, delays=({self.left_delay}, {self.right_delay}), "
                f"order={self.order}, left={self.left_batches!r}, right={self.right_batches!r})")


@st.composite
def join_scenario(draw, hows: Sequence[str] = JOIN_TYPES, *, nothing_late: bool = False,
                  max_rows: int = 30, negative_lo: bool = False):
    """Two sources: left (ts, keys, v) and right (ts, keys, v, w), random out-of-order times
    near each other, random batch splits and a random interleaving of the pushes.

    ``v`` numbers the rows (unique), so every result row can be told apart; ``v`` and ``ts``
    exist on both sides and come back as ``v_right`` / ``ts_right``."""
    how = draw(st.sampled_from(list(hows)))
    key_kind = draw(st.sampled_from(sorted(JOIN_KEY_KINDS)))
    key_cols, key_values = JOIN_KEY_KINDS[key_kind]
    names = [c for c, _ in key_cols]
    null_keys = draw(st.booleans())
    base = draw(st.integers(-2000, 2000))
    delays = []

    def side(first_v: int, extra: bool):
        n = draw(st.integers(0, max_rows))
        nominal = base + draw(st.integers(-150, 150))
        disorder = draw(st.integers(0, 200))
        rows = []
        for i in range(n):
            nominal += draw(st.integers(0, 25))
            key = draw(key_values)
            key = list(key) if isinstance(key, tuple) else [key]
            if null_keys and draw(st.integers(0, 4)) == 0:
                # null one key column (and maybe the others): such a row never matches
                nulled = draw(st.integers(0, len(key) - 1))
                key = [None if j == nulled or draw(st.booleans()) else k for j, k in enumerate(key)]
            row = {"ts": nominal - draw(st.integers(0, disorder))}
            row.update(dict(zip(names, key)))
            row["v"] = first_v + i
            if extra:
                row["w"] = draw(st.one_of(st.none(), st.sampled_from(["p", "q", "r"])))
            rows.append(row)
        delays.append(disorder if nothing_late else draw(st.integers(0, 200)))
        return split(rows, draw(st.lists(st.integers(0, n), max_size=4)))

    left_batches = side(0, False)
    right_batches = side(1000, True)
    order = draw(st.permutations(["left"] * len(left_batches) + ["right"] * len(right_batches)))
    lo = draw(st.integers(-60, 0)) if negative_lo else draw(st.integers(0, 60))
    hi = lo + draw(st.integers(0, 150))
    left_schema = pa.schema([("ts", pa.int64()), *key_cols, ("v", pa.int64())])
    right_schema = pa.schema([("ts", pa.int64()), *key_cols, ("v", pa.int64()), ("w", pa.string())])
    return JoinScenario(
        how=how, on=names, left_batches=left_batches, right_batches=right_batches, order=list(order),
        left_schema=left_schema, right_schema=right_schema, lo=lo, hi=hi,
        lateness=0 if nothing_late else draw(st.integers(0, 100)),
        left_delay=delays[0], right_delay=delays[1])


def run_join(sc: JoinScenario, *, late: str = "side", left_batches=None, right_batches=None,
             order=None, pause: Optional[Callable[[], float]] = None, cores: int = 1) -> Run:
    """Runs the scenario's join on a fresh engine of ``cores`` cores: pushes the batches of both
    sides in the given interleaving, flushes, returns the rows, late rows and metrics."""
    eng = lm.Engine(cores=cores)
    left = eng.source("l", time="ts", watermark=lm.bounded_delay(sc.left_delay), schema=sc.left_schema)
    right = eng.source("r", time="ts", watermark=lm.bounded_delay(sc.right_delay), schema=sc.right_schema)
    on = sc.on[0] if len(sc.on) == 1 else list(sc.on)
    out = left.join(right, on=on, within=(sc.lo, sc.hi), how=sc.how, allowed_lateness=sc.lateness,
                    late=late).collect("q")
    queues = {
        "left": list(sc.left_batches if left_batches is None else left_batches),
        "right": list(sc.right_batches if right_batches is None else right_batches),
    }
    sources = {"left": (left, sc.left_schema), "right": (right, sc.right_schema)}
    for side in (sc.order if order is None else order):
        src, schema = sources[side]
        src.push(pa.Table.from_pylist(queues[side].pop(0), schema=schema))
        if pause is not None:
            _time.sleep(pause())
    eng.flush()
    got = out.to_arrow()
    late_rows = rows_of(out.late().to_arrow()) if late == "side" else None
    metrics = eng.metrics()["queries"]["q"]
    eng.close()
    return Run(rows_of(got), [], late_rows, metrics, got.column_names if got.num_rows else [])
