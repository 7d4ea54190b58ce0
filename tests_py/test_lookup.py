"""Lookup joins (``s.lookup(table, on=..., how=..., ttl=..., loader=...)``) against the
reference model: left and inner, last row wins on duplicate table keys, column naming,
``Engine.update_table`` mid-stream, ttl expiry and the loader contract (called at most once
per push, with exactly the distinct missing or expired keys of that push), bad inputs.

TTLs are a few hundred ms and the tests sleep past them: long enough that a busy 2-core
machine does not expire an entry early, short enough to keep the suite fast."""

from __future__ import annotations

import time

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from laminar import errors
from reference import canonical, lookup, rows_of

SS = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("name", pa.string())])
TS = pa.schema([("k", pa.int64()), ("name", pa.string()), ("px", pa.float64())])
OUT = ["ts", "k", "name", "name_right", "px"]


def stream(*keys, start=0):
    return pa.Table.from_pylist([{"ts": start + i, "k": k, "name": f"s{start + i}"} for i, k in enumerate(keys)],
                                schema=SS)


def table(*rows):
    return pa.Table.from_pylist([dict(zip(TS.names, r)) for r in rows], schema=TS)


def engine():
    eng = lm.Engine()
    return eng, eng.source("s", time="ts", schema=SS)


def expect(stream_table, table_rows, how="left"):
    return lookup(rows_of(stream_table), table_rows, on=["k"], how=how, stream_columns=SS.names,
                  table_columns=TS.names)


@pytest.mark.parametrize("how", ["left", "inner"])
def test_lookup_left_and_inner(how):
    eng, s = engine()
    t = table((1, "one", 1.0), (2, "two", 2.0), (1, "uno", 1.5))  # key 1 twice: the last row wins
    out = s.lookup(t, on="k", how=how).collect("q")
    data = stream(1, 2, 3, 1, None)
    s.push(data)
    got = out.poll()   # a lookup is stateless: rows are out as soon as the push returns
    want = expect(data, rows_of(t), how)
    assert canonical(rows_of(got), OUT) == canonical(want, OUT)
    assert got.column_names == OUT
    eng.flush()
    assert canonical(rows_of(out.to_arrow()), OUT) == canonical(want, OUT)
    if how == "inner":
        assert sorted(r["name_right"] for r in rows_of(out.to_arrow())) == ["two", "uno", "uno"]


def test_lookup_result_types():
    eng, s = engine()
    out = s.lookup(table((1, "one", 1.0)), on="k").collect("q")
    s.push(stream(1, 5))
    assert out.poll().schema == pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("name", pa.string()),
                                           ("name_right", pa.string()), ("px", pa.float64())])


def test_lookup_table_from_pandas_and_two_column_key():
    eng = lm.Engine()
    schema = pa.schema([("ts", pa.int64()), ("a", pa.string()), ("b", pa.int64())])
    s = eng.source("s", time="ts", schema=schema)
    tab = pd.DataFrame({"a": ["x", "x", "y"], "b": [1, 2, 1], "label": ["x1", "x2", "y1"]})
    out = s.lookup(tab, on=["a", "b"], how="left").collect("q")
    s.push(pa.table({"ts": [0, 1, 2, 3], "a": ["x", "y", "y", "x"], "b": [2, 1, 2, 1]}, schema=schema))
    eng.flush()
    assert sorted((r["ts"], r["label"]) for r in rows_of(out.to_arrow())) == [
        (0, "x2"), (1, "y1"), (2, None), (3, "x1")]


def test_update_table_mid_stream():
    eng, s = engine()
    first = table((1, "one", 1.0), (2, "two", 2.0))
    out = s.lookup(first, on="k", how="left", name="prices").collect("q")
    a = stream(1, 2, 3)
    s.push(a)
    second = table((2, "TWO", 20.0), (3, "three", 3.0))  # key 1 is gone, 3 is new
    eng.update_table("prices", second)
    b = stream(1, 2, 3, start=10)
    s.push(b)
    eng.update_table("prices", pd.DataFrame({"k": [1], "name": ["ONE"], "px": [100.0]}))
    c = stream(1, 2, start=20)
    s.push(c)
    eng.flush()
    want = (expect(a, rows_of(first)) + expect(b, rows_of(second))
            + expect(c, [{"k": 1, "name": "ONE", "px": 100.0}]))
    assert canonical(rows_of(out.to_arrow()), OUT) == canonical(want, OUT)


