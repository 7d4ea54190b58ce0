"""Property tests: ``stream.dedup(on, within)`` equals the plain-Python reference model
(``reference.dedup``, docs/SEMANTICS.md "Dedup") row for row, on random out-of-order data with
keys from a small domain (nulls included), random ``within``, bounded-delay watermarks and
batch splits, with one core and with two; and chained before a tumbling window count."""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import laminar as lm
from reference import canonical, dedup, rows_of, split, tumbling

KEY_KINDS = {
    # name: (key columns with their arrow types, strategy of one key tuple)
    "int": ([("k", pa.int64())], st.tuples(st.one_of(st.none(), st.integers(-2, 2)))),
    "str": ([("k", pa.string())], st.tuples(st.sampled_from([None, "a", "b", "", "é"]))),
    "bool": ([("k", pa.bool_())], st.tuples(st.booleans())),
    "int+str": ([("k", pa.int32()), ("k2", pa.string())],
                st.tuples(st.integers(0, 2), st.sampled_from(["x", "y", None]))),
}


@st.composite
def scenario(draw):
    kind = draw(st.sampled_from(sorted(KEY_KINDS)))
    key_fields, key_values = KEY_KINDS[kind]
    names = [n for n, _ in key_fields]
    n = draw(st.integers(0, 120))
    nominal = draw(st.integers(-5_000, 5_000))
    disorder = draw(st.integers(0, 300))
    rows = []
    for i in range(n):
        nominal += draw(st.integers(0, 25))
        row = {"ts": nominal - draw(st.integers(0, disorder)), "id": i}
        row.update(zip(names, draw(key_values)))
        rows.append(row)
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    schema = pa.schema([("ts", pa.int64()), *key_fields, ("id", pa.int64())])
    return dict(rows=rows, batches=split(rows, cuts), schema=schema, on=names,
                within=draw(st.integers(1, 300)), delay=draw(st.integers(0, 300)))


def run(sc, build, cores: int):
    """Pushes the scenario's batches through ``build(source)`` on an engine with ``cores``,
    flushes; returns (result rows in output order, the query's metrics)."""
    with lm.Engine(cores=cores) as eng:
        src = eng.source("s", time="ts", watermark=lm.bounded_delay(sc["delay"]), schema=sc["schema"])
        out = build(src).collect("q")
        for b in sc["batches"]:
            src.push(pa.Table.from_pylist(b, schema=sc["schema"]))
        eng.flush()
        return rows_of(out.to_arrow()), eng.metrics()["queries"]["q"]


@settings(max_examples=40)
@given(scenario())
def test_dedup_matches_reference_on_one_and_two_cores(sc):
    kept, late, dups = dedup(sc["batches"], time="ts", on=sc["on"], within=sc["within"], delay=sc["delay"])
    # the scenarios exercise every outcome, not only "keep everything"
    assert len(kept) + len(late) + len(dups) == len(sc["rows"])
    for cores in (1, 2):
        got, m = run(sc, lambda s: s.dedup(sc["on"], within=sc["within"]), cores)
        if cores == 1:
            # one core: exactly the model's rows, in arrival order
            assert got == kept
        else:
            # two cores: the same rows; only the order across keys may differ, each key's rows
            # stay in arrival order (one core holds a key)
            assert sorted(got, key=lambda r: r["id"]) == kept
            per_key = defaultdict(list)
            for r in got:
                per_key[tuple(r[c] for c in sc["on"])].append(r["id"])
            assert all(ids == sorted(ids) for ids in per_key.values())
            assert m["partitioning"] == ["keys" + str([1 + i for i in range(len(sc["on"]))])], m
        assert m["rows_out"] == len(kept), cores
        assert m["late_dropped"] == len(late), cores
        assert m["duplicates_dropped"] == len(dups), cores
        # flush moves the watermark to +inf: every entry expires
        assert m["state_rows"] == 0, cores
        assert m["peak_state_rows"] <= len(kept)
    # The state in a memory-mapped scratch file instead: the same rows.
    got, m = run(sc, lambda s: s.dedup(sc["on"], within=sc["within"], state="mmap"), 1)
    assert got == kept
    assert (m["duplicates_dropped"], m["late_dropped"], m["state_rows"]) == (len(dups), len(late), 0)


@settings(max_examples=30)
@given(scenario(), st.integers(1, 500))
def test_dedup_then_tumbling_count_matches_reference(sc, size):
    """dedup → tumbling window count per key: the windows count exactly the rows the model
    keeps (dedup emits no row behind the watermark, so the window drops none as late)."""
    on = sc["on"]
    kept, late, _ = dedup(sc["batches"], time="ts", on=on, within=sc["within"], delay=sc["delay"])
    want, window_late = tumbling([kept], time="ts", keys=on, aggs={"n": ("count_rows", None)}, size=size)
    assert window_late == []
    cols = ["window_start", "window_end", *on, "n"]

    def build(s):
        return (s.dedup(on, within=sc["within"]).window(lm.tumbling(size))
                .group_by(*on).agg(n=lm.count()).emit(lm.final()))

    for cores in (1, 2):
        got, m = run(sc, build, cores)
        assert canonical(got, cols) == canonical(want, cols), cores
        assert m["late_dropped"] == len(late), cores
        assert m["open_windows"] == 0 and m["state_rows"] == 0


def test_dedup_keeps_rows_unchanged_and_follows_a_window():
    """A fixed example: rows pass through with every column; dedup over final window results
    (their event time is ``window_end - 1``) keys on the window's group keys."""
    eng = lm.Engine()
    s = eng.source("s", time="ts", watermark=lm.bounded_delay(0))
    out = s.dedup("k", within="10ms").collect("d")
    counts = (s.window(lm.tumbling("100ms")).group_by("k").agg(n=lm.count())
              .dedup("k", within="150ms").collect("w"))
    s.push(pa.table({"ts": [0, 5, 10, 12, 150, 260, 420], "k": [1, 1, 1, 2, 1, 1, 1],
                     "v": ["a", "b", "c", "d", "e", "f", "g"]}))
    eng.flush()
    assert out.to_arrow().to_pylist() == [
        {"ts": 0, "k": 1, "v": "a"}, {"ts": 10, "k": 1, "v": "c"}, {"ts": 12, "k": 2, "v": "d"},
        {"ts": 150, "k": 1, "v": "e"}, {"ts": 260, "k": 1, "v": "f"}, {"ts": 420, "k": 1, "v": "g"}]
    # key 1's windows end at 100, 200, 300, 500 (event times 99, 199, 299, 499): 199 is within
    # 150 of 99, 299 is not (200), 499 is not; key 2's one window is kept
    got = [(r["window_end"], r["k"]) for r in counts.to_arrow().to_pylist()]
    assert sorted(got) == [(100, 1), (100, 2), (300, 1), (500, 1)]
    m = eng.metrics()["queries"]
    assert m["d"]["duplicates_dropped"] == 1 and m["w"]["duplicates_dropped"] == 1
