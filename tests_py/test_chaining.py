"""Queries over query results: a windowed query is itself a stream (docs/SEMANTICS.md,
"Queries over query results"). A result row's event time is ``window_end - 1`` and the result
stream's watermark is ``W - L``; the upstream step emits append-only rows (final(), or
on_window_close() with no allowed lateness)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from reference import canonical, interval_join, lookup, rows_of, session, sliding, split, tumbling

SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("value", pa.float64())])
FINE = {"n": ("count_rows", None), "total": ("sum", "value"), "hi": ("max", "value")}


def fine_query(src, size, *, lateness=0, emit=None):
    q = (src.window(lm.tumbling(size), allowed_lateness=lateness).group_by("k")
         .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value")))
    return q.emit(emit if emit is not None else lm.final())


def rollup(q, size):
    """The coarse rollup of a fine windowed query: counts and sums add up, maxima combine."""
    return q.window(lm.tumbling(size)).group_by("k").agg(n=lm.sum("n"), total=lm.sum("total"), hi=lm.max("hi"))


def model_rollup(fine_rows, size):
    """The reference rollup: the fine rows as a stream at time window_end - 1, windowed again.
    Downstream nothing is late (see test docstring), so one batch and no delay will do."""
    as_stream = [{**r, "t": r["window_end"] - 1} for r in fine_rows]
    rows, late = tumbling([as_stream], time="t", keys=["k"], size=size,
                          aggs={"n": ("sum", "n"), "total": ("sum", "total"), "hi": ("max", "hi")})
    assert late == []
    return rows


@st.composite
def chain_scenario(draw, nothing_late: bool):
    n = draw(st.integers(0, 120))
    nominal = draw(st.integers(-3000, 3000))
    disorder = draw(st.integers(0, 200))
    rows = []
    for _ in range(n):
        nominal += draw(st.integers(0, 15))
        rows.append({"ts": nominal - draw(st.integers(0, disorder)), "k": draw(st.integers(0, 3)),
                     "value": draw(st.one_of(st.none(), st.integers(-400, 400).map(lambda i: i / 4)))})
    batches = split(rows, draw(st.lists(st.integers(0, n), max_size=6)))
    fine = draw(st.integers(1, 60))
    return dict(batches=batches, fine=fine, coarse=fine * draw(st.integers(1, 8)),
                delay=disorder if nothing_late else draw(st.integers(0, 200)),
                lateness=0 if nothing_late else draw(st.integers(0, 100)))


def push_all(src, batches):
    for b in batches:
        src.push(pa.Table.from_pylist(b, schema=SCHEMA))


COLS = ["window_start", "window_end", "k", "n", "total", "hi"]


@given(chain_scenario(nothing_late=True), st.sampled_from(["final", "on_window_close"]))
def test_rollup_of_fine_windows_equals_direct_coarse_windows(sc, emit):
    """With nothing late, summing per-fine-window results into coarse windows gives what a
    coarse window over the raw rows gives (coarse is a multiple of fine, so windows nest)."""
    eng = lm.Engine()
    src = eng.source("s", time="ts", watermark=lm.bounded_delay(sc["delay"]), schema=SCHEMA)
    upstream = lm.final() if emit == "final" else lm.on_window_close()
    chained = rollup(fine_query(src, sc["fine"], emit=upstream), sc["coarse"]).collect("chained")
    direct = fine_query(src, sc["coarse"]).collect("direct")
    push_all(src, sc["batches"])
    eng.flush()
    assert canonical(rows_of(chained.to_arrow()), COLS) == canonical(rows_of(direct.to_arrow()), COLS)
    m = eng.metrics()["queries"]["chained"]
    assert m["late_dropped"] == 0 and m["open_windows"] == 0 and m["live_groups"] == 0


@given(chain_scenario(nothing_late=False))
def test_rollup_matches_model_with_late_rows(sc):
    """Upstream rows late for the fine windows are gone; the rollup sums what the fine
    windows emitted. Nothing is late downstream: a fine window emits when end + L <= W, its
    row's time end - 1 is at least the result watermark W_before - L in force before."""
    eng = lm.Engine()
    src = eng.source("s", time="ts", watermark=lm.bounded_delay(sc["delay"]), schema=SCHEMA)
    chained = rollup(fine_query(src, sc["fine"], lateness=sc["lateness"]), sc["coarse"]).collect("chained")
    push_all(src, sc["batches"])
    eng.flush()
    fine_rows, _ = tumbling(sc["batches"], time="ts", keys=["k"], aggs=FINE, size=sc["fine"],
                            lateness=sc["lateness"], delay=sc["delay"])
    want = model_rollup(fine_rows, sc["coarse"])
    assert canonical(rows_of(chained.to_arrow()), COLS) == canonical(want, COLS)


def test_per_minute_rollup_of_per_second_windows():
    rows = [{"ts": t, "k": t % 3, "value": float(t % 7)} for t in range(0, 200_000, 250)]
    eng = lm.Engine()
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"), schema=SCHEMA)
    per_sec = fine_query(src, "1s")
    per_min = rollup(per_sec, "1m").collect("per_min")
    direct = fine_query(src, "1m").collect("direct")
    for i in range(0, len(rows), 97):
        src.push(pa.Table.from_pylist(rows[i:i + 97], schema=SCHEMA))
    eng.flush()
    got = canonical(rows_of(per_min.to_arrow()), COLS)
    assert got == canonical(rows_of(direct.to_arrow()), COLS)
    assert [r[0] for r in got].count(0) == 3 and len(got) == 4 * 3  # 4 minutes x 3 keys
    assert sum(r[3] for r in got) == len(rows)


