"""State stays bounded on long-ish runs: what the engine holds depends on the watermark
horizon (window size, join bounds, delay), not on how many events have gone by, and it is
all released by the flush.

Each check runs the same query on the first half and on the whole of the data: the peak must
not grow with the length of the stream, and must be far below the number of events."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import laminar as lm
from laminar.datagen import workload_a, workload_b


def run_join(n_orders: int):
    # 1 order per ms and 1,000-row batches: 100 s of stream for 100k orders, so that the
    # join horizon (5 s + watermark lag) covers a small fraction of it
    batches = workload_b(n_orders, 1000, orders_per_ms=1)
    eng = lm.Engine()
    orders = eng.source("orders", time="ts", watermark=lm.bounded_delay("200ms"))
    payments = eng.source("payments", time="ts", watermark=lm.bounded_delay("200ms"))
    out = orders.join(payments, on="order_id", within=("0s", "5s"), how="inner").collect("j")
    sources = {"orders": orders, "payments": payments}
    for side, b in batches:
        sources[side].push(b)
    mid = eng.metrics()["queries"]["j"]
    eng.flush()
    result = out.to_arrow()
    return result, mid, eng.metrics()["queries"]["j"]


def test_interval_join_state_is_bounded():
    n = 100_000
    result, mid, end = run_join(n)
    total = 2 * n
    # every order matches exactly its payment (0..5 s later, within the bounds)
    assert result.num_rows == n
    lag = pc.subtract(result["ts_right"], result["ts"])
    assert pc.min(lag).as_py() >= 0 and pc.max(lag).as_py() <= 5000
    assert sorted(result["order_id"].to_pylist()) == list(range(n))
    assert end["late_dropped"] == 0
    assert end["state_rows"] == 0
    assert 0 < end["peak_state_rows"] < total // 10, end
    assert mid["state_rows"] <= end["peak_state_rows"]
    _, _, half = run_join(n // 2)
    assert end["peak_state_rows"] <= 1.3 * half["peak_state_rows"], (half, end)


def push_a(query_builder, n: int, keys: int):
    eng = lm.Engine()
    src = eng.source("s", time="ts", watermark=lm.bounded_delay("200ms"))
    out = query_builder(src).collect("q")
    for b in workload_a(n, 1000, keys=keys):
        src.push(b)
    eng.flush()
    return out.to_arrow(), eng.metrics()["queries"]["q"]


def test_sliding_window_state_is_bounded():
    n, keys = 200_000, 100

    def q(src):
        return (src.window(lm.sliding("1s", every="100ms")).group_by("key")
                .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value")))
    result, m = push_a(q, n, keys)
    assert pc.sum(result["n"]).as_py() == 10 * n  # each event in exactly 10 windows, none late
    # expected rows: distinct (key, window start) over every window of every event
    data = pa.Table.from_batches(workload_a(n, 1000, keys=keys))
    ts, key = data["ts"].to_numpy(), data["key"].to_numpy()
    starts = (ts // 100 * 100)[:, None] - 100 * np.arange(10)[None, :]
    pairs = np.unique(np.stack([np.repeat(key, 10), starts.ravel()]), axis=1)
    assert result.num_rows == pairs.shape[1]
    assert m["open_windows"] == 0 and m["live_groups"] == 0
    # ~10 windows of 1 s overlap a point, plus the watermark lag: about 13 open per key
    assert m["peak_groups"] <= keys * 25 and m["peak_groups"] < n // 50, m
    _, half = push_a(q, n // 2, keys)
    assert m["peak_groups"] <= 1.3 * half["peak_groups"], (half, m)


def test_session_window_state_is_bounded():
    n, keys = 200_000, 1000  # each key sees an event about every 100 ms; gap 300 ms

    def q(src):
        return src.window(lm.session("300ms")).group_by("key").agg(n=lm.count())
    result, m = push_a(q, n, keys)
    assert pc.sum(result["n"]).as_py() == n
    data = pa.Table.from_batches(workload_a(n, 1000, keys=keys))
    ts, key = data["ts"].to_numpy(), data["key"].to_numpy()
    order = np.lexsort((ts, key))
    ts, key = ts[order], key[order]
    new_session = np.ones(n, dtype=bool)
    new_session[1:] = (key[1:] != key[:-1]) | (ts[1:] - ts[:-1] >= 300)
    assert result.num_rows == int(new_session.sum())
    assert m["open_windows"] == 0 and m["live_groups"] == 0
    # about one open session per key, a few more while out-of-order rows are pending
    assert m["peak_groups"] <= 5 * keys and m["peak_groups"] < n // 20, m
    _, half = push_a(q, n // 2, keys)
    assert m["peak_groups"] <= 1.3 * half["peak_groups"], (half, m)
