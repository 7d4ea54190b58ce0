"""End-to-end benchmark from Python: the standard workloads of WORKLOADS.md that the engine
supports so far (A: tumbling window aggregation).

    python benches/e2e.py                  # workload A, 10 M events, best of 3
    python benches/e2e.py --events 2000000 --repeat 1

Data comes from the project's one seeded generator (laminar.datagen, numpy seed 42) and is
built before the clock starts. Reported: events/s from the first push through the final
flush, result rows, a checksum, the engine's peak state (groups held) and the process's peak
RSS. The run fails loudly if the count check does not hold.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import pyarrow.compute as pc

import laminar as lm
from laminar.datagen import workload_a


def rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_a(batches, n: int) -> dict:
    eng = lm.Engine()
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    out = (src.window(lm.tumbling("1s")).group_by("key")
           .agg(n=lm.count(), total=lm.sum("value")).collect("a"))
    start = time.perf_counter()
    for b in batches:
        src.push(b)
    eng.flush()
    elapsed = time.perf_counter() - start
    result = out.to_arrow()
    q = eng.metrics()["queries"]["a"]
    counted = pc.sum(result["n"]).as_py()
    if counted != n:
        raise SystemExit(f"workload A check failed: counted {counted} events, expected {n}")
    return {
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "rows": result.num_rows,
        "checksum": round(pc.sum(result["total"]).as_py(), 3),
        "peak_groups": q["peak_groups"],
        "late_dropped": q["late_dropped"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = p.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()} "
          f"python {platform.python_version()} laminar {lm.__version__}")
    t0 = time.perf_counter()
    batches = workload_a(args.events, args.batch)
    print(f"generated workload A: {args.events:,} events in {len(batches)} batches "
          f"({time.perf_counter() - t0:.1f} s, not timed); RSS after generation {rss_mib():.0f} MiB")
    runs = [run_a(batches, args.events) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    for i, r in enumerate(runs):
        print(f"  run {i + 1}: {r['seconds']:.3f} s  {r['events_per_s'] / 1e6:.1f} M events/s")
    print(f"A tumbling 1s / 1000 keys, count+sum, wm 200ms, cores=1: "
          f"{best['events_per_s'] / 1e6:.1f} M events/s (best of {args.repeat}), "
          f"rows={best['rows']:,} checksum={best['checksum']} late={best['late_dropped']} "
          f"peak_groups={best['peak_groups']:,} peak_rss={rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
