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


def iter_batches(batches: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Yields the batches (a seam for pacing in demos)."""
    yield from batches