@st.composite
def lookup_scenario(draw):
    keys = st.one_of(st.integers(0, 4), st.none()) if draw(st.booleans()) else st.integers(0, 4)

    def tab():
        return [{"k": draw(st.integers(0, 4)), "name": draw(st.sampled_from(["a", "b", None])),
                 "px": draw(st.one_of(st.none(), st.integers(0, 9).map(float)))}
                for _ in range(draw(st.integers(0, 6)))]
    ops, ts = [], 0
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            ops.append(("update", tab()))
        n = draw(st.integers(0, 8))
        ops.append(("push", [{"ts": ts + i, "k": draw(keys), "name": f"s{ts + i}"} for i in range(n)]))
        ts += n
    return draw(st.sampled_from(["left", "inner"])), tab(), ops


@given(lookup_scenario())
def test_lookup_matches_model_with_table_updates(sc):
    """Each row is looked up against the table as it is when the row is pushed. (Null stream
    keys never match: assumed, as in the interval join.)"""
    how, initial, ops = sc
    eng, s = engine()
    out = s.lookup(pa.Table.from_pylist(initial, schema=TS), on="k", how=how, name="t").collect("q")
    current, want = initial, []
    for op, rows in ops:
        if op == "update":
            eng.update_table("t", pa.Table.from_pylist(rows, schema=TS))
            current = rows
        else:
            s.push(pa.Table.from_pylist(rows, schema=SS))
            want += lookup(rows, current, on=["k"], how=how, stream_columns=SS.names, table_columns=TS.names)
    eng.flush()
    assert canonical(rows_of(out.to_arrow()), OUT) == canonical(want, OUT)
    eng.close()


# --- ttl and loader ----------------------------------------------------------------------------
class Loader:
    """A loader backed by a dict; records the keys of every call."""

    def __init__(self, backing: dict, as_pandas: bool = False):
        self.backing, self.calls, self.as_pandas = backing, [], as_pandas

    def __call__(self, keys: pa.Table):
        assert isinstance(keys, pa.Table)
        assert keys.column_names == ["k"]
        ks = keys.column("k").to_pylist()
        assert len(ks) == len(set(ks)), f"loader got repeated keys {ks}"
        self.calls.append(sorted(ks))
        rows = [{"k": k, "name": self.backing[k], "px": float(k)} for k in ks if k in self.backing]
        t = pa.Table.from_pylist(rows, schema=TS)
        return t.to_pandas() if self.as_pandas else t


def names(result_table):
    return [r["name_right"] for r in sorted(rows_of(result_table), key=lambda r: r["ts"])]


@pytest.mark.parametrize("as_pandas", [False, True])
def test_loader_called_once_per_push_with_the_distinct_missing_keys(as_pandas):
    load = Loader({1: "one", 2: "two", 4: "four"}, as_pandas)
    eng, s = engine()
    out = s.lookup(table(), on="k", how="left", loader=load, name="t").collect("q")
    s.push(stream(1, 2, 2, 3, 1))
    assert load.calls == [[1, 2, 3]]
    assert names(out.poll()) == ["one", "two", "two", None, "one"]
    s.push(stream(1, 3, 4, start=10))         # 1 is loaded now; 3 stayed missing; 4 is new
    assert load.calls == [[1, 2, 3], [3, 4]]
    assert names(out.poll()) == ["one", None, "four"]
    s.push(stream(2, 4, 1, start=20))         # nothing missing: no call
    assert load.calls == [[1, 2, 3], [3, 4]]
    assert names(out.poll()) == ["two", "four", "one"]
    load.backing[3] = "three"
    s.push(stream(3, 3, start=30))
    assert load.calls == [[1, 2, 3], [3, 4], [3]]
    assert names(out.poll()) == ["three", "three"]


