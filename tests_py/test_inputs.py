"""Every supported input form gives the same results: pandas, pyarrow Table and RecordBatch,
polars, a dict of columns, and any object with the Arrow PyCapsule interface."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import laminar as lm

TS = [0, 400, 999, 1000, 1500, 2999]
KEY = [1, 2, 1, 1, 2, 2]
VAL = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
EXPECTED = [(0, 1, 2, 4.0), (0, 2, 1, 2.0), (1000, 1, 1, 4.0), (1000, 2, 1, 5.0), (2000, 2, 1, 6.0)]


class CapsuleOnly:
    """Exposes nothing but the Arrow PyCapsule stream interface."""

    def __init__(self, table):
        self._t = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._t.__arrow_c_stream__(requested_schema)


def table():
    return pa.table({"ts": TS, "key": KEY, "value": VAL})


INPUTS = {
    "pyarrow-table": table,
    "pyarrow-batch": lambda: table().to_batches()[0],
    "pandas": lambda: pd.DataFrame({"ts": TS, "key": KEY, "value": VAL}),
    "polars": lambda: pl.DataFrame({"ts": TS, "key": KEY, "value": VAL}),
    "dict": lambda: {"ts": TS, "key": KEY, "value": VAL},
    "capsule": lambda: CapsuleOnly(table()),
    "chunked": lambda: pa.concat_tables([table().slice(0, 2), table().slice(2)]),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_input_forms(kind):
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    out = s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count(), total=lm.sum("value")).collect()
    s.push(INPUTS[kind]())
    eng.flush()
    got = sorted(tuple(r.values()) for r in out.to_arrow().select(["window_start", "key", "n", "total"]).to_pylist())
    assert got == EXPECTED


def test_pandas_timestamps_with_zone_give_timestamp_bounds():
    df = pd.DataFrame({
        "ts": pd.to_datetime(np.array(TS), unit="ms", utc=True).tz_convert("Europe/Paris"),
        "key": KEY, "value": VAL,
    })
    result = lm.run(
        lm.Engine().source("s", time="ts").window(lm.tumbling("1s")).group_by("key").agg(n=lm.count()), df)
    assert result.schema.field("window_start").type == pa.timestamp("ms", "Europe/Paris")
    starts = sorted({v.value // 10**6 for v in result.to_pandas()["window_start"]})
    assert starts == [0, 1000, 2000]


def test_pandas_naive_nanosecond_timestamps():
    df = pd.DataFrame({"ts": pd.to_datetime(TS, unit="ms"), "key": KEY, "value": VAL})
    q = lm.Engine().source("s", time="ts").window(lm.tumbling("1s")).agg(n=lm.count())
    result = lm.run(q, df).to_pandas()
    assert list(result["n"]) == [3, 2, 1]
    assert str(result["window_start"].dtype).startswith("datetime64")


def test_one_source_feeds_several_queries():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    a = s.window(lm.tumbling("1s")).agg(n=lm.count()).collect("a")
    b = s.filter(lm.col("key") == 2).window(lm.tumbling("2s")).group_by("key").agg(hi=lm.max("value")).collect("b")
    c = s.filter(lm.col("value") >= 5).select("key", double=lm.col("value") * 2).collect("c")
    d = s.collect("d")  # no steps: the rows pass through as they arrive
    s.push(table())
    assert d.poll().equals(table())
    eng.flush()
    assert a.to_arrow()["n"].to_pylist() == [3, 2, 1]
    assert sorted(b.to_arrow().select(["window_start", "hi"]).to_pylist(), key=lambda r: r["window_start"]) == [
        {"window_start": 0, "hi": 5.0}, {"window_start": 2000, "hi": 6.0}]
    assert c.to_arrow().to_pylist() == [{"key": 2, "double": 10.0}, {"key": 2, "double": 12.0}]


def test_results_available_right_after_the_push_that_completes_them():
    """Event-driven: no sleep, no tick; the push that moves the watermark past a window's end
    makes that window's row available to the very next poll()."""
    eng = lm.Engine()
    s = eng.source("s", time="ts", watermark=lm.bounded_delay("100ms"))
    out = s.window(lm.tumbling("1s")).agg(n=lm.count()).collect()
    s.push({"ts": [10, 20, 999]})
    assert out.poll().num_rows == 0
    s.push({"ts": [1099]})  # watermark 999: window [0, 1000) not closed yet
    assert out.poll().num_rows == 0
    s.push({"ts": [1100]})  # watermark 1000: closes [0, 1000)
    assert out.poll().to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 3}]
