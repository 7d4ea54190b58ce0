"""Interval joins against the reference model (reference.interval_join): inner, left, right
and full joins on random out-of-order data on both sides, random batch splits and random
interleavings of the two sources' pushes, allowed lateness, per-side watermark delays, int,
string and two-column keys, null keys; late rows dropped or sent to the side output.

Plus worked examples: column naming, when matched and unmatched rows come out, state."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from scenarios import check_run, join_scenario, run_join


def check_join(sc, run, late):
    want, want_late = sc.model()
    cols = sc.result_columns()
    # late rows come back shaped like an unmatched row of their side
    check_run(run, want, want_late, cols, late=late, late_cols=cols)
    assert run.metrics["rows_in"] == len(sc.left_rows) + len(sc.right_rows)
    assert run.metrics["state_rows"] == 0


@given(join_scenario(), st.sampled_from(["side", "drop"]))
def test_join_matches_reference(sc, late):
    check_join(sc, run_join(sc, late=late), late)


@given(join_scenario(negative_lo=True))
def test_join_with_lower_bound_before_the_left_row(sc):
    """within=(lo, hi) with lo < 0: right rows up to -lo before the left row match too.
    (Assumes negative int milliseconds are accepted for lo, as the bound formula allows.)"""
    check_join(sc, run_join(sc), "side")


@given(join_scenario(nothing_late=True))
def test_join_nothing_late_when_delays_cover_the_disorder(sc):
    run = run_join(sc)
    _, want_late = sc.model()
    assert want_late == [] and run.late == []
    check_join(sc, run, "side")


# --- worked examples ---------------------------------------------------------------------------
LS = pa.schema([("ts", pa.int64()), ("id", pa.int64()), ("name", pa.string())])
RS = pa.schema([("ts", pa.int64()), ("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])


def setup(how="inner", within=(0, 10), delay=0, **kw):
    eng = lm.Engine()
    left = eng.source("orders", time="ts", watermark=lm.bounded_delay(delay), schema=LS)
    right = eng.source("payments", time="ts", watermark=lm.bounded_delay(delay), schema=RS)
    out = left.join(right, on="id", within=within, how=how, **kw).collect("j")
    return eng, left, right, out


def L(*rows):
    return pa.Table.from_pylist([dict(zip(LS.names, r)) for r in rows], schema=LS)


def R(*rows):
    return pa.Table.from_pylist([dict(zip(RS.names, r)) for r in rows], schema=RS)


def test_result_columns_and_types():
    eng, left, right, out = setup()
    left.push(L((100, 1, "o1")))
    right.push(R((105, 1, "p1", 9.5)))
    eng.flush()
    got = out.to_arrow()
    assert got.schema == pa.schema([("ts", pa.int64()), ("id", pa.int64()), ("name", pa.string()),
                                    ("ts_right", pa.int64()), ("name_right", pa.string()),
                                    ("amount", pa.float64())])
    assert got.to_pylist() == [{"ts": 100, "id": 1, "name": "o1", "ts_right": 105, "name_right": "p1", "amount": 9.5}]


def test_bounds_inclusive_and_duration_strings():
    eng, left, right, out = setup(within=("0s", "10ms"))
    left.push(L((100, 1, "o")))
    right.push(R((99, 1, "a", 0.0), (100, 1, "b", 0.0), (110, 1, "c", 0.0), (111, 1, "d", 0.0)))
    eng.flush()
    assert sorted(r["name_right"] for r in out.to_arrow().to_pylist()) == ["b", "c"]


def test_match_available_right_after_the_push_that_completes_it():
    eng, left, right, out = setup(delay=1000)
    left.push(L((100, 1, "o")))
    assert out.poll().num_rows == 0
    right.push(R((103, 1, "p", 1.0)))
    assert [r["name_right"] for r in out.poll().to_pylist()] == ["p"]


@pytest.mark.parametrize("how", ["left", "full"])
def test_unmatched_left_row_emitted_once_no_match_is_possible(how):
    eng, left, right, out = setup(how=how)
    left.push(L((0, 1, "lonely"), (0, 2, "matched")))
    right.push(R((5, 2, "p", 1.0)))
    assert [r["name"] for r in out.poll().to_pylist()] == ["matched"]
    # both watermarks pass 0 + 10: no right row can match 'lonely' any more
    left.push(L((50, 3, "x")))
    right.push(R((50, 4, "y", 1.0)))
    rows = out.poll().to_pylist()
    assert {"ts": 0, "id": 1, "name": "lonely", "ts_right": None, "name_right": None, "amount": None} in rows
    eng.flush()
    assert sum(r["name"] == "lonely" for r in out.to_arrow().to_pylist()) == 1


def test_unmatched_right_row_has_right_keys_and_null_left_columns():
    eng, left, right, out = setup(how="right")
    left.push(L((0, 1, "o")))
    right.push(R((5, 7, "p", 2.0)))
    eng.flush()
    assert out.to_arrow().to_pylist() == [
        {"ts": None, "id": 7, "name": None, "ts_right": 5, "name_right": "p", "amount": 2.0}]


def test_null_keys_never_match():
    eng, left, right, out = setup(how="full")
    left.push(L((0, None, "ln")))
    right.push(R((0, None, "rn", 1.0)))
    eng.flush()
    got = sorted(((r["name"], r["name_right"]) for r in out.to_arrow().to_pylist()), key=repr)
    assert got == sorted([("ln", None), (None, "rn")], key=repr)


def test_late_rows_judged_against_the_slower_side():
    eng, left, right, out = setup(how="inner", late="side")
    left.push(L((1000, 1, "a")))
    right.push(R((0, 1, "x", 0.0)))   # right had no watermark yet: on time; W = min(1000, 0) = 0
    left.push(L((-5, 1, "late")))     # -5 < 0: late
    right.push(R((2000, 1, "y", 0.0)))  # W = 1000
    left.push(L((995, 1, "late2")))   # 995 < 1000: late
    eng.flush()
    assert sorted(r["name"] for r in out.late().to_arrow().to_pylist()) == ["late", "late2"]
    m = eng.metrics()["queries"]["j"]
    assert m["late_side_output"] == 2 and m["state_rows"] == 0


def test_join_of_filtered_streams():
    eng = lm.Engine()
    left = eng.source("l", time="ts", schema=LS)
    right = eng.source("r", time="ts", schema=RS)
    out = left.filter(lm.col("name") != "skip").join(
        right.filter(lm.col("amount") > 0), on="id", within=(0, 10)).collect("j")
    left.push(L((0, 1, "keep"), (0, 1, "skip")))
    right.push(R((1, 1, "p", 1.0), (2, 1, "zero", 0.0)))
    eng.flush()
    assert [(r["name"], r["name_right"]) for r in out.to_arrow().to_pylist()] == [("keep", "p")]


def test_join_state_is_released():
    eng, left, right, out = setup(how="full")
    left.push(L(*[(t, t % 3, "o") for t in range(0, 1000, 7)]))
    right.push(R(*[(t, t % 3, "p", 1.0) for t in range(0, 1000, 5)]))
    m = eng.metrics()["queries"]["j"]
    # both watermarks are near 1000: only rows within the last ~10 ms can still match
    assert 0 < m["state_rows"] < 20
    assert m["peak_state_rows"] >= m["state_rows"]
    eng.flush()
    assert eng.metrics()["queries"]["j"]["state_rows"] == 0
