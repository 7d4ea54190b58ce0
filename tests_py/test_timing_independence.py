"""Results must not depend on how the input is cut into pushes or on the pauses between
pushes: for every window kind and every join type, data whose disorder stays within the
watermark delay (so nothing is late) gives exactly the same rows whether pushed at once or
split at random batch boundaries with random 0-2 ms pauses (and, for joins, any interleaving
of the two sides). Both runs are also checked against the reference models."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from reference import JOIN_TYPES, canonical, emit_final
from scenarios import (
    WINDOW_KINDS, join_scenario, model_aggs, pause, random_split, result_columns, run_join, run_window,
    scenario_aggs, window_scenario,
)


@given(st.sampled_from(WINDOW_KINDS).flatmap(lambda k: window_scenario(kinds=(k,), nothing_late=True)),
       st.randoms(use_true_random=False))
def test_windows_do_not_depend_on_batching_or_pauses(sc, rnd):
    names = scenario_aggs(sc)
    cols = result_columns(sc, names)
    bulk = run_window(sc, names, batches=[sc.rows], emit=lm.final())
    paced = run_window(sc, names, batches=random_split(rnd, sc.rows), pause=pause(rnd), emit=lm.final())
    assert canonical(bulk.rows, cols) == canonical(paced.rows, cols)
    want = emit_final(sc.trace([sc.rows]), sc.keys, model_aggs(names))
    assert canonical(bulk.rows, cols) == canonical(want, cols)
    for run in (bulk, paced):
        assert run.late == [] and run.metrics["late_side_output"] == 0


@given(st.sampled_from(JOIN_TYPES).flatmap(lambda how: join_scenario(hows=(how,), nothing_late=True)),
       st.randoms(use_true_random=False))
def test_joins_do_not_depend_on_batching_interleaving_or_pauses(sc, rnd):
    cols = sc.result_columns()
    # bulk: one push per side (left first)
    bulk = run_join(sc, left_batches=[sc.left_rows], right_batches=[sc.right_rows], order=["left", "right"])
    lb, rb = random_split(rnd, sc.left_rows), random_split(rnd, sc.right_rows)
    order = ["left"] * len(lb) + ["right"] * len(rb)
    rnd.shuffle(order)
    paced = run_join(sc, left_batches=lb, right_batches=rb, order=order, pause=pause(rnd))
    assert canonical(bulk.rows, cols) == canonical(paced.rows, cols)
    want, late = sc.model(lb, rb, order)
    assert late == []
    assert canonical(paced.rows, cols) == canonical(want, cols)
    for run in (bulk, paced):
        assert run.late == [] and run.metrics["late_side_output"] == 0 and run.metrics["state_rows"] == 0
