"""The project's one seeded data generator for the standard workloads (numpy, seed 42).

Used by the demo, the notebooks and the benchmarks, so everyone measures the same data.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

BASE_TS = 1_700_000_000_000
"""Epoch milliseconds of the first event (2023-11-14T22:13:20Z)."""


def workload_a(n: int = 10_000_000, batch_rows: int = 10_000, *, seed: int = 42,
               keys: int = 1000) -> list[pa.RecordBatch]:
    """Workload A: ``ts = BASE_TS + i // 10 - jitter`` (jitter uniform in 0..100),
    ``key`` uniform in ``0..keys``, ``value`` uniform in [0, 100); in batches of ``batch_rows``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=np.int64)
    ts = BASE_TS + i // 10 - rng.integers(0, 100, size=n, dtype=np.int64)
    key = rng.integers(0, keys, size=n, dtype=np.int64)
    value = rng.random(n) * 100.0
    table = pa.table({"ts": ts, "key": key, "value": value})
    return table.to_batches(max_chunksize=batch_rows)


def workload_b(n_orders: int = 1_000_000, batch_rows: int = 10_000, *, seed: int = 42,
               orders_per_ms: int = 10) -> list[tuple[str, pa.RecordBatch]]:
    """Workload B (interval join): ``n_orders`` orders (``ts``, ``order_id``) and as many
    payments (``ts``, ``order_id``, ``amount``), as ``("orders" | "payments", batch)`` pairs.

    Orders: ``ts = BASE_TS + i // orders_per_ms - jitter`` (jitter uniform in 0..100),
    ``order_id = i``. Each order has exactly one payment ``0..5000`` ms (uniform, inclusive)
    after the order's ``ts``, ``amount`` uniform in [1, 1000) whole cents. Payments come in
    ``ts`` order perturbed by up to 100 ms (sorted by ``ts`` plus a uniform 0..100 jitter).
    Each stream is cut into batches of ``batch_rows``; the batches of both are interleaved
    by the largest ``ts`` of each batch (orders first on ties), so the two watermarks stay
    close together.

    Guarantees, with a 200 ms bounded-delay watermark on each side: every row is at least
    that side's watermark when it arrives, so no row is late under any interleaving; and each
    payment matches exactly its order for ``within=(0, "10s")`` (order ids are unique).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    i = np.arange(n_orders, dtype=np.int64)
    order_ts = BASE_TS + i // orders_per_ms - rng.integers(0, 100, size=n_orders, dtype=np.int64)
    pay_ts = order_ts + rng.integers(0, 5001, size=n_orders, dtype=np.int64)
    amount = rng.integers(100, 100_000, size=n_orders, dtype=np.int64) / 100.0
    # arrival order of payments: by ts plus a jitter below 100 ms, so a payment is never more
    # than 100 ms older than one that came before it
    arrival = np.argsort(pay_ts + rng.integers(0, 100, size=n_orders, dtype=np.int64), kind="stable")
    orders = pa.table({"ts": order_ts, "order_id": i}).to_batches(max_chunksize=batch_rows)
    payments = pa.table({"ts": pay_ts[arrival], "order_id": i[arrival], "amount": amount[arrival]}
                        ).to_batches(max_chunksize=batch_rows)
    tagged = [(b["ts"].to_numpy().max(), 0, n, ("orders", b)) for n, b in enumerate(orders)]
    tagged += [(b["ts"].to_numpy().max(), 1, n, ("payments", b)) for n, b in enumerate(payments)]
    tagged.sort(key=lambda t: t[:3])
    return [t[3] for t in tagged]


def iter_batches(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Yields the batches (a seam for pacing in demos)."""
    yield from batches
