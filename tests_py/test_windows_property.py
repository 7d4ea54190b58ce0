"""Property tests: tumbling-window aggregation equals the plain-Python reference model on
random out-of-order data, random window sizes, lateness, delays, key types and batch splits."""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

import laminar as lm
from helpers import run_in_batches
from reference import canonical, rows_of, split, tumbling
from scenarios import AGGS, lm_aggs, pause, random_split


KEY_TYPES = {
    "int": (pa.int64(), st.integers(-3, 3)),
    "int32": (pa.int32(), st.integers(0, 4)),
    "str": (pa.string(), st.sampled_from(["a", "b", "ccc", "", "é"])),
    "bool": (pa.bool_(), st.booleans()),
}


@st.composite
def scenario(draw):
    key_kind = draw(st.sampled_from(sorted(KEY_TYPES)))
    two_keys = draw(st.booleans())
    key_type, key_values = KEY_TYPES[key_kind]
    n = draw(st.integers(0, 120))
    base = draw(st.integers(-5_000, 5_000))
    disorder = draw(st.integers(0, 300))
    rows = []
    for i in range(n):
        ts = base + i * draw(st.integers(0, 20)) - draw(st.integers(0, disorder))
        row = {"ts": ts, "k": draw(key_values),
               "value": draw(st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False)))}
        if two_keys:
            row["k2"] = draw(st.integers(0, 2))
        rows.append(row)
    batches = split(rows, draw(st.lists(st.integers(0, n), max_size=6)))
    fields = [("ts", pa.int64()), ("k", key_type), ("value", pa.float64())]
    if two_keys:
        fields.append(("k2", pa.int64()))
    return dict(
        rows=rows, batches=batches, schema=pa.schema(fields),
        keys=["k", "k2"] if two_keys else ["k"],
        size=draw(st.integers(1, 500)), offset=draw(st.integers(0, 100)),
        lateness=draw(st.integers(0, 200)), delay=draw(st.integers(0, 300)),
    )


@given(scenario())
def test_tumbling_matches_reference(sc):
    batches = [pa.Table.from_pylist(b, schema=sc["schema"]) for b in sc["batches"]]
    keys = sc["keys"]

    def build(src):
        return (src.window(lm.tumbling(sc["size"], offset=sc["offset"]),
                           allowed_lateness=sc["lateness"], late="side")
                .group_by(*keys).agg(**lm_aggs(AGGS)).emit(lm.final()))

    got, late, metrics = run_in_batches(
        build, batches, watermark=lm.bounded_delay(sc["delay"]), schema=sc["schema"], with_late=True)
    want, want_late = tumbling(
        sc["batches"], time="ts", keys=keys, aggs=AGGS, size=sc["size"],
        offset=sc["offset"] % sc["size"], lateness=sc["lateness"], delay=sc["delay"])
    cols = ["window_start", "window_end", *keys, *AGGS]
    assert canonical(rows_of(got), cols) == canonical(want, cols)
    assert canonical(rows_of(late), ["ts", *keys, "value"]) == canonical(want_late, ["ts", *keys, "value"])
    assert metrics["late_side_output"] == len(want_late)
    assert metrics["live_groups"] == 0 and metrics["open_windows"] == 0


@given(scenario(), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_batching_or_pauses(sc, rnd: random.Random):
    """With a delay covering the disorder nothing is late, so any split and any pacing must
    give exactly the same rows."""
    rows = sc["rows"]
    delay = 10_000
    keys = sc["keys"]

    def build(src):
        return src.window(lm.tumbling(sc["size"])).group_by(*keys).agg(**lm_aggs(AGGS))

    one, _, _ = run_in_batches(build, [pa.Table.from_pylist(rows, schema=sc["schema"])],
                               watermark=lm.bounded_delay(delay), schema=sc["schema"])
    pieces = [pa.Table.from_pylist(b, schema=sc["schema"]) for b in random_split(rnd, rows)]
    paced, _, m = run_in_batches(build, pieces, watermark=lm.bounded_delay(delay),
                                 schema=sc["schema"], pause=pause(rnd))
    cols = ["window_start", "window_end", *keys, *AGGS]
    assert canonical(rows_of(one), cols) == canonical(rows_of(paced), cols)
    assert m["late_dropped"] == 0


@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 3), st.integers(-100, 100)), max_size=80),
       st.sampled_from(["s", "ms", "us", "ns"]), st.sampled_from([None, "UTC", "Asia/Kolkata"]),
       st.integers(1, 5000))
def test_timestamp_columns_match_int_millis(events, unit, tz, size):
    """Any timestamp unit, with or without a zone, windows exactly like int64 milliseconds."""
    scale = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    if unit == "s":
        events = [(t - t % 1000, k, v) for t, k, v in events]
    ints = pa.table({"ts": [e[0] for e in events], "k": [e[1] for e in events], "v": [e[2] for e in events]},
                    schema=pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())]))
    stamps = ints.set_column(0, "ts", pa.array([int(e[0] * scale) for e in events], pa.timestamp(unit, tz)))
    def q(src):
        return src.window(lm.tumbling(size)).group_by("k").agg(n=lm.count(), s=lm.sum("v"), hi=lm.max("v"))
    a, _, _ = run_in_batches(q, [ints], watermark=lm.bounded_delay("1h"))
    b, _, _ = run_in_batches(q, [stamps], watermark=lm.bounded_delay("1h"))
    assert b.schema.field("window_start").type == pa.timestamp("ms", tz)
    b_ints = b.set_column(0, "window_start", b["window_start"].cast(pa.int64())) \
              .set_column(1, "window_end", b["window_end"].cast(pa.int64()))
    cols = ["window_start", "window_end", "k", "n", "s", "hi"]
    assert canonical(rows_of(a), cols) == canonical(rows_of(b_ints), cols)
