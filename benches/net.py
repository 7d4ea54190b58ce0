"""Wire-protocol benchmark: push throughput over loopback (10,000-row batches, events/s and
GB/s of Arrow IPC) versus the in-process push of the same data, and ping round trips (p50/p99),
for each I/O backend of the server (``LAMINAR_IO=uring`` and ``epoll``).

The server runs in a child process (``Engine.serve``) with the same pipeline as the in-process
run; the client is ``lm.connect`` (pure Python) in this process. Each push waits for its Ack.

    python benches/net.py            # full size
    python benches/net.py --quick    # a few seconds

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

import laminar as lm

ROWS = 10_000

CHILD = """
import sys, laminar as lm
sys.path.insert(0, {here!r})
from net import pipeline
eng = lm.Engine()
pipeline(eng)
srv = eng.serve()
print(srv.address, srv.backend, flush=True)
sys.stdin.read()
m = srv.metrics()
srv.close()
print(m["rows_in"], flush=True)
"""


def pipeline(eng: lm.Engine):
    s = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count(), total=lm.sum("value")).collect(name="per_sec")
    return s


def batches(n: int) -> list[pa.Table]:
    out = []
    for b in range(n):
        ids = pa.array(range(b * ROWS, (b + 1) * ROWS), pa.int64())
        out.append(pa.table({
            "ts": pc.divide(ids, pa.scalar(10, pa.int64())),
            "key": pc.cast(pc.bit_wise_and(ids, pa.scalar(63, pa.int64())), pa.int32()),
            "value": pc.cast(ids, pa.float64()),
        }))
    return out


def ipc_bytes(t: pa.Table) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().size


def in_process(data: list[pa.Table]) -> float:
    eng = lm.Engine()
    s = pipeline(eng)
    t0 = time.perf_counter()
    for t in data:
        s.push(t)
    dt = time.perf_counter() - t0
    eng.close()
    return dt


def remote(backend: str, data: list[pa.Table], pings: int) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "LAMINAR_IO": backend}
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(here=here)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = child.stdout.readline().split()
    if len(line) != 2:
        child.kill()
        return {"error": child.stderr.read().strip().splitlines()[-1:]}
    addr, got_backend = line
    c = lm.connect(addr)
    for _ in range(50):
        c.ping()
    rtts = sorted(c.ping() for _ in range(pings))
    c.push("trades", data[0])  # warm-up (binds the schema)
    t0 = time.perf_counter()
    for t in data[1:]:
        c.push("trades", t)
    dt = time.perf_counter() - t0
    c.close()
    out, _ = child.communicate("", timeout=60)
    rows = int(out.strip().split()[-1])
    return {
        "backend": got_backend, "push_s": dt, "rows_applied": rows,
        "p50_us": rtts[len(rtts) // 2] * 1e6, "p99_us": rtts[int(len(rtts) * 0.99) - 1] * 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 30 if args.quick else 300
    pings = 500 if args.quick else 5000
    data = batches(n)
    wire = ipc_bytes(data[0])
    print(f"laminar {lm.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{n} batches x {ROWS} rows, {wire / 1e3:.0f} KB Arrow IPC per batch; "
          f"server: one I/O thread, child process; client: lm.connect (Python), Ack per push")
    dt_local = in_process(data[1:])
    ev = (n - 1) * ROWS
    rows = [("in-process push", "-", ev / dt_local, (n - 1) * wire / dt_local / 1e9, None, None)]
    for backend in ("epoll", "uring"):
        r = remote(backend, data, pings)
        if "error" in r:
            rows.append((f"loopback ({backend})", "unavailable", None, None, None, None))
            continue
        assert r["rows_applied"] == n * ROWS, r
        rows.append((f"loopback ({backend})", r["backend"], ev / r["push_s"], (n - 1) * wire / r["push_s"] / 1e9,
                     r["p50_us"], r["p99_us"]))
    print(f"{'mode':<20}{'backend':<12}{'events/s':>14}{'GB/s':>8}{'ping p50 us':>13}{'ping p99 us':>13}{'vs in-proc':>12}")
    for name, b, eps, gbs, p50, p99 in rows:
        if eps is None:
            print(f"{name:<20}{b:<12}")
            continue
        ratio = eps / rows[0][2]
        print(f"{name:<20}{b:<12}{eps:>14,.0f}{gbs:>8.3f}"
              f"{'' if p50 is None else f'{p50:.0f}':>13}{'' if p99 is None else f'{p99:.0f}':>13}{ratio:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