def test_loader_not_called_for_keys_in_the_table():
    load = Loader({})
    eng, s = engine()
    out = s.lookup(table((1, "one", 1.0)), on="k", how="inner", loader=load).collect("q")
    s.push(stream(1, 1))
    s.push(stream(1, 7, start=5))
    assert load.calls == [[7]]
    assert names(out.to_arrow()) == ["one", "one", "one"]


def test_ttl_with_loader_reloads_expired_entries():
    load = Loader({1: "one-v1", 2: "two"})
    eng, s = engine()
    out = s.lookup(table((1, "initial", 0.0)), on="k", how="left", ttl="400ms", loader=load,
                   name="t").collect("q")
    s.push(stream(1, 2))
    assert load.calls == [[2]]
    assert names(out.poll()) == ["initial", "two"]
    time.sleep(0.5)                       # every entry is older than the ttl now
    load.backing[1] = "one-v2"
    s.push(stream(1, 2, 5, 1, start=10))  # 1 and 2 expired, 5 missing
    assert load.calls == [[2], [1, 2, 5]]
    assert names(out.poll()) == ["one-v2", "two", None, "one-v2"]
    s.push(stream(1, 2, start=20))        # just reloaded: fresh
    assert load.calls == [[2], [1, 2, 5]]
    assert names(out.poll()) == ["one-v2", "two"]


def test_ttl_without_loader_expired_entries_count_as_missing():
    eng, s = engine()
    out = s.lookup(table((1, "one", 1.0)), on="k", how="inner", ttl="300ms", name="t").collect("q")
    s.push(stream(1))
    assert names(out.poll()) == ["one"]
    time.sleep(0.4)
    s.push(stream(1, start=10))
    assert out.poll().num_rows == 0       # expired: missing, and an inner lookup drops the row
    # assumption: update_table loads its entries now, so they are fresh again
    eng.update_table("t", table((1, "one-again", 1.0)))
    s.push(stream(1, start=20))
    assert names(out.poll()) == ["one-again"]
    m = eng.metrics()["queries"]["q"]
    assert m["rows_in"] == 3 and m["rows_out"] == 2


# --- bad inputs --------------------------------------------------------------------------------
def build_and_push(build):
    """Builds a lookup query, collects it, pushes a row: the error may come at any step."""
    eng, s = engine()
    build(s).collect("q")
    s.push(stream(1))


def test_missing_key_column_in_stream():
    with pytest.raises(errors.ColumnNotFoundError, match="nope"):
        build_and_push(lambda s: s.lookup(pa.table({"nope": [1], "x": [2]}), on="nope"))


def test_missing_key_column_in_table():
    with pytest.raises(errors.ColumnNotFoundError, match="k"):
        build_and_push(lambda s: s.lookup(pa.table({"key": [1], "x": [2]}), on="k"))


def test_bad_how():
    with pytest.raises(errors.QueryError, match="how|full"):
        build_and_push(lambda s: s.lookup(table(), on="k", how="full"))


def test_bad_ttl():
    with pytest.raises(errors.DurationError):
        build_and_push(lambda s: s.lookup(table(), on="k", ttl="soon"))


def test_key_type_mismatch():
    # a string table key against an int64 stream key cannot match anything: a schema error
    with pytest.raises(errors.SchemaError, match="k"):
        build_and_push(lambda s: s.lookup(pa.table({"k": ["1"], "x": [2]}), on="k"))


def test_update_unknown_table():
    eng, s = engine()
    s.lookup(table(), on="k", name="t").collect("q")
    with pytest.raises(errors.NameConflictError, match="nope"):
        eng.update_table("nope", table())


def test_update_table_without_key_column():
    eng, s = engine()
    s.lookup(table(), on="k", name="t").collect("q")
    with pytest.raises(errors.ColumnNotFoundError, match="k"):
        eng.update_table("t", pa.table({"key": [1]}))
