"""A durable pipeline with exactly-once sinks, run as a child process by ``test_sinks.py``.

``python sink_child.py STATE_DIR OUT_DIR N_BATCHES CORES START [--finish]``: opens the engine
on STATE_DIR with a Parquet sink in OUT_DIR/per_sec, a JSON-lines sink in OUT_DIR/totals and
a callback sink that appends every epoch it receives to OUT_DIR/applied.jsonl (fsynced, one
line per delivery: a consumer that dedups by epoch id). It recovers, pushes batches
START..N_BATCHES with their sequence numbers, printing ``pushed k`` once each push returned,
and with ``--finish`` flushes and closes. The parent kills it with SIGKILL at moments of its
choosing, or sets ``LAMINAR_CRASH_AT`` to abort it between the phases of a checkpoint.
"""

from __future__ import annotations

import json
import os
import sys

import pyarrow as pa

import laminar as lm

sys.path.insert(0, os.path.dirname(__file__))
from children import resume_from  # noqa: E402
from durable_child import batch  # noqa: E402


def queries(src: lm.Source) -> dict:
    """The sink pipeline's queries, unregistered."""
    return {
        "per_sec": src.window(lm.tumbling("1s")).group_by("key")
                      .agg(n=lm.count(), total=lm.sum("value"), hi=lm.max("value")),
        "totals": src.window(lm.tumbling("5s")).agg(n=lm.count(), total=lm.sum("value")),
        "big": src.filter(lm.col("value") > 99.5).select("ts", "key", "value"),
    }


def pipeline(state_dir: str, out_dir: str, cores: int, checkpoint_every: str = "5ms"):
    eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every=checkpoint_every)
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    q = queries(src)
    applied = open(os.path.join(out_dir, "applied.jsonl"), "a")

    def apply(epoch: int, table: pa.Table) -> None:
        applied.write(json.dumps({"epoch": epoch, "rows": table.to_pylist()}) + "\n")
        applied.flush()
        os.fsync(applied.fileno())

    sinks = {
        "per_sec": q["per_sec"].sink(lm.files(os.path.join(out_dir, "per_sec")), name="per_sec"),
        "totals": q["totals"].sink(lm.files(os.path.join(out_dir, "totals"), format="jsonl"), name="totals"),
        "big": q["big"].sink(apply, name="big"),
    }
    return eng, src, sinks


def main() -> None:
    state_dir, out_dir = sys.argv[1], sys.argv[2]
    n, cores, start = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    finish = "--finish" in sys.argv[6:]
    eng, src, _ = pipeline(state_dir, out_dir, cores)
    eng.recover()
    resume_from(src, start)
    for k in range(start, n):
        src.push(batch(k), seq=k)
        print(f"pushed {k}", flush=True)
    if finish:
        eng.flush()
    eng.close()


if __name__ == "__main__":
    main()
