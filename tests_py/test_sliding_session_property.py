"""Sliding and session windows against the plain-Python reference models (reference.py), on
random out-of-order data with random lateness, watermark delays, key types (int, string,
bool, two columns, none) and batch splits; late rows dropped or sent to the side output.

The queries emit final() (one row per window and key): the default on_window_close() emits
again for rows within the allowed lateness, which test_emit_property.py covers.

Plus a few worked examples that are easier to debug than a shrunk hypothesis case."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from reference import canonical, rows_of
from scenarios import AGGS, ORDER_FREE, check_run, result_columns, run_window, window_scenario


def check_against_model(sc, agg_names, late):
    """The scenario's query with final() against the reference model of its window kind
    (reference.sliding, reference.session)."""
    run = run_window(sc, agg_names, late=late, emit=lm.final())
    want, want_late = sc.model(agg_names)
    check_run(run, want, want_late, result_columns(sc, agg_names), late=late, late_cols=["ts", *sc.keys, "value"])
    assert run.metrics["open_windows"] == 0 and run.metrics["live_groups"] == 0


@given(window_scenario(kinds=("sliding",)), st.sampled_from(["side", "drop"]))
def test_sliding_matches_reference(sc, late):
    check_against_model(sc, list(AGGS), late)


@given(window_scenario(kinds=("session",)), st.sampled_from(["side", "drop"]))
def test_session_matches_reference(sc, late):
    check_against_model(sc, ORDER_FREE, late)


@given(window_scenario(kinds=("session",)))
def test_session_first_last_follow_arrival_order_across_merges(sc):
    """first/last are the first/last non-null values in arrival order (reference.py's rule
    for every window kind); when sessions merge, that is arrival order over the merged rows,
    not the time order of the sessions. Kept apart from the test above so that a failure here
    points at exactly this rule."""
    names = ["n", "fst", "lst"]
    run = run_window(sc, names, emit=lm.final())
    want, _ = sc.model(names)
    cols = result_columns(sc, names)
    assert canonical(run.rows, cols) == canonical(want, cols)


# --- worked examples ---------------------------------------------------------------------------
def run_rows(window, pushes, *, delay=0, lateness=0, keys=("k",), late="side"):
    eng = lm.Engine()
    schema = pa.schema([("ts", pa.int64()), ("k", pa.string()), ("value", pa.float64())])
    s = eng.source("s", time="ts", watermark=lm.bounded_delay(delay), schema=schema)
    q = (s.window(window, allowed_lateness=lateness, late=late).group_by(*keys)
         .agg(n=lm.count(), total=lm.sum("value")).emit(lm.final())).collect("q")
    for p in pushes:
        s.push(pa.Table.from_pylist([{"ts": t, "k": k, "value": v} for t, k, v in p], schema=schema))
    eng.flush()
    got = sorted((r["k"], r["window_start"], r["window_end"], r["n"], r["total"]) for r in rows_of(q.to_arrow()))
    late_rows = sorted(r["ts"] for r in rows_of(q.late().to_arrow())) if late == "side" else None
    return got, late_rows, eng.metrics()["queries"]["q"]


def test_sliding_row_counts_in_every_overlapping_window():
    got, late, _ = run_rows(lm.sliding(10, every=5), [[(7, "a", 1.0), (12, "a", 2.0)]], delay=100)
    assert got == [("a", 0, 10, 1, 1.0), ("a", 5, 15, 2, 3.0), ("a", 10, 20, 1, 2.0)]
    assert late == []


def test_sliding_row_late_only_when_all_its_windows_closed():
    # watermark 12 after the first push: [0,10) closed, [5,15) open
    got, late, m = run_rows(lm.sliding("10ms", every="5ms"), [[(1, "a", 1.0), (12, "a", 1.0)],
                                                              [(7, "a", 1.0), (3, "a", 1.0)]])
    assert got == [("a", -5, 5, 1, 1.0), ("a", 0, 10, 1, 1.0), ("a", 5, 15, 2, 2.0), ("a", 10, 20, 1, 1.0)]
    assert late == [3]
    assert m["late_side_output"] == 1  # once per row, not per window


def test_sliding_with_offset():
    got, _, _ = run_rows(lm.sliding(10, every=5, offset=2), [[(7, "a", 1.0)]])
    assert [(s, e) for _, s, e, _, _ in got] == [(2, 12), (7, 17)]


def test_session_bridging_row_merges_two_sessions():
    got, _, _ = run_rows(lm.session(15), [[(0, "a", 1.0), (20, "a", 2.0)], [(10, "a", 4.0)]], delay=100)
    assert got == [("a", 0, 35, 3, 7.0)]


def test_session_gap_exactly_apart_splits():
    got, _, _ = run_rows(lm.session("10ms"), [[(0, "a", 1.0), (10, "a", 1.0), (19, "a", 1.0)]])
    assert got == [("a", 0, 10, 1, 1.0), ("a", 10, 29, 2, 2.0)]


def test_sessions_per_key_and_lateness():
    pushes = [[(0, "a", 1.0), (3, "b", 1.0), (100, "a", 1.0)], [(95, "a", 1.0), (2, "b", 1.0)]]
    got, late, _ = run_rows(lm.session(10), pushes)
    assert got == [("a", 0, 10, 1, 1.0), ("a", 100, 110, 1, 1.0), ("b", 3, 13, 1, 1.0)]
    assert late == [2, 95]
    got, late, _ = run_rows(lm.session(10), pushes, lateness=5)
    assert got == [("a", 0, 10, 1, 1.0), ("a", 95, 110, 2, 2.0), ("b", 3, 13, 1, 1.0)]
    assert late == [2]
