"""Workload E (WORKLOADS.md): durable ingest. The data and query of workload A with a
``state_dir`` (write-ahead log with group commit, a checkpoint every second) against the same
run without one, then recovery after ``kill -9`` halfway.

    python benches/durable.py                         # 10 M events, best of 3, cores=1
    python benches/durable.py --events 2000000 --repeat 1 --cores 1,2

Reported per core count: events/s with durability off and on (and their ratio; the target is
at least 0.5) for two producers: one that waits for each push to be durable before the next
(``push``), and one that keeps up to 8 pushes in flight (``submit``, waiting for a push's
receipt once 8 newer ones are submitted, then ``sync``; every push is still synced before it
counts as acknowledged). Also on with ``fsync=False`` (every push written to the log before it
returns, no sync: a killed process loses nothing, a power cut may lose the page cache), WAL
bytes per event, WAL syncs per second, checkpoints taken and how long one on demand after the last push takes; then a
child process pushes the first half with sequence numbers and is killed with SIGKILL once it
has been acknowledged; recovery time (load checkpoint + replay the log tail), the batches the
log tail held, and a check that finishing the run from the recovered state gives exactly the
uninterrupted run's results. Also: events/s with durability on and the results published to
an exactly-once Parquet sink instead of collected, and with 2 and 4 producer threads pushing
at once (their pushes share WAL syncs). Data is generated (seed 42) before the clock starts.
Times are wall clock on this machine; the disk is the state_dir's (default: a fresh directory
under the system temp dir).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc

import laminar as lm
from laminar.datagen import workload_a


def pipeline(cores: int, state_dir: str | None, fsync: bool = True):
    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every="1s", fsync=fsync)
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    out = (src.window(lm.tumbling("1s")).group_by("key")
              .agg(n=lm.count(), total=lm.sum("value")).collect("per_sec"))
    return eng, src, out


def canonical(t: pa.Table) -> pa.Table:
    return t.sort_by([("window_start", "ascending"), ("key", "ascending")])


def run(batches, n: int, cores: int, state_dir: str | None, fsync: bool = True,
        inflight: int = 0) -> tuple[pa.Table, dict]:
    """One run; ``inflight`` > 0: the producer uses ``submit`` and waits for a push's
    durability only once ``inflight`` newer pushes are submitted (then for all, ``sync``)."""
    eng, src, out = pipeline(cores, state_dir, fsync)
    start = time.perf_counter()
    if inflight:
        pending: collections.deque = collections.deque()
        for k, b in enumerate(batches):
            pending.append(src.submit(b, seq=k))
            if len(pending) > inflight:
                pending.popleft().result()
        eng.sync()
    else:
        for k, b in enumerate(batches):
            src.push(b, seq=k)
    checkpoint_s = None
    if state_dir is not None:
        # A run is shorter than checkpoint_every: time one checkpoint of the state the pushes
        # left (open windows, positions) on demand, outside the rate.
        c = time.perf_counter()
        eng.checkpoint()
        checkpoint_s = time.perf_counter() - c
    eng.flush()
    elapsed = time.perf_counter() - start - (checkpoint_s or 0.0)
    result = out.to_arrow()
    m = eng.metrics()
    eng.close()
    if pc.sum(result["n"]).as_py() != n:
        raise SystemExit(f"counted {pc.sum(result['n']).as_py()} events, expected {n}")
    fig = {"seconds": elapsed, "events_per_s": n / elapsed}
    d = m.get("durability")
    if d:
        fig.update(wal_bytes=d["wal_bytes"], wal_syncs=d["wal_syncs"], wal_records=d["wal_records"], checkpoints=d["checkpoints"],
                   last_checkpoint_s=d["last_checkpoint_s"], skipped=d["checkpoints_skipped"],
                   checkpoint_s=checkpoint_s)
    return result, fig


# Pushes a pipelined producer keeps submitted but not yet known durable (workload E's
# "durability on" with a producer that does not wait for each sync before its next push).
INFLIGHT = 8


def run_sink(batches, n: int, cores: int, state_dir: str, out_dir: str) -> dict:
    """The same query with its results published exactly once to Parquet files (durability
    on): events/s, and the published rows must count every event."""
    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every="1s")
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("200ms"))
    sink = (src.window(lm.tumbling("1s")).group_by("key")
               .agg(n=lm.count(), total=lm.sum("value")).sink(lm.files(out_dir), name="per_sec"))
    start = time.perf_counter()
    for k, b in enumerate(batches):
        src.push(b, seq=k)
    eng.flush()
    elapsed = time.perf_counter() - start
    eng.close()
    published = sink.read()
    if pc.sum(published["n"]).as_py() != n:
        raise SystemExit(f"the sink published {pc.sum(published['n']).as_py()} events, expected {n}")
    return {"seconds": elapsed, "events_per_s": n / elapsed, "files": len(sink.files())}


def run_producers(batches, n: int, cores: int, state_dir: str, producers: int) -> dict:
    """The same query fed by `producers` Python threads at once (batch i by thread
    i % producers), durability on: their pushes share WAL syncs (group commit). Events/s and
    syncs per record. The threads interleave batches out of time order, so the watermark
    delay is an hour here (windows close at flush) and every event must be counted."""
    import threading

    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every="1s")
    src = eng.source("trades", time="ts", watermark=lm.bounded_delay("1h"))
    out = (src.window(lm.tumbling("1s")).group_by("key")
              .agg(n=lm.count(), total=lm.sum("value")).collect("per_sec"))
    parts = [batches[i::producers] for i in range(producers)]
    failed: list[BaseException] = []

    def push(part):
        try:
            for b in part:
                src.push(b)
        except BaseException as e:  # reported below
            failed.append(e)

    threads = [threading.Thread(target=push, args=(p,)) for p in parts]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eng.flush()
    elapsed = time.perf_counter() - start
    m = eng.metrics()["durability"]
    counted = pc.sum(out.to_arrow()["n"]).as_py()
    eng.close()
    if failed:
        raise SystemExit(f"a producer failed: {failed[0]!r}")
    if counted != n:
        raise SystemExit(f"{producers} producers: counted {counted} events, expected {n}")
    return {"events_per_s": n / elapsed, "records": m["wal_records"], "syncs": m["wal_syncs"],
            "counted": counted}


CHILD = """
import sys, laminar as lm
from laminar.datagen import workload_a
sys.path.insert(0, {bench_dir!r})
from durable import pipeline
batches = workload_a({events}, {batch})
eng, src, out = pipeline({cores}, {state_dir!r})
print("ready", flush=True)
for k, b in enumerate(batches[:{half}]):
    src.push(b, seq=k)
