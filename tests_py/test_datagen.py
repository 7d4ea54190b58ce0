"""The workload generators keep the promises the benchmarks and state tests rely on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from laminar.datagen import BASE_TS, workload_b


def test_workload_b_shape_matching_and_lateness():
    n = 30_000
    batches = workload_b(n, 2_000)
    assert {side for side, _ in batches} == {"orders", "payments"}
    orders = pa.Table.from_batches([b for s, b in batches if s == "orders"])
    payments = pa.Table.from_batches([b for s, b in batches if s == "payments"])
    assert orders.schema.names == ["ts", "order_id"] and payments.schema.names == ["ts", "order_id", "amount"]
    assert orders.num_rows == payments.num_rows == n
    assert all(b.num_rows <= 2_000 for _, b in batches)
    # every order has exactly one payment, 0..5 s after it
    o = orders.sort_by("order_id")
    p = payments.sort_by("order_id")
    assert o["order_id"].to_pylist() == list(range(n)) == p["order_id"].to_pylist()
    lag = p["ts"].to_numpy() - o["ts"].to_numpy()
    assert lag.min() >= 0 and lag.max() <= 5_000
    assert orders["ts"].to_numpy().min() >= BASE_TS - 100
    # with a 200 ms bounded delay per side, no row is ever behind the join's watermark
    # (the minimum of both sides), judged before its batch as the engine does
    marks = {"orders": None, "payments": None}
    for side, b in batches:
        ts = b["ts"].to_numpy()
        if None not in marks.values():
            assert ts.min() >= min(marks.values())
        if marks[side] is not None:
            assert ts.min() >= marks[side]
        marks[side] = ts.max() - 200 if marks[side] is None else max(marks[side], ts.max() - 200)


def test_workload_b_is_seeded():
    a = workload_b(5_000, 1_000)
    b = workload_b(5_000, 1_000)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert all(x.equals(y) for (_, x), (_, y) in zip(a, b))
    c = workload_b(5_000, 1_000, seed=7)
    assert not all(x.equals(y) for (_, x), (_, y) in zip(a, c))


def test_workload_b_orders_per_ms():
    batches = workload_b(10_000, 1_000, orders_per_ms=1)
    ts = pa.Table.from_batches([b for s, b in batches if s == "orders"])["ts"].to_numpy()
    assert ts.max() - ts.min() >= 9_800  # 10,000 orders at 1 per ms span about 10 s
    assert np.all(np.diff(ts) >= -100)
