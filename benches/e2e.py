"""End-to-end benchmark from Python: the standard workloads of WORKLOADS.md that the engine
supports so far (A: tumbling window aggregation; B: interval join; D: sliding and session
windows).

    python benches/e2e.py                  # workloads A, B and D, full size, best of 3
    python benches/e2e.py --workloads A --events 2000000 --repeat 1
    python benches/e2e.py --workloads B,D --orders 200000 --events 1000000

Data comes from the project's one seeded generator (laminar.datagen, numpy seed 42) and is
built before the clock starts. Reported per workload: events/s from the first push through
the final flush, result rows, a checksum, the engine's peak state (groups or join rows held)
and the process's peak RSS so far (the process runs the workloads one after the other, so
a later workload's figure includes the earlier ones' peak). A run fails loudly if its count
check does not hold.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import pyarrow.compute as pc

import laminar as lm
from laminar.datagen import workload_a, workload_b


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


def run_b(batches, n_orders: int) -> dict:
    """B: inner interval join of orders and payments, payment.ts in [order.ts, order.ts + 10 s]."""
    eng = lm.Engine()
    orders = eng.source("orders", time="ts", watermark=lm.bounded_delay("200ms"))
    payments = eng.source("payments", time="ts", watermark=lm.bounded_delay("200ms"))
    out = orders.join(payments, on="order_id", within=("0s", "10s"), how="inner").collect("b")
    sources = {"orders": orders, "payments": payments}
    start = time.perf_counter()
    for side, b in batches:
        sources[side].push(b)
    eng.flush()
    elapsed = time.perf_counter() - start
    result = out.to_arrow()
    q = eng.metrics()["queries"]["b"]
    if result.num_rows != n_orders:
        raise SystemExit(f"workload B check failed: {result.num_rows} matched rows, expected {n_orders}")
    events = 2 * n_orders
    return {
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "rows": result.num_rows,
        "checksum": round(pc.sum(result["amount"]).as_py(), 2),
        "peak_state_rows": q["peak_state_rows"],
        "late_dropped": q["late_dropped"],
    }


def run_d_sliding(batches, n: int) -> dict:
    """D (sliding): 10 s windows every 1 s per key, count, sum and max of value."""
    eng = lm.Engine()
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    out = (src.window(lm.sliding("10s", every="1s")).group_by("key")
           .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value")).collect("d"))
    start = time.perf_counter()
    for b in batches:
        src.push(b)
    eng.flush()
    elapsed = time.perf_counter() - start
    result = out.to_arrow()
    q = eng.metrics()["queries"]["d"]
    counted = pc.sum(result["n"]).as_py()
    if counted != 10 * n:  # every event is in exactly 10 windows, and none is late
        raise SystemExit(f"workload D (sliding) check failed: counted {counted}, expected {10 * n}")
    return {
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "rows": result.num_rows,
        "checksum": round(pc.sum(result["total"]).as_py() + pc.sum(result["hi"]).as_py(), 3),
        "peak_groups": q["peak_groups"],
        "late_dropped": q["late_dropped"],
    }


def run_d_session(batches, n: int) -> dict:
    """D (session): sessions with a 300 ms gap per key, count."""
    eng = lm.Engine()
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    out = src.window(lm.session("300ms")).group_by("key").agg(n=lm.count()).collect("d")
    start = time.perf_counter()
    for b in batches:
        src.push(b)
    eng.flush()
    elapsed = time.perf_counter() - start
    result = out.to_arrow()
    q = eng.metrics()["queries"]["d"]
    counted = pc.sum(result["n"]).as_py()
    if counted != n:
        raise SystemExit(f"workload D (session) check failed: counted {counted} events, expected {n}")
    return {
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "rows": result.num_rows,
        # sessions and their spans: independent of batching, sensitive to any merge error
        "checksum": int(pc.sum(pc.subtract(result["window_end"], result["window_start"])).as_py()),
        "peak_groups": q["peak_groups"],
        "late_dropped": q["late_dropped"],
    }


def best_of(fn, repeat: int) -> dict:
    runs = [fn() for _ in range(repeat)]
    for i, r in enumerate(runs):
        print(f"  run {i + 1}: {r['seconds']:.3f} s  {r['events_per_s'] / 1e6:.2f} M events/s")
    return min(runs, key=lambda r: r["seconds"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    p.add_argument("--workloads", default="A,B,D", help="comma-separated subset of A,B,D (default: all)")
    p.add_argument("--orders", type=int, default=1_000_000, help="orders (and as many payments) for B")
    args = p.parse_args()
    chosen = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - {"A", "B", "D"})
    if unknown or not chosen:
        p.error(f"--workloads takes A, B and/or D, got {args.workloads!r}")

    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()} "
          f"python {platform.python_version()} laminar {lm.__version__}")
    batches = None
    if "A" in chosen or "D" in chosen:
        t0 = time.perf_counter()
        batches = workload_a(args.events, args.batch)
        print(f"generated workload A: {args.events:,} events in {len(batches)} batches "
              f"({time.perf_counter() - t0:.1f} s, not timed); RSS after generation {rss_mib():.0f} MiB")
    if "A" in chosen:
        runs = [run_a(batches, args.events) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        for i, r in enumerate(runs):
            print(f"  run {i + 1}: {r['seconds']:.3f} s  {r['events_per_s'] / 1e6:.1f} M events/s")
        print(f"A tumbling 1s / 1000 keys, count+sum, wm 200ms, cores=1: "
              f"{best['events_per_s'] / 1e6:.1f} M events/s (best of {args.repeat}), "
              f"rows={best['rows']:,} checksum={best['checksum']} late={best['late_dropped']} "
              f"peak_groups={best['peak_groups']:,} peak_rss={rss_mib():.0f} MiB")
    if "B" in chosen:
        t0 = time.perf_counter()
        b_batches = workload_b(args.orders, args.batch)
        print(f"generated workload B: {args.orders:,} orders + {args.orders:,} payments in {len(b_batches)} "
              f"batches ({time.perf_counter() - t0:.1f} s, not timed); RSS {rss_mib():.0f} MiB")
        best = best_of(lambda: run_b(b_batches, args.orders), args.repeat)
        print(f"B interval join orders/payments within [0, 10s], wm 200ms, cores=1: "
              f"{best['events_per_s'] / 1e6:.2f} M events/s (best of {args.repeat}), "
              f"rows={best['rows']:,} checksum={best['checksum']} late={best['late_dropped']} "
              f"peak_state_rows={best['peak_state_rows']:,} peak_rss={rss_mib():.0f} MiB")
        del b_batches
    if "D" in chosen:
        best = best_of(lambda: run_d_sliding(batches, args.events), args.repeat)
        print(f"D sliding 10s every 1s / 1000 keys, count+sum+max, wm 200ms, cores=1: "
              f"{best['events_per_s'] / 1e6:.2f} M events/s (best of {args.repeat}), "
              f"rows={best['rows']:,} checksum={best['checksum']} late={best['late_dropped']} "
              f"peak_groups={best['peak_groups']:,} peak_rss={rss_mib():.0f} MiB")
        best = best_of(lambda: run_d_session(batches, args.events), args.repeat)
        print(f"D session gap 300ms / 1000 keys, count, wm 200ms, cores=1: "
              f"{best['events_per_s'] / 1e6:.2f} M events/s (best of {args.repeat}), "
              f"rows={best['rows']:,} checksum={best['checksum']} late={best['late_dropped']} "
              f"peak_groups={best['peak_groups']:,} peak_rss={rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
