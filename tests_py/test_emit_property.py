"""Emit strategies against the reference models, for tumbling, sliding and session windows.

What each strategy emits, and after which push, is modelled exactly (reference.py) from
docs/SEMANTICS.md; results are read with poll() after every push, since "results completed
by a push are available to poll() as soon as push returns". Beyond the exact models, the
relations the contract states are checked directly:
- final() = the reference model; on_window_close() with no allowed lateness = final();
- the last row per window and key of on_window_close / on_update / periodic = final()'s
  (for sessions: of every session that survives merging; the other sessions emitted on the
  way must each lie inside a surviving session of the same key);
- the changelog, weights summed per distinct row, = final() with weight 1."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from reference import (
    canonical, emit_changelog, emit_final, emit_on_update, emit_on_window_close, fold_changelog,
    last_per_window, window_states,
)
from scenarios import WINDOW_KINDS, model_aggs, result_columns, run_window, scenario_aggs, window_scenario

FIXED = ("tumbling", "sliding")


def model_case(sc):
    """What a test of ``sc`` compares: the aggregate names, the result columns, the model's
    trace and the model's aggregates."""
    names = scenario_aggs(sc)
    return names, result_columns(sc, names), sc.trace(), model_aggs(names)


def per_push(run, cols):
    return [canonical(rows, cols) for rows in run.per_push]


def model_per_step(steps, cols):
    return [canonical(rows, cols) for rows in steps]


def check_last_rows(sc, emitted, final, cols):
    """The last row per window and key equals final()'s; for sessions, every session emitted
    on the way that did not survive lies inside a final session of the same key."""
    last = last_per_window(emitted, sc.keys)
    if sc.kind != "session":
        assert canonical(last, cols) == canonical(final, cols)
        return
    final_set = set(canonical(final, cols))
    last_set = canonical(last, cols)
    assert final_set <= set(last_set), "a final session's last emitted row is not its final row"
    key_at = slice(2, 2 + len(sc.keys))
    finals = [(r[0], r[1], r[key_at]) for r in final_set]
    for r in last_set:
        if r in final_set:
            continue
        inside = [f for f in finals if f[2] == r[key_at] and f[0] <= r[0] and r[1] <= f[1]]
        assert inside, f"emitted session {r} lies in no final session"
        assert (r[0], r[1], r[key_at]) not in finals, f"stale row for a surviving session: {r}"


@given(window_scenario())
def test_final_matches_model_push_by_push(sc):
    names, cols, trace, aggs = model_case(sc)
    run = run_window(sc, names, emit=lm.final())
    assert per_push(run, cols) == model_per_step(emit_final(trace, sc.keys, aggs, per_step=True), cols)
    if run.rows:
        assert run.columns == cols
    assert run.metrics["open_windows"] == 0 and run.metrics["live_groups"] == 0


@given(window_scenario(lateness=0))
def test_on_window_close_without_lateness_equals_final(sc):
    names, cols, trace, aggs = model_case(sc)
    want = model_per_step(emit_final(trace, sc.keys, aggs, per_step=True), cols)
    default = run_window(sc, names)                       # on_window_close is the default
    explicit = run_window(sc, names, emit=lm.on_window_close())
    assert per_push(default, cols) == want
    assert per_push(explicit, cols) == want


@given(window_scenario(kinds=FIXED))
def test_on_window_close_with_lateness_matches_model(sc):
    """Fires when the watermark reaches the window's end, then again after each batch that
    brings rows within the allowed lateness; the last row per window is final()'s."""
    names, cols, trace, aggs = model_case(sc)
    run = run_window(sc, names, emit=lm.on_window_close())
    assert per_push(run, cols) == model_per_step(emit_on_window_close(trace, sc.keys, aggs, per_step=True), cols)
    check_last_rows(sc, run.rows, emit_final(trace, sc.keys, aggs), cols)


