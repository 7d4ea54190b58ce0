"""Bad arguments to sliding and session windows, emit strategies, joins and queries over
query results get specific laminar.errors exceptions with messages that name the problem.

Errors may be raised by the builder call itself, by collect() or by the first push; each
test wraps the whole sequence (the contract is the exception type, not the moment)."""

from __future__ import annotations

import pyarrow as pa
import pytest

import laminar as lm
from laminar import errors

SCHEMA = pa.schema([("ts", pa.int64()), ("id", pa.int64()), ("name", pa.string()), ("value", pa.float64())])


def push_one(src):
    src.push(pa.table({"ts": [0], "id": [1], "name": ["x"], "value": [1.0]}, schema=SCHEMA))


def window_query(make_window, **kw):
    eng = lm.Engine()
    s = eng.source("s", time="ts", schema=SCHEMA)
    s.window(make_window(), **kw).group_by("id").agg(n=lm.count()).collect()
    push_one(s)


def join_query(**kw):
    eng = lm.Engine()
    a = eng.source("a", time="ts", schema=SCHEMA)
    b = eng.source("b", time="ts", schema=kw.pop("right_schema", SCHEMA))
    a.join(b, **{"on": "id", "within": (0, 10), **kw}).collect()
    push_one(a)


# --- sliding / session -------------------------------------------------------------------------
def test_sliding_every_longer_than_size():
    with pytest.raises(errors.QueryError, match="every|slide"):
        window_query(lambda: lm.sliding("1s", every="2s"))


def test_sliding_zero_slide_or_size():
    # like tumbling(0): a zero duration where a positive one is needed is a DurationError
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.sliding("1s", every=0))
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.sliding(0, every=0))


def test_sliding_bad_duration_text():
    with pytest.raises(errors.DurationError, match="ten seconds"):
        window_query(lambda: lm.sliding("ten seconds", every="1s"))
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.sliding("10s", every="-1s"))


def test_session_gap_zero_or_negative():
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.session(0))
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.session("0ms"))
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.session(-5))


def test_session_group_by_missing_column():
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        eng = lm.Engine()
        s = eng.source("s", time="ts", schema=SCHEMA)
        s.window(lm.session("1s")).group_by("nope").agg(n=lm.count()).collect()
        push_one(s)


def test_bad_late_policy_and_lateness_on_new_windows():
    with pytest.raises(errors.QueryError, match="late"):
        window_query(lambda: lm.session("1s"), late="keep")
    with pytest.raises(errors.DurationError):
        window_query(lambda: lm.sliding("1s", every="100ms"), allowed_lateness="-1s")


# --- emit strategies ---------------------------------------------------------------------------
def test_periodic_needs_a_positive_interval():
    with pytest.raises(errors.DurationError):
        lm.periodic(0)
    with pytest.raises(errors.DurationError):
        lm.periodic("often")


def test_emit_takes_a_strategy():
    eng = lm.Engine()
    s = eng.source("s", time="ts", schema=SCHEMA)
    with pytest.raises(errors.QueryError, match="emit"):
        s.window(lm.sliding("1s", every="1s")).agg(n=lm.count()).emit("final")


# --- joins -------------------------------------------------------------------------------------
def test_join_within_lower_above_upper():
    with pytest.raises(errors.QueryError, match="within"):
        join_query(within=(10, 5))
    with pytest.raises(errors.QueryError, match="within"):
        join_query(within=("2s", "1s"))


def test_join_within_not_a_pair():
    with pytest.raises((errors.QueryError, errors.DurationError)):
        join_query(within="10s")


def test_join_bad_how():
    with pytest.raises(errors.QueryError, match="cross"):
        join_query(how="cross")


def test_join_bad_late_policy():
    with pytest.raises(errors.QueryError, match="late"):
        join_query(late="keep")


def test_join_negative_lateness():
    with pytest.raises(errors.DurationError):
        join_query(allowed_lateness="-1s")


def test_join_on_missing_column():
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        join_query(on="nope")
    other = pa.schema([("ts", pa.int64()), ("key", pa.int64())])
    with pytest.raises(errors.ColumnNotFoundError, match="id"):
        join_query(right_schema=other)  # 'id' exists on the left only
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        join_query(on=["id", "nope"])


def test_join_key_types_differ():
    # an int64 key against a string key cannot match: a schema error (ColumnTypeError is one)
    other = pa.schema([("ts", pa.int64()), ("id", pa.string())])
    with pytest.raises(errors.SchemaError, match="id"):
        join_query(right_schema=other)


def test_join_needs_sources_of_one_engine():
    a = lm.Engine().source("a", time="ts", schema=SCHEMA)
    b = lm.Engine().source("b", time="ts", schema=SCHEMA)
    with pytest.raises(errors.QueryError, match="engine"):
        a.join(b, on="id", within=(0, 10)).collect()


def test_join_takes_a_stream():
    a = lm.Engine().source("a", time="ts", schema=SCHEMA)
    with pytest.raises(errors.QueryError):
        a.join("b", on="id", within=(0, 10)).collect()


def test_join_on_empty():
    with pytest.raises(errors.QueryError):
        join_query(on=[])


# --- queries over query results ----------------------------------------------------------------
def chained(emit, lateness=0):
    eng = lm.Engine()
    s = eng.source("s", time="ts", schema=SCHEMA)
    q = s.window(lm.tumbling("1s"), allowed_lateness=lateness).group_by("id").agg(n=lm.count())
    if emit is not None:
        q = q.emit(emit)
    q.window(lm.tumbling("1m")).group_by("id").agg(n=lm.sum("n")).collect()
    push_one(s)


@pytest.mark.parametrize("emit", [lm.on_update, lm.changelog, lambda: lm.periodic("1s")],
                         ids=["on_update", "changelog", "periodic"])
def test_query_over_results_that_are_not_append_only(emit):
    with pytest.raises(errors.QueryError, match="final|append"):
        chained(emit())


def test_query_over_on_window_close_with_lateness():
    with pytest.raises(errors.QueryError, match="final|append|lateness"):
        chained(lm.on_window_close(), lateness="1s")
    with pytest.raises(errors.QueryError, match="final|append|lateness"):
        chained(None, lateness="1s")  # on_window_close is the default


def test_query_over_results_that_are_fine():
    chained(lm.final(), lateness="1s")
    chained(lm.on_window_close())
    chained(None)
