"""Every kind of bad input gets a specific exception whose message says what to fix; nothing
panics across the FFI boundary; a failed push applies nothing."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

import laminar as lm
from laminar import errors

SCHEMA = pa.schema([("ts", pa.int64()), ("key", pa.int64()), ("name", pa.string()), ("value", pa.float64())])


def good(n=3, start=0):
    return pa.table({"ts": list(range(start, start + n)), "key": [1] * n, "name": ["x"] * n,
                     "value": [1.0] * n}, schema=SCHEMA)


def engine_with_source(schema=SCHEMA):
    eng = lm.Engine()
    return eng, eng.source("s", time="ts", schema=schema)


def declaring_fails(build, error, match):
    """Declaring the query ``build(source)`` over a source with SCHEMA raises ``error``."""
    _, s = engine_with_source()
    with pytest.raises(error, match=match):
        build(s).collect()


def test_unknown_group_by_column_with_declared_schema():
    declaring_fails(lambda s: s.window(lm.tumbling("1s")).group_by("nope").agg(n=lm.count()),
                    errors.ColumnNotFoundError, "'nope'.*available columns: \\[ts, key, name, value\\]")


def test_unknown_column_found_at_first_push_when_schema_not_declared():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    s.window(lm.tumbling("1s")).group_by("nope").agg(n=lm.count()).collect()
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        s.push(good())
    assert eng.metrics()["sources"]["s"]["rows"] == 0


def test_wrongly_typed_aggregate_column():
    declaring_fails(lambda s: s.window(lm.tumbling("1s")).agg(total=lm.sum("name")),
                    errors.ColumnTypeError, "'name' has type Utf8")


def test_float_group_key_rejected():
    declaring_fails(lambda s: s.window(lm.tumbling("1s")).group_by("value").agg(n=lm.count()),
                    errors.ColumnTypeError, "group_by keys")


def test_missing_time_column():
    eng = lm.Engine()
    with pytest.raises(errors.ColumnNotFoundError, match="'when'.*time column"):
        eng.source("s", time="when", schema=SCHEMA)
    s = eng.source("s2", time="when")
    with pytest.raises(errors.ColumnNotFoundError, match="when"):
        s.push(good())


def test_time_column_of_wrong_type():
    eng = lm.Engine()
    s = eng.source("s", time="value")
    with pytest.raises(errors.ColumnTypeError, match="int64 epoch milliseconds or a timestamp"):
        s.push(good())


def test_nulls_in_time_column_apply_nothing():
    eng, s = engine_with_source()
    out = s.window(lm.tumbling(10)).agg(n=lm.count()).collect()
    bad = pa.table({"ts": [1, None, 3], "key": [1, 1, 1], "name": ["a"] * 3, "value": [1.0] * 3}, schema=SCHEMA)
    with pytest.raises(errors.TimeColumnError, match="1 null value"):
        s.push(bad)
    # a Table whose second chunk is bad: nothing of the first chunk is applied either
    mixed = pa.concat_tables([good(2), bad])
    with pytest.raises(errors.TimeColumnError):
        s.push(mixed)
    assert eng.metrics()["sources"]["s"]["rows"] == 0
    s.push(good(3))
    eng.flush()
    assert out.to_arrow()["n"].to_pylist() == [3]


def test_out_of_range_time():
    _, s = engine_with_source()
    t = good(1).set_column(0, "ts", pa.array([2**62], pa.int64()))
    with pytest.raises(errors.TimeColumnError, match="outside the supported range"):
        s.push(t)


def test_schema_change_between_pushes():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    s.push(good())
    with pytest.raises(errors.SchemaMismatchError, match="'value' has type Int64 but the source has Float64"):
        s.push(pa.table({"ts": [5], "key": [1], "name": ["x"], "value": [1]}))
    with pytest.raises(errors.SchemaMismatchError, match="extra column 'extra'"):
        s.push(good().append_column("extra", pa.array([1, 2, 3])))
    with pytest.raises(errors.SchemaMismatchError, match="'name' .* is missing"):
        s.push(good().drop_columns(["name"]))
    # same columns in another order are matched by name
    s.push(good().select(["value", "name", "key", "ts"]))


@pytest.mark.parametrize("bad", ["1 parsec", "", "ms", "-1s", "1.5us", "10 seconds", "1s2", True, 1.5, None])
def test_bad_durations(bad):
    with pytest.raises(errors.DurationError):
        lm.tumbling(bad)


def test_duration_forms():
    assert lm.tumbling("1s").size_ms == 1000
    assert lm.tumbling("1m30s").size_ms == 90_000
    assert lm.tumbling("2min").size_ms == 120_000
    assert lm.tumbling("1.5s").size_ms == 1500
    assert lm.tumbling(timedelta(milliseconds=250)).size_ms == 250
    assert lm.tumbling(250).size_ms == 250
    assert lm.bounded_delay("200ms").delay_ms == 200
    assert lm.bounded_delay("2000us").delay_ms == 2
    with pytest.raises(errors.DurationError, match="longer than zero"):
        lm.tumbling("0s")
    with pytest.raises(errors.DurationError, match="whole number of milliseconds"):
        lm.tumbling(timedelta(microseconds=1500))


def test_push_after_close_and_after_flush():
    eng, s = engine_with_source()
    s.push(good())
    eng.flush()
    with pytest.raises(errors.EngineClosedError, match="flush"):
        s.push(good(start=10))
    eng.close()
    with pytest.raises(errors.EngineClosedError, match="closed"):
        s.push(good(start=20))
    with pytest.raises(errors.EngineClosedError):
        eng.source("t", time="ts")


def test_push_of_unsupported_object():
    _, s = engine_with_source()
    with pytest.raises(errors.InputTypeError, match="cannot push a builtins.list"):
        s.push([1, 2, 3])


def test_query_shape_errors():
    _, s = engine_with_source()
    with pytest.raises(errors.QueryError, match="needs a window first"):
        s.group_by("key")
    with pytest.raises(errors.QueryError, match="at least one aggregate"):
        s.window(lm.tumbling("1s")).group_by("key").agg()
    with pytest.raises(errors.QueryError, match="filter predicate must be boolean"):
        s.filter(lm.col("value") + 1).collect()
    with pytest.raises(errors.QueryError, match="no truth value"):
        (lm.col("a") > 1) and (lm.col("b") > 2)
    with pytest.raises(errors.QueryError, match="late must be"):
        s.window(lm.tumbling("1s"), late="keep")
    with pytest.raises(errors.QueryError, match="cannot combine a column of type Utf8 with a literal of type Boolean"):
        s.filter(lm.col("name") > True).collect()
    with pytest.raises(errors.NameConflictError, match="already exists"):
        s._engine.source("s", time="ts")
    q = s.window(lm.tumbling("1s")).agg(n=lm.count())
    with pytest.raises(errors.QueryError, match="drops late rows"):
        q.collect().late()


def test_bad_state_dir_says_so():
    with pytest.raises(errors.QueryError, match="state_dir"):
        lm.Engine(state_dir=123)


def test_sum_overflow_is_an_error_not_a_wrapped_value():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    s.window(lm.tumbling("1s")).agg(total=lm.sum("v")).collect()
    with pytest.raises(errors.AggregateOverflowError, match="int64"):
        s.push(pa.table({"ts": [0, 1], "v": [2**62, 2**62]}))
    # the window still holds the overflowed sum: it reports again instead of emitting it
    with pytest.raises(errors.AggregateOverflowError, match="earlier in this window"):
        eng.flush()


def test_rust_panic_becomes_python_exception():
    with pytest.raises(errors.LaminarError, match="deliberate test panic"):
        lm._laminar._panic_for_tests()


def test_pandas_input_errors_name_the_column():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    with pytest.raises(errors.ColumnTypeError, match="'ts' has type (Large)?Utf8"):
        s.push(pd.DataFrame({"ts": ["2024-01-01"], "v": [1]}))


# --- dedup -------------------------------------------------------------------------------------
def test_dedup_unknown_column_names_the_columns_that_exist():
    declaring_fails(lambda s: s.dedup("nope", within="1s"),
                    errors.ColumnNotFoundError, "'nope' not found in dedup.*available columns: \\[ts, key, name, value\\]")
    declaring_fails(lambda s: s.dedup(["key", "nope"], within="1s"), errors.ColumnNotFoundError, "'nope'")
    # without a declared schema the first push finds it, and applies nothing
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    s.dedup("nope", within="1s").collect()
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        s.push(good())
    assert eng.metrics()["sources"]["s"]["rows"] == 0


@pytest.mark.parametrize("on", [[], "", (), ["key", ""], 5, None, ["key", "key"]])
def test_dedup_needs_key_columns(on):
    _, s = engine_with_source()
    with pytest.raises(errors.QueryError, match="dedup\\(\\) on="):
        s.dedup(on, within="1s")


@pytest.mark.parametrize("within, match", [
    (0, "longer than zero"), ("0s", "longer than zero"), ("-1s", "cannot read"), (-5, "negative"),
    ("soon", "cannot read 'soon'"), ("1500us", "whole number of milliseconds"), (1.5, "expected a"),
    (True, "expected a duration"),
])
def test_dedup_within_must_be_a_positive_duration(within, match):
    _, s = engine_with_source()
    with pytest.raises(errors.DurationError, match=f"dedup within.*{match}"):
        s.dedup("key", within=within)
    assert issubclass(errors.DurationError, ValueError)


def test_dedup_within_is_required():
    _, s = engine_with_source()
    with pytest.raises(errors.QueryError, match="needs within="):
        s.dedup("key", within=None)
    with pytest.raises(TypeError):
        s.dedup("key")


def test_dedup_state_must_be_memory_or_mmap():
    _, s = engine_with_source()
    with pytest.raises(errors.QueryError, match='takes "memory" or "mmap", got \'disk\''):
        s.dedup("key", within="1s", state="disk")


def test_dedup_mmap_state_in_an_unusable_directory_is_refused(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    eng, s = engine_with_source()
    eng.state_dir = None
    eng._scratch_dir = lambda: str(blocker)  # where the scratch file cannot be created
    with pytest.raises(errors.QueryError, match='state="mmap" could not create its file'):
        s.dedup("key", within="1s", state="mmap").collect()


def test_dedup_float_key_rejected():
    declaring_fails(lambda s: s.dedup("value", within="1s"),
                    errors.ColumnTypeError, "'value' has type Float64, but dedup keys must be integers")


def test_window_over_updating_window_results_is_refused():
    declaring_fails(lambda s: s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count())
                    .emit(lm.on_update()).window(lm.tumbling("1m")).group_by("key").agg(n=lm.sum("n")),
                    errors.QueryError, "a window over window results needs the earlier window to emit final rows")


def test_dedup_over_updating_window_results_is_refused():
    declaring_fails(lambda s: s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count())
                    .emit(lm.on_update()).dedup("key", within="1s"),
                    errors.QueryError, "dedup over window results needs the earlier window to emit final rows")


def test_dedup_plan_with_bad_within_is_refused_by_the_engine_too():
    """The engine checks the plan itself (a plan need not come from the Python builder)."""
    eng, s = engine_with_source()
    step = {"op": "dedup", "on": ["key"], "within_ms": 0}
    with pytest.raises(errors.QueryError, match="within must be longer than zero"):
        s._then(step).collect()
    with pytest.raises(errors.QueryError, match="at least one key column"):
        s._then({"op": "dedup", "on": [], "within_ms": 5}).collect()
