"""``python -m laminar.demo``: a real pipeline on built-in data, printed.

Generates one million events of the standard workload A (seeded), pushes them batch by batch
into a 1-second tumbling window grouped by key, prints results as windows close, and checks
every event was counted exactly once.
"""

from __future__ import annotations

import time

import pandas as pd
import pyarrow.compute as pc

import laminar as lm
from laminar.datagen import workload_a


def main(n: int = 1_000_000) -> int:
    batches = workload_a(n, 10_000)
    eng = lm.Engine()
    trades = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    per_sec = (
        trades.window(lm.tumbling("1s"))
        .group_by("key")
        .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value"))
        .collect("per_sec")
    )
    print(f"laminar {lm.__version__}: {n:,} events, 1 s tumbling windows by key, watermark 200 ms")
    start = time.perf_counter()
    shown = 0
    for i, batch in enumerate(batches):
        trades.push(batch)
        new = per_sec.poll()
        if new.num_rows and shown < 3:
            shown += 1
            first = new.slice(0, 3).to_pandas()
            for c in ("window_start", "window_end"):  # int64 epoch ms -> readable UTC times
                first[c] = pd.to_datetime(first[c], unit="ms", utc=True)
            print(f"\nafter batch {i}: {new.num_rows} rows closed for window starting {first['window_start'][0]}")
            print(first.to_string(index=False))
    eng.flush()
    elapsed = time.perf_counter() - start
    result = per_sec.to_arrow()
    counted = pc.sum(result["n"]).as_py()
    m = eng.metrics()["queries"]["per_sec"]
    print(f"\n{result.num_rows:,} result rows, {counted:,} events counted in {elapsed:.3f} s "
          f"({n / elapsed / 1e6:.1f} M events/s); late dropped: {m['late_dropped']}, "
          f"peak groups held: {m['peak_groups']:,}")
    if counted != n:
        print(f"ERROR: expected {n:,} events counted")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