@given(window_scenario(kinds=("session",)))
def test_session_on_window_close_last_rows_are_final(sc):
    """For sessions with allowed lateness, when a fired session grows is not pinned down
    exactly; the last rows must still be final()'s."""
    names, cols, trace, aggs = model_case(sc)
    run = run_window(sc, names, emit=lm.on_window_close())
    check_last_rows(sc, run.rows, emit_final(trace, sc.keys, aggs), cols)


@given(window_scenario())
def test_on_update_matches_model_push_by_push(sc):
    names, cols, trace, aggs = model_case(sc)
    run = run_window(sc, names, emit=lm.on_update())
    want = emit_on_update(trace, sc.keys, aggs, kind=sc.kind, per_step=True)
    assert per_push(run, cols) == model_per_step(want, cols)
    for rows in run.per_push:  # one row per window and key per batch
        ids = [(r["window_start"], r["window_end"], *(r[k] for k in sc.keys)) for r in rows]
        assert len(ids) == len(set(ids))
    assert run.per_push[-1] == []  # nothing extra at close
    check_last_rows(sc, run.rows, emit_final(trace, sc.keys, aggs), cols)


@given(window_scenario())
def test_changelog_matches_model_and_folds_to_final(sc):
    names, cols, trace, aggs = model_case(sc)
    wcols = result_columns(sc, names, weight=True)
    run = run_window(sc, names, emit=lm.changelog())
    if run.rows:
        assert run.columns == wcols  # weight comes last
    assert all(r["weight"] in (1, -1) for r in run.rows)
    want = emit_changelog(trace, sc.keys, aggs, kind=sc.kind, per_step=True)
    assert per_push(run, wcols) == model_per_step(want, wcols)
    # within a batch, the retractions of a window come before its new row
    def replaces(new, old):
        if any(new[k] != old[k] for k in sc.keys):
            return False
        if sc.kind == "session":  # a session replaces the sessions it now covers
            return old["window_start"] < new["window_end"] and new["window_start"] < old["window_end"]
        return (new["window_start"], new["window_end"]) == (old["window_start"], old["window_end"])
    for rows in run.per_push:
        for i, r in enumerate(rows):
            if r["weight"] == 1:
                after = [x for x in rows[i + 1:] if x["weight"] == -1 and replaces(r, x)]
                assert not after, f"retraction {after[0]} comes after the row replacing it: {r}"
    folded = fold_changelog(run.rows, cols)
    assert canonical(folded, cols) == canonical(emit_final(trace, sc.keys, aggs), cols)


@given(window_scenario(), st.randoms(use_true_random=False))
def test_periodic_last_rows_are_final(sc, rnd: random.Random):
    """Processing-time emits: what comes out depends on the clock, but every row must be a
    state the window really was in after some push, and the last row per window and key is
    final()'s."""
    names, cols, trace, aggs = model_case(sc)
    run = run_window(sc, names, emit=lm.periodic("1ms"),
                     pause=lambda: rnd.choice([0, 0, 0.0005, 0.002]))
    states = set(canonical(window_states(trace, sc.keys, aggs), cols))
    for r in canonical(run.rows, cols):
        assert r in states, f"periodic row {r} is no state its window was ever in"
    check_last_rows(sc, run.rows, emit_final(trace, sc.keys, aggs), cols)


@given(window_scenario(kinds=WINDOW_KINDS))
def test_every_strategy_agrees_on_final_rows(sc):
    """The same data under each strategy: final(), the fold of changelog(), and the last rows
    of on_update() and on_window_close() describe the same windows."""
    names = scenario_aggs(sc)
    cols = result_columns(sc, names)
    final = run_window(sc, names, emit=lm.final()).rows
    log = run_window(sc, names, emit=lm.changelog()).rows
    assert canonical(fold_changelog(log, cols), cols) == canonical(final, cols)
    check_last_rows(sc, run_window(sc, names, emit=lm.on_update()).rows, final, cols)
    check_last_rows(sc, run_window(sc, names, emit=lm.on_window_close()).rows, final, cols)