@given(chain_scenario(nothing_late=False), st.integers(0, 5))
def test_filter_and_select_over_window_results(sc, threshold):
    eng = lm.Engine()
    src = eng.source("s", time="ts", watermark=lm.bounded_delay(sc["delay"]), schema=SCHEMA)
    q = fine_query(src, sc["fine"], lateness=sc["lateness"])
    busy = q.filter(lm.col("n") >= threshold).collect("busy")
    doubled = q.select("window_start", "k", twice=lm.col("n") * 2).collect("doubled")
    push_all(src, sc["batches"])
    eng.flush()
    fine_rows, _ = tumbling(sc["batches"], time="ts", keys=["k"], aggs=FINE, size=sc["fine"],
                            lateness=sc["lateness"], delay=sc["delay"])
    got = busy.to_arrow()
    assert canonical(rows_of(got), COLS) == canonical([r for r in fine_rows if r["n"] >= threshold], COLS)
    if got.num_rows:
        assert got.column_names == COLS
    want = [{"window_start": r["window_start"], "k": r["k"], "twice": 2 * r["n"]} for r in fine_rows]
    assert canonical(rows_of(doubled.to_arrow()), ["window_start", "k", "twice"]) == \
        canonical(want, ["window_start", "k", "twice"])


def test_lookup_over_window_results():
    eng = lm.Engine()
    src = eng.source("s", time="ts", schema=SCHEMA)
    names = pa.table({"k": [0, 1], "label": ["zero", "one"]})
    out = fine_query(src, 10).lookup(names, on="k", how="left").collect("q")
    data = [{"ts": t, "k": t % 3, "value": 1.0} for t in range(30)]
    src.push(pa.Table.from_pylist(data, schema=SCHEMA))
    eng.flush()
    fine_rows, _ = tumbling([data], time="ts", keys=["k"], aggs=FINE, size=10)
    want = lookup(fine_rows, names.to_pylist(), on=["k"], how="left",
                  stream_columns=["window_start", "window_end", "k", "n", "total", "hi"])
    cols = COLS + ["label"]
    assert canonical(rows_of(out.to_arrow()), cols) == canonical(want, cols)


def test_window_over_inner_join_results():
    """A join result's event time is max(l.t, r.t). Assumed, as for windowed queries, that
    the join's result stream has watermark W - L, so with nothing late upstream nothing is
    late downstream either."""
    ls = pa.schema([("ts", pa.int64()), ("id", pa.int64())])
    rs = pa.schema([("ts", pa.int64()), ("id", pa.int64()), ("amount", pa.float64())])
    left_rows = [{"ts": t, "id": t // 3} for t in range(0, 300, 3)]
    right_rows = [{"ts": t + (t % 17), "id": t // 3, "amount": float(t % 5)} for t in range(0, 300, 3)]
    eng = lm.Engine()
    left = eng.source("l", time="ts", watermark=lm.bounded_delay(20), schema=ls)
    right = eng.source("r", time="ts", watermark=lm.bounded_delay(20), schema=rs)
    out = (left.join(right, on="id", within=(0, 20), how="inner")
           .window(lm.tumbling(50)).agg(n=lm.count(), total=lm.sum("amount")).collect("q"))
    lb = [left_rows[i:i + 10] for i in range(0, 100, 10)]
    rb = [sorted(right_rows[i:i + 10], key=lambda r: r["ts"]) for i in range(0, 100, 10)]
    for a, b in zip(lb, rb):
        left.push(pa.Table.from_pylist(a, schema=ls))
        right.push(pa.Table.from_pylist(b, schema=rs))
    eng.flush()
    joined, late = interval_join(lb, rb, ["left", "right"] * 10, on=["id"], lo=0, hi=20, how="inner",
                                 left_delay=20, right_delay=20, left_columns=ls.names, right_columns=rs.names)
    assert late == [] and len(joined) == 100
    as_stream = [{**r, "t": max(r["ts"], r["ts_right"])} for r in joined]
    want, _ = tumbling([as_stream], time="t", keys=[], size=50,
                       aggs={"n": ("count_rows", None), "total": ("sum", "amount")})
    cols = ["window_start", "window_end", "n", "total"]
    assert canonical(rows_of(out.to_arrow()), cols) == canonical(want, cols)
    assert eng.metrics()["queries"]["q"]["late_dropped"] == 0


@pytest.mark.parametrize("kind", ["sliding", "session"])
def test_sliding_and_session_over_window_results(kind):
    """Other window kinds apply to window results as to any stream of rows at end - 1."""
    data = [{"ts": t, "k": t % 2, "value": 1.0} for t in range(0, 400, 7)]
    eng = lm.Engine()
    src = eng.source("s", time="ts", schema=SCHEMA)
    w = lm.sliding(40, every=20) if kind == "sliding" else lm.session(15)
    out = fine_query(src, 10).window(w).group_by("k").agg(n=lm.sum("n")).collect("q")
    src.push(pa.Table.from_pylist(data, schema=SCHEMA))
    eng.flush()
    fine_rows, _ = tumbling([data], time="ts", keys=["k"], aggs=FINE, size=10)
    as_stream = [{**r, "t": r["window_end"] - 1} for r in fine_rows]
    if kind == "sliding":
        want, _ = sliding([as_stream], time="t", keys=["k"], aggs={"n": ("sum", "n")}, size=40, slide=20)
    else:
        want, _ = session([as_stream], time="t", keys=["k"], aggs={"n": ("sum", "n")}, gap=15)
    cols = ["window_start", "window_end", "k", "n"]
    assert canonical(rows_of(out.to_arrow()), cols) == canonical(want, cols)
