"""A durable pipeline run as a child process by ``test_durability.py``.

``python durable_child.py STATE_DIR N_BATCHES CORES START [--pipeline windows|dedup]
[--submit K] [--finish OUT.arrow]``: opens the engine on STATE_DIR with that pipeline
(default: windows), recovers, checks that every push acknowledged before (``START - 1``, as
the parent saw them) survived, and pushes batches START..N_BATCHES (batch k is a pure
function of k, so a restarted run pushes the same data), printing ``pushed k`` once push k is
acknowledged, i.e. durable: when ``push`` returned, or with ``--submit K`` (``Source.submit``,
at most K pushes in flight) when its receipt's ``result()`` returned. With ``--finish`` it then flushes and writes the pipeline's ``all`` result to
OUT.arrow. The parent kills it with SIGKILL at moments of its choosing.
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import pyarrow as pa

import laminar as lm

sys.path.insert(0, os.path.dirname(__file__))
from children import resume_from  # noqa: E402

ROWS = 2_000


def batch(k: int) -> pa.Table:
    rng = np.random.default_rng(1000 + k)
    i = np.arange(k * ROWS, (k + 1) * ROWS, dtype=np.int64)
    ts = 1_700_000_000_000 + i // 4 - rng.integers(0, 100, ROWS)
    return pa.table({
        "ts": ts,
        "key": rng.integers(0, 50, ROWS),
        "value": rng.random(ROWS) * 100.0,
    })


def pipeline(state_dir: str | None, cores: int, checkpoint_every: str | None = "50ms") -> tuple[lm.Engine, lm.Source, dict]:
    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every=checkpoint_every)
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    out = {
        # Closes windows as the data goes: results before the crash and after it.
        "per_sec": src.window(lm.tumbling("1s")).group_by("key")
                      .agg(n=lm.count(), total=lm.sum("value"), lo=lm.min("value"),
                           first=lm.first("value"), last=lm.last("value"))
                      .collect("per_sec"),
        # One window holding everything: its result, emitted at flush, shows that no row was
        # lost or applied twice across crashes.
        "all": src.window(lm.tumbling("1d")).group_by("key")
                  .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value"))
                  .collect("all"),
    }
    return eng, src, out


def dedup_pipeline(state_dir: str | None, cores: int, checkpoint_every: str | None = "50ms",
                   state: str = "memory") -> tuple[lm.Engine, lm.Source, dict]:
    """Keeps the first row per key within 300 ms (each key recurs every ~12 ms, so nearly every
    batch has rows that duplicate a row kept in the batch before it)."""
    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every=checkpoint_every)
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    firsts = src.dedup("key", within="300ms", state=state)
    out = {
        # The kept rows as they go: results before the crash and after it.
        "kept": firsts.collect("kept"),
        # Per key, what was kept, emitted at flush: a row kept twice, or a duplicate kept
        # because the dedup state was lost in a crash, changes it.
        "all": firsts.window(lm.tumbling("1d")).group_by("key")
                     .agg(n=lm.count(), total=lm.sum("value"), last=lm.max("ts"))
                     .collect("all"),
    }
    return eng, src, out


PIPELINES = {"windows": pipeline, "dedup": dedup_pipeline}


def main() -> None:
    state_dir, n, cores, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    flags = sys.argv[5:]
    finish = flags[flags.index("--finish") + 1] if "--finish" in flags else None
    make = PIPELINES[flags[flags.index("--pipeline") + 1]] if "--pipeline" in flags else pipeline
    eng, src, out = make(state_dir, cores)
    eng.recover()
    # Every acknowledged push is durable: recovery has at least what the parent saw.
    applied = resume_from(src, start)
    # The push in flight when the previous run died may or may not be in the log: it is
    # pushed again with its sequence number and applied at most once.
    inflight = int(flags[flags.index("--submit") + 1]) if "--submit" in flags else 0
    pending: collections.deque = collections.deque()
    for k in range(start, n):
        if inflight:
            receipt = src.submit(batch(k), seq=k)
            assert receipt.applied or k <= applied, (k, applied)
            pending.append((k, receipt))
            while len(pending) > inflight:
                done, r = pending.popleft()
                r.result()
                print(f"pushed {done}", flush=True)
        else:
            applied_now = src.push(batch(k), seq=k)
            assert applied_now or k <= applied, (k, applied)
            print(f"pushed {k}", flush=True)
    for done, r in pending:
        r.result()
        print(f"pushed {done}", flush=True)
    if finish:
        eng.flush()
        tables = {name: q.poll() for name, q in out.items()}
        with pa.OSFile(finish, "wb") as f:
            t = tables["all"]
            with pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
    eng.close()


if __name__ == "__main__":
    main()