print("acknowledged", {half} - 1, flush=True)
import time
time.sleep(60)
"""


def crash_and_recover(batches, n: int, cores: int, batch: int, base: str, want: pa.Table) -> dict:
    state_dir = tempfile.mkdtemp(prefix="laminar-e-", dir=base)
    half = len(batches) // 2
    code = CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), events=n, batch=batch,
                        cores=cores, state_dir=state_dir, half=half)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("acknowledged"):
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    eng, src, out = pipeline(cores, state_dir)
    start = time.perf_counter()
    report = eng.recover()
    recovery_s = time.perf_counter() - start
    pos = src.position()
    if pos["last_seq"] != half - 1:
        raise SystemExit(f"recovered up to seq {pos['last_seq']}, acknowledged {half - 1}")
    for k in range(half, len(batches)):
        src.push(batches[k], seq=k)
    eng.flush()
    got = canonical(out.to_arrow())  # everything since recovery, the replayed tail's included
    eng.close()
    # What the killed child emitted is gone with it; the windows it had closed before its
    # last checkpoint are not emitted again. Compare the windows closed after recovery.
    first = pc.min(got["window_start"]).as_py() if got.num_rows else None
    tail = canonical(want.filter(pc.greater_equal(want["window_start"], first))) if first is not None else want
    if not got.equals(tail):
        raise SystemExit("results after recovery differ from the uninterrupted run")
    shutil.rmtree(state_dir, ignore_errors=True)
    return {"recovery_s": recovery_s, "replayed_records": report["replayed_records"],
            "checkpoint": report["checkpoint"], "windows_after_recovery": got.num_rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cores", default="1")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where state directories are made")
    args = p.parse_args()
    batches = workload_a(args.events, args.batch)
    n = args.events
    print(f"generated workload A: {n:,} events in {len(batches)} batches of {args.batch:,}")
    for cores in [int(c) for c in args.cores.split(",")]:
        best_off = best_on = best_sink = best_os = best_pl = None
        want = None
        for _ in range(args.repeat):  # interleaved, best of each
            want, off = run(batches, n, cores, None)
            d = tempfile.mkdtemp(prefix="laminar-e-", dir=args.dir)
            got, on = run(batches, n, cores, d)
            shutil.rmtree(d, ignore_errors=True)
            if not canonical(got).equals(canonical(want)):
                raise SystemExit("durable run's results differ from the plain run's")
            d = tempfile.mkdtemp(prefix="laminar-e-", dir=args.dir)
            got, os_ = run(batches, n, cores, d, fsync=False)
            shutil.rmtree(d, ignore_errors=True)
            if not canonical(got).equals(canonical(want)):
                raise SystemExit("fsync=False run's results differ from the plain run's")
            best_off = off if best_off is None or off["seconds"] < best_off["seconds"] else best_off
            best_on = on if best_on is None or on["seconds"] < best_on["seconds"] else best_on
            best_os = os_ if best_os is None or os_["seconds"] < best_os["seconds"] else best_os
            d = tempfile.mkdtemp(prefix="laminar-e-", dir=args.dir)
            got, pl = run(batches, n, cores, d, inflight=INFLIGHT)
            shutil.rmtree(d, ignore_errors=True)
            if not canonical(got).equals(canonical(want)):
                raise SystemExit("pipelined run's results differ from the plain run's")
            best_pl = pl if best_pl is None or pl["seconds"] < best_pl["seconds"] else best_pl
            d = tempfile.mkdtemp(prefix="laminar-e-", dir=args.dir)
            sk = run_sink(batches, n, cores, os.path.join(d, "state"), os.path.join(d, "out"))
            shutil.rmtree(d, ignore_errors=True)
            best_sink = sk if best_sink is None or sk["seconds"] < best_sink["seconds"] else best_sink
        multi = {}
        for producers in (1, 2, 4):
            d = tempfile.mkdtemp(prefix="laminar-e-", dir=args.dir)
            multi[producers] = run_producers(batches, n, cores, d, producers)
            shutil.rmtree(d, ignore_errors=True)
        rec = crash_and_recover(batches, n, cores, args.batch, args.dir, canonical(want))
        print(f"\n## cores={cores}")
        print("| figure | value |\n|---|---:|")
        print(f"| events/s, durability off | {best_off['events_per_s']:,.0f} |")
        print(f"| events/s, durability on (WAL + checkpoint every 1 s) | {best_on['events_per_s']:,.0f} |")
        print(f"| on / off | {best_on['events_per_s'] / best_off['events_per_s']:.2f} |")
        print(f"| events/s, durability on, producer keeps <= {INFLIGHT} pushes in flight (submit) | "
              f"{best_pl['events_per_s']:,.0f} ({best_pl['wal_syncs']:,} syncs for {best_pl['wal_records']:,} records) |")
        print(f"| on (pipelined) / off | {best_pl['events_per_s'] / best_off['events_per_s']:.2f} |")
        print(f"| events/s, durability on with fsync=False (logged per push, not synced) | {best_os['events_per_s']:,.0f} |")
        print(f"| on (fsync=False) / off | {best_os['events_per_s'] / best_off['events_per_s']:.2f} |")
        print(f"| events/s, durability on + exactly-once Parquet sink | {best_sink['events_per_s']:,.0f} "
              f"({best_sink['files']} files) |")
        for producers, r in multi.items():
            print(f"| events/s, durability on, watermark delay 1 h, {producers} producer thread(s) | {r['events_per_s']:,.0f} "
                  f"({r['syncs']:,} syncs for {r['records']:,} records) |")
        print(f"| WAL bytes per event | {best_on['wal_bytes'] / n:.1f} |")
        print(f"| WAL syncs | {best_on['wal_syncs']:,} ({best_on['wal_syncs'] / best_on['seconds']:,.0f}/s) |")
        print(f"| checkpoints taken (skipped), periodic and the one on demand | {best_on['checkpoints']} ({best_on['skipped']}) |")
        print(f"| checkpoint on demand after the last push (`eng.checkpoint()`, not in the rate) | "
              f"{best_on['checkpoint_s'] * 1e3:.1f} ms |")
        print(f"| recovery after kill -9 halfway | {rec['recovery_s'] * 1e3:.1f} ms "
              f"(checkpoint {rec['checkpoint']}, {rec['replayed_records']} log records replayed) |")
        print(f"| results after recovery equal the uninterrupted run | yes ({rec['windows_after_recovery']:,} windows) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
