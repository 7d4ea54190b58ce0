"""Worked examples for the reference models in reference.py (which the engine's property
tests trust), plus properties the models must satisfy among themselves. These run without
any engine support for the features they model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference import (
    FINAL_MODELS, canonical, dedup, emit_changelog, emit_final, emit_on_update, emit_on_window_close,
    fold_changelog, interval_join, join_columns, last_per_window, lookup, session, sessions_of,
    sliding, sliding_starts, split, trace_late, tumbling, window_states, window_trace,
)

COUNT = {"n": ("count_rows", None)}
AGGS = {"n": ("count_rows", None), "total": ("sum", "v"), "fst": ("first", "v"), "lst": ("last", "v")}
WIN = ["window_start", "window_end", "k", "n"]


def rows(*ts, k="a", v=None):
    return [{"ts": t, "k": k, "v": v} for t in ts]


def wins(result, cols=("window_start", "window_end", "n")):
    return sorted(tuple(r[c] for c in cols) for r in result)


# --- sliding -----------------------------------------------------------------------------------
def test_sliding_row_in_size_over_slide_windows():
    assert sorted(sliding_starts(7, 10, 5)) == [0, 5]
    assert sorted(sliding_starts(5, 10, 5)) == [0, 5]       # start inclusive, end exclusive
    assert sorted(sliding_starts(10, 10, 5)) == [5, 10]
    assert sorted(sliding_starts(-1, 10, 5)) == [-10, -5]   # floor alignment below zero
    assert sorted(sliding_starts(7, 10, 5, offset=2)) == [2, 7]
    assert sorted(sliding_starts(7, 10, 5, offset=7)) == [2, 7]
    assert sorted(sliding_starts(7, 10, 5, offset=3)) == [-2, 3]


@given(st.integers(-10_000, 10_000), st.integers(1, 50), st.integers(1, 10), st.integers(0, 100))
def test_sliding_window_count(t, slide, mult, offset):
    size = slide * mult
    starts = sliding_starts(t, size, slide, offset)
    assert len(starts) == mult  # ceil(size / slide) when slide divides size
    assert all(s <= t < s + size and (s - offset) % slide == 0 for s in starts)


@given(st.integers(-1000, 1000), st.integers(1, 30), st.integers(1, 100))
def test_sliding_window_count_when_slide_does_not_divide(t, slide, size):
    if slide > size:
        return
    starts = sliding_starts(t, size, slide)
    brute = [s for s in range(t - size - slide, t + 1) if s % slide == 0 and s <= t < s + size]
    assert sorted(starts) == brute
    assert len(starts) in (size // slide, -(-size // slide))


def test_sliding_counts_and_lateness():
    # size 10, every 5, delay 0
    batches = [rows(1, 7, 12), rows(3, 7)]
    # after batch 1 the watermark is 12: [0,10) and [-5,5) are closed, [5,15) is open.
    # 3 is in [-5,5) and [0,10): both closed -> late. 7 is in [0,10) (closed) and [5,15)
    # (open) -> counts in [5,15) only.
    result, late = sliding(batches, time="ts", keys=[], aggs=COUNT, size=10, slide=5)
    assert wins(result) == [(-5, 5, 1), (0, 10, 2), (5, 15, 3), (10, 20, 1)]
    assert [r["ts"] for r in late] == [3]
    # with allowed lateness 3, [0,10) stays open until the watermark reaches 13
    result, late = sliding(batches, time="ts", keys=[], aggs=COUNT, size=10, slide=5, lateness=3)
    assert wins(result) == [(-5, 5, 1), (0, 10, 4), (5, 15, 3), (10, 20, 1)]
    assert late == []


def test_sliding_with_slide_equal_to_size_is_tumbling():
    rnd = random.Random(7)
    for _ in range(50):
        batches = [[{"ts": rnd.randint(0, 300), "k": rnd.randint(0, 2), "v": rnd.choice([None, 1.0, 2.5])}
                    for _ in range(rnd.randint(0, 10))] for _ in range(rnd.randint(1, 5))]
        size, lat, delay = rnd.randint(1, 60), rnd.randint(0, 30), rnd.randint(0, 30)
        a, al = sliding(batches, time="ts", keys=["k"], aggs=AGGS, size=size, slide=size,
                        lateness=lat, delay=delay)
        b, bl = tumbling(batches, time="ts", keys=["k"], aggs=AGGS, size=size, lateness=lat, delay=delay)
        cols = ["window_start", "window_end", "k", *AGGS]
        assert canonical(a, cols) == canonical(b, cols)
        assert canonical(al, ["ts", "k", "v"]) == canonical(bl, ["ts", "k", "v"])


# --- sessions ----------------------------------------------------------------------------------
def test_session_gap_is_exclusive():
    # times differing by less than gap share a session; exactly gap apart splits
    assert wins(session([rows(0, 9)], time="ts", keys=["k"], aggs=COUNT, gap=10)[0]) == [(0, 19, 2)]
    assert wins(session([rows(0, 10)], time="ts", keys=["k"], aggs=COUNT, gap=10)[0]) == [(0, 10, 1), (10, 20, 1)]


def test_session_row_bridging_two_sessions_merges_them():
    batches = [rows(0, 20), rows(10)]
    result, late = session(batches, time="ts", keys=["k"], aggs=COUNT, gap=15, delay=100)
    assert wins(result) == [(0, 35, 3)]
    # transitive: 0, 8, 16, 24 chain with gap 9 though 0 and 24 are far apart
    assert wins(session([rows(24, 0), rows(16, 8)], time="ts", keys=["k"], aggs=COUNT, gap=9,
                        delay=100)[0]) == [(0, 33, 4)]


def test_sessions_are_per_key():
    batches = [rows(0, 5, k="a") + rows(3, k="b")]
    result, _ = session(batches, time="ts", keys=["k"], aggs=COUNT, gap=10)
    assert wins(result, ("k", "window_start", "window_end", "n")) == [("a", 0, 15, 2), ("b", 3, 13, 1)]


def test_session_lateness():
    # delay 0: the watermark after [0, 100] is 100
    batches = [rows(0, 100), rows(95, 120)]
    result, late = session(batches, time="ts", keys=["k"], aggs=COUNT, gap=10)
    assert [r["ts"] for r in late] == [95]  # 95 < 100 - 0
    assert wins(result) == [(0, 10, 1), (100, 110, 1), (120, 130, 1)]
    result, late = session(batches, time="ts", keys=["k"], aggs=COUNT, gap=10, lateness=5)
    assert late == []  # 95 >= 100 - 5: on time, and it joins the session of 100
    assert wins(result) == [(0, 10, 1), (95, 110, 2), (120, 130, 1)]


def test_session_first_last_follow_arrival_order_across_merges():
    batches = [[{"ts": 20, "k": "a", "v": 1.0}, {"ts": 0, "k": "a", "v": 2.0}],
               [{"ts": 10, "k": "a", "v": 3.0}]]
    result, _ = session(batches, time="ts", keys=["k"], aggs=AGGS, gap=15, delay=100)
    assert [(r["n"], r["total"], r["fst"], r["lst"]) for r in result] == [(3, 6.0, 1.0, 3.0)]


@given(st.lists(st.integers(0, 200), max_size=30), st.integers(1, 40))
def test_sessions_match_brute_force_connectivity(ts, gap):
    """sessions_of equals connected components of 'closer than gap'."""
    items = list(enumerate({"ts": t} for t in ts))
    comp = list(range(len(ts)))

    def find(i):
        while comp[i] != i:
            i = comp[i]
        return i
    for i in range(len(ts)):
        for j in range(len(ts)):
            if abs(ts[i] - ts[j]) < gap:
                comp[find(i)] = find(j)
    brute = sorted(sorted(i for i in range(len(ts)) if find(i) == root) for root in {find(i) for i in range(len(ts))})
    got = sorted(sorted(s for s, _ in sess) for sess in sessions_of(items, "ts", gap))
    assert got == brute


# --- emit strategies ---------------------------------------------------------------------------
def test_changelog_retracts_merged_sessions():
    batches = [rows(0), rows(20), rows(10)]
    trace = window_trace(batches, kind="session", time="ts", keys=["k"], gap=15, delay=100)
    log = [(r["window_start"], r["window_end"], r["n"], r["weight"])
           for r in emit_changelog(trace, ["k"], COUNT, kind="session")]
    assert log == [(0, 15, 1, 1), (20, 35, 1, 1), (0, 15, 1, -1), (20, 35, 1, -1), (0, 35, 3, 1)]
    upd = [(r["window_start"], r["window_end"], r["n"]) for r in emit_on_update(trace, ["k"], COUNT, kind="session")]
    assert upd == [(0, 15, 1), (20, 35, 1), (0, 35, 3)]


def test_changelog_of_tumbling_window_updated_twice():
    batches = [rows(1), rows(2, 3), rows(15)]
    trace = window_trace(batches, kind="tumbling", time="ts", keys=["k"], size=10, delay=100)
    log = [(r["window_start"], r["n"], r["weight"]) for r in emit_changelog(trace, ["k"], COUNT, kind="tumbling")]
    assert log == [(0, 1, 1), (0, 1, -1), (0, 3, 1), (10, 1, 1)]
    cols = ["window_start", "window_end", "k", "n"]
    folded = fold_changelog(emit_changelog(trace, ["k"], COUNT, kind="tumbling"), cols)
    assert canonical(folded, cols) == canonical(emit_final(trace, ["k"], COUNT), cols)


def test_on_window_close_fires_again_for_rows_within_lateness():
    # size 10, delay 0, lateness 5: [0,10) fires when W reaches 10, closes at 15
    batches = [rows(1), rows(11), rows(4), rows(16), rows(5)]
    trace = window_trace(batches, kind="tumbling", time="ts", keys=["k"], size=10, lateness=5)
    fired = [(r["window_start"], r["n"]) for r in emit_on_window_close(trace, ["k"], COUNT)]
    # 11 fires [0,10) with 1; 4 updates it (fires again with 2); 16 fires [10,20)? no: W=16 < 20;
    # 5 is late (15 <= 16); the flush fires [10,20) with 2
    assert fired == [(0, 1), (0, 2), (10, 2)]
    assert [r["ts"] for r in trace_late(trace)] == [5]


def test_final_emits_after_the_batch_that_closes_the_window():
    # size 10, delay 0, lateness 5: [0,10) closes when W reaches 15
    batches = [rows(1), rows(11), rows(4), rows(16), rows(5), rows(30)]
    trace = window_trace(batches, kind="tumbling", time="ts", keys=["k"], size=10, lateness=5)
    per_step = [[(r["window_start"], r["n"]) for r in step]
                for step in emit_final(trace, ["k"], COUNT, per_step=True)]
    assert per_step == [[], [], [], [(0, 2)], [], [(10, 2)], [(30, 1)]]
    # sessions close at last + gap + lateness
    trace = window_trace([rows(0), rows(14), rows(15)], kind="session", time="ts", keys=["k"], gap=10, lateness=5)
    per_step = [[(r["window_start"], r["window_end"]) for r in step]
                for step in emit_final(trace, ["k"], COUNT, per_step=True)]
    assert per_step == [[], [], [(0, 10)], [(14, 25)]]


def test_window_states_lists_every_intermediate_row():
    trace = window_trace([rows(0), rows(5), rows(20)], kind="session", time="ts", keys=["k"], gap=10, delay=100)
    states = sorted((r["window_start"], r["window_end"], r["n"]) for r in window_states(trace, ["k"], COUNT))
    assert states == [(0, 10, 1), (0, 15, 2), (20, 30, 1)]


def test_fold_changelog_and_last_per_window():
    log = [{"window_start": 0, "window_end": 10, "k": 1, "n": 1, "weight": 1},
           {"window_start": 0, "window_end": 10, "k": 1, "n": 1, "weight": -1},
           {"window_start": 0, "window_end": 10, "k": 1, "n": 2, "weight": 1},
           {"window_start": 0, "window_end": 10, "k": 2, "n": 5, "weight": 1}]
    cols = ["window_start", "window_end", "k", "n"]
    assert sorted(r["n"] for r in fold_changelog(log, cols)) == [2, 5]
    assert sorted(r["n"] for r in last_per_window(log, ["k"])) == [2, 5]
    assert [r["n"] for r in last_per_window([log[2], log[0]], ["k"])] == [1]  # emission order
    with pytest.raises(AssertionError):
        fold_changelog([{**log[0], "weight": -1}], cols)
    # a row emitted twice without retraction folds to weight 2: it shows up twice
    assert len(fold_changelog([log[0], log[0]], cols)) == 2


@st.composite
def model_scenario(draw):
    kind = draw(st.sampled_from(["tumbling", "sliding", "session"]))
    n = draw(st.integers(0, 40))
    batch = [{"ts": draw(st.integers(0, 400)), "k": draw(st.integers(0, 2)),
              "v": draw(st.sampled_from([None, 1.0, 2.5, -4.0]))} for _ in range(n)]
    batches = split(batch, draw(st.lists(st.integers(0, n), max_size=5)))
    slide = draw(st.integers(1, 40))
    params = dict(tumbling=dict(size=draw(st.integers(1, 80))),
                  sliding=dict(size=slide * draw(st.integers(1, 4)), slide=slide),
                  session=dict(gap=draw(st.integers(1, 60))))[kind]
    return kind, batches, params, draw(st.integers(0, 50)), draw(st.integers(0, 80))


@given(model_scenario())
def test_emit_models_agree_with_final(sc):
    kind, batches, params, lateness, delay = sc
    trace = window_trace(batches, kind=kind, time="ts", keys=["k"], lateness=lateness, delay=delay, **params)
    cols = ["window_start", "window_end", "k", *AGGS]
    final = canonical(emit_final(trace, ["k"], AGGS), cols)
    log = emit_changelog(trace, ["k"], AGGS, kind=kind)
    assert canonical(fold_changelog(log, cols), cols) == final
    updates = emit_on_update(trace, ["k"], AGGS, kind=kind)
    if kind != "session":
        assert canonical(last_per_window(updates, ["k"]), cols) == final
        fired = emit_on_window_close(trace, ["k"], AGGS)
        assert canonical(last_per_window(fired, ["k"]), cols) == final
        if lateness == 0:
            assert canonical(fired, cols) == final
    else:
        assert set(final) <= set(canonical(last_per_window(updates, ["k"]), cols))
    # the simple models agree with the trace
    want, _ = FINAL_MODELS[kind](batches, time="ts", keys=["k"], aggs=AGGS, lateness=lateness, delay=delay, **params)
    assert canonical(want, cols) == final


# --- interval join -----------------------------------------------------------------------------
LCOLS, RCOLS = ["ts", "id", "v"], ["ts", "id", "v", "w"]


def L(ts, id, v):
    return {"ts": ts, "id": id, "v": v}


def R(ts, id, v, w=None):
    return {"ts": ts, "id": id, "v": v, "w": w}


def join(lb, rb, order, how="inner", lo=0, hi=10, **kw):
    return interval_join(lb, rb, order, on=["id"], lo=lo, hi=hi, how=how, left_columns=LCOLS,
                         right_columns=RCOLS, **kw)


def test_join_columns_suffix_and_keys():
    assert [c[0] for c in join_columns(LCOLS, RCOLS, ["id"])] == ["ts", "id", "v", "ts_right", "v_right", "w"]
    # a suffixed name that is taken too gets suffixed again (a corner no engine test relies on)
    assert [c[0] for c in join_columns(["a", "x"], ["a", "x", "x_right"], ["a"])] == \
        ["a", "x", "x_right", "x_right_right"]


def test_join_bounds_inclusive():
    left = [[L(100, 1, "l")]]
    right = [[R(99, 1, "a"), R(100, 1, "b"), R(110, 1, "c"), R(111, 1, "d"), R(105, 2, "e")]]
    out, late = join(left, right, ["left", "right"])
    assert sorted(r["v_right"] for r in out) == ["b", "c"]
    assert late == []
    out, _ = join(left, right, ["right", "left"], lo=-1, hi=5)
    assert sorted(r["v_right"] for r in out) == ["a", "b"]


def test_outer_joins_emit_unmatched_rows_once():
    left = [[L(0, 1, "l1"), L(0, 2, "l2"), L(0, None, "lnull")]]
    right = [[R(5, 1, "r1", 1.5), R(5, 3, "r3"), R(5, None, "rnull")]]
    out, _ = join(left, right, ["left", "right"], how="full")
    got = sorted(((r["id"], r["v"], r["v_right"], r["ts"], r["ts_right"]) for r in out), key=repr)
    assert got == sorted([
        (1, "l1", "r1", 0, 5),
        (2, "l2", None, 0, None),
        (None, "lnull", None, 0, None),      # a null key never matches
        (3, None, "r3", None, 5),            # right only: the key column holds the right key
        (None, None, "rnull", None, 5),
    ], key=repr)
    assert sorted(r["v"] for r in join(left, right, ["left", "right"], how="left")[0]) == ["l1", "l2", "lnull"]
    assert sorted(r["v_right"] for r in join(left, right, ["left", "right"], how="right")[0]) == ["r1", "r3", "rnull"]
    assert [r["v"] for r in join(left, right, ["left", "right"], how="inner")[0]] == ["l1"]


def test_join_many_to_many():
    left = [[L(0, 1, "a"), L(5, 1, "b")]]
    right = [[R(5, 1, "x"), R(10, 1, "y"), R(15, 1, "z")]]
    out, _ = join(left, right, ["right", "left"])
    assert sorted((r["v"], r["v_right"]) for r in out) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("b", "z")]


def test_join_watermark_is_min_of_both_sides_and_none_until_both_have_data():
    left = [[L(1000, 1, "a")], [L(-5, 1, "b")], [L(990, 1, "c")]]
    right = [[R(0, 1, "x")], [R(2000, 1, "y")]]
    order = ["left", "right", "left", "right", "left"]
    # left 1000: W none. right 0: W none before it (right had nothing) -> on time; W = 0.
    # left -5: late (< 0). right 2000: W = min(1000, 2000) = 1000. left 990: late with L=0.
    out, late = join(left, right, order, how="full")
    assert sorted(r["v"] for r in late if r["v"]) == ["b", "c"]
    assert all(r["v_right"] is None for r in late)
    out, late = join(left, right, order, how="full", lateness=4)
    assert sorted(r["v"] for r in late if r["v"]) == ["b", "c"]  # -5 < 0 - 4, 990 < 1000 - 4
    out, late = join(left, right, order, how="full", lateness=10)
    assert late == []  # -5 >= 0 - 10, 990 >= 1000 - 10
    assert sorted((r["v"], r["v_right"]) for r in out if r["v"] and r["v_right"]) == [("b", "x")]
    # the per-side delay lowers that side's watermark
    out, late = join(left, right, order, how="full", left_delay=5)
    assert sorted(r["v"] for r in late if r["v"]) == ["b", "c"]  # W = min(995, 2000)
    out, late = join(left, right, order, how="full", left_delay=20)
    assert sorted(r["v"] for r in late if r["v"]) == ["b"]  # W = min(980, 2000)


def test_late_right_row_shaped_like_unmatched_right_row():
    left = [[L(100, 1, "a")], [L(200, 1, "b")]]
    right = [[R(300, 1, "x")], [R(50, 7, "late", 2.0)]]
    _, late = join(left, right, ["left", "right", "left", "right"])
    assert late == [{"ts": None, "id": 7, "v": None, "ts_right": 50, "v_right": "late", "w": 2.0}]


# --- lookup ------------------------------------------------------------------------------------
def test_lookup_model():
    stream = [{"ts": 1, "k": 1, "name": "s1"}, {"ts": 2, "k": 2, "name": "s2"},
              {"ts": 3, "k": None, "name": "s3"}]
    table = [{"k": 1, "name": "old", "px": 1.0}, {"k": 1, "name": "t1", "px": 2.0}, {"k": None, "name": "tn", "px": 9.0}]
    left = lookup(stream, table, on=["k"], how="left")
    assert left == [{"ts": 1, "k": 1, "name": "s1", "name_right": "t1", "px": 2.0},
                    {"ts": 2, "k": 2, "name": "s2", "name_right": None, "px": None},
                    {"ts": 3, "k": None, "name": "s3", "name_right": None, "px": None}]
    assert lookup(stream, table, on=["k"], how="inner") == left[:1]


# --- dedup -------------------------------------------------------------------------------------
def D(t, k, i):
    return {"ts": t, "k": k, "i": i}


def ids(rows_):
    return [r["i"] for r in rows_]


def test_dedup_model_keeps_rows_at_least_within_from_the_last_kept():
    # within 10: 1 kept (k=100); 2 dup; 3 kept (|111-100| = 11); 4 dup of 3 (not of 1);
    # 5 out of order, |103-111| = 8: dup; 6 exactly within of 3: kept; None is a key too.
    batch = [D(100, "a", 1), D(105, "a", 2), D(111, "a", 3), D(115, "a", 4), D(103, "a", 5),
             D(121, "a", 6), D(100, None, 7), D(101, None, 8), D(101, "b", 9)]
    kept, late, dups = dedup([batch], time="ts", on=["k"], within=10)
    assert ids(kept) == [1, 3, 6, 7, 9] and ids(dups) == [2, 4, 5, 8] and late == []


def test_dedup_model_late_rows_are_judged_against_the_watermark_before_the_batch():
    # delay 5: after the first batch W = 195; 190 is late (and sets nothing), 195 is on time
    # although it is within 10 of nothing; 196 is a dup of 195.
    b1 = [D(100, "a", 1), D(200, "b", 2)]
    b2 = [D(190, "c", 3), D(195, "c", 4), D(196, "c", 5), D(300, "a", 6), D(199, "a", 7)]
    kept, late, dups = dedup([b1, b2], time="ts", on=["k"], within=10, delay=5)
    assert ids(kept) == [1, 2, 4, 6, 7] and ids(late) == [3] and ids(dups) == [5]
    # compound keys compare every column
    rows_ = [{"ts": 1, "a": 1, "b": "x", "i": 1}, {"ts": 2, "a": 1, "b": "y", "i": 2},
             {"ts": 3, "a": 1, "b": "x", "i": 3}]
    kept, _, dups = dedup([rows_], time="ts", on=["a", "b"], within=5)
    assert ids(kept) == [1, 2] and ids(dups) == [3]
