"""Exactly-once sinks (``query.sink(lm.files(...))`` and callback sinks).

The model is the same queries collected on an engine without sinks and without interruption:
whatever happens in between (epochs, restarts, SIGKILL at a moment hypothesis picks, a crash
between the phases of a checkpoint), the published files and the epochs a callback applied
(deduplicated by epoch id) must hold exactly that engine's rows: no duplicate, no gap.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import laminar as lm
from laminar import errors
from laminar.sink import SinkHandle

sys.path.insert(0, os.path.dirname(__file__))
from children import acknowledged, run_child  # noqa: E402
from durable_child import batch  # noqa: E402
from sink_child import pipeline, queries  # noqa: E402

CHILD = os.path.join(os.path.dirname(__file__), "sink_child.py")


def sorted_rows(t: pa.Table) -> list:
    cols = sorted(t.column_names)
    return sorted((tuple(r[c] for c in cols) for r in t.to_pylist()), key=repr)


def reference(n: int) -> dict[str, list]:
    """The sink pipeline's queries collected without sinks, without interruption."""
    eng = lm.Engine()
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    res = {name: q.collect(name) for name, q in queries(src).items()}
    for k in range(n):
        src.push(batch(k))
    eng.flush()
    out = {name: sorted_rows(r.to_arrow()) for name, r in res.items()}
    eng.close()
    return out


def applied_epochs(path) -> dict[int, list]:
    """Epochs a callback applied, deduplicated by id; a redelivered epoch must be identical."""
    seen: dict[int, list] = {}
    if not os.path.exists(path):
        return seen
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                continue  # torn by the kill: the callback did not return, it is redelivered
            rec = json.loads(line)
            rows = rec["rows"]
            if rec["epoch"] in seen:
                assert seen[rec["epoch"]] == rows, f"epoch {rec['epoch']} redelivered with other rows"
            seen[rec["epoch"]] = rows
    return seen


def published(out_dir) -> dict[str, list]:
    """What the sinks of the child pipeline published."""
    def read_dir(name, fmt):
        handle = SinkHandle(None, name, lm.files(os.path.join(out_dir, name), format=fmt), False)
        return sorted_rows(handle.read())

    epochs = applied_epochs(os.path.join(out_dir, "applied.jsonl"))
    big = [row for e in sorted(epochs) for row in epochs[e]]
    return {
        "per_sec": read_dir("per_sec", "parquet"),
        "totals": read_dir("totals", "jsonl"),
        "big": sorted_rows(pa.Table.from_pylist(big)) if big else [],
    }


def test_file_sinks_publish_what_collect_sees(tmp_path):
    for cores in (1, 2):
        eng = lm.Engine(cores=cores, checkpoint_every="5ms")
        src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
        q = queries(src)["per_sec"]
        want = q.collect("collected")
        pq_sink = q.sink(lm.files(tmp_path / f"pq{cores}"), name="pq")
        js_sink = q.sink(lm.files(tmp_path / f"js{cores}", format="jsonl"), name="js")
        for k in range(8):
            src.push(batch(k))
            time.sleep(0.006)  # epochs close on the next input after checkpoint_every
        assert pq_sink.files(), "epochs closed while pushing published files"
        before_flush = len(pq_sink.read())
        eng.flush()
        rows = sorted_rows(want.to_arrow())
        assert len(rows) > before_flush > 0
        assert sorted_rows(pq_sink.read()) == rows
        assert sorted_rows(js_sink.read()) == rows
        m = pq_sink.metrics()
        assert m["rows_committed"] == len(rows) == m["rows_written"]
        assert m["epochs_committed"] >= 2 and m["files_committed"] == len(pq_sink.files())
        assert not [n for n in os.listdir(tmp_path / f"pq{cores}" / "_staging") if n != "LOCK"]
        eng.close()


def test_callback_gets_each_epoch_once_in_order():
    eng = lm.Engine(checkpoint_every="2ms")
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    q = queries(src)["big"]
    want = q.collect("collected")
    got: list[tuple[int, pa.Table]] = []
    q.sink(lambda epoch, table: got.append((epoch, table)), name="cb")
    for k in range(6):
        src.push(batch(k))
        time.sleep(0.003)
    eng.flush()
    epochs = [e for e, _ in got]
    assert len(epochs) >= 2 and epochs == sorted(set(epochs)), epochs
    assert all(t.num_rows > 0 for _, t in got)
    assert sorted_rows(pa.concat_tables([t for _, t in got])) == sorted_rows(want.to_arrow())
    eng.close()


def test_durable_sinks_across_a_clean_restart(tmp_path):
    n = 10
    want = reference(n)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    eng, src, sinks = pipeline(str(state), str(out), 1, checkpoint_every="1h")
    for k in range(5):
        src.push(batch(k), seq=k)
    cp = eng.checkpoint()
    assert sinks["per_sec"].metrics()["last_committed_epoch"] == cp
    for k in range(5, 7):
        src.push(batch(k), seq=k)
    eng.close()  # publishes through a final checkpoint
    eng, src, sinks = pipeline(str(state), str(out), 1, checkpoint_every="1h")
    assert eng.recover()["replayed_records"] == 0
    for k in range(7, n):
        src.push(batch(k), seq=k)
    eng.flush()
    eng.close()
    assert published(str(out)) == want


CRASH_POINTS = ["checkpoint.sinks_staged", "checkpoint.written", "checkpoint.sinks_committed"]
kill = st.one_of(
    st.tuples(st.just("kill"), st.integers(0, 14), st.floats(0.0, 0.05)),
    st.tuples(st.just("crash"), st.sampled_from(CRASH_POINTS), st.integers(1, 6)),
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(kills=st.lists(kill, min_size=1, max_size=3), cores=st.sampled_from([1, 2]))
# Each phase of the two-phase commit, whatever hypothesis picks.
@example(kills=[("crash", "checkpoint.sinks_staged", 3)], cores=1)
@example(kills=[("crash", "checkpoint.written", 3)], cores=2)
@example(kills=[("crash", "checkpoint.sinks_committed", 2), ("crash", "checkpoint.written", 1)], cores=1)
def test_crashes_at_random_moments_publish_exactly_once(tmp_path_factory, kills, cores):
    n = 16
    state = tmp_path_factory.mktemp("state")
    out = tmp_path_factory.mktemp("out")
    acked = 0
    for kind, a, b in kills:
        if kind == "kill":
            code, lines, err = run_child(CHILD, state, out, n, cores, acked, kill_after_lines=a, kill_delay=b)
            assert code in (-signal.SIGKILL, 0), (code, lines, err)
        else:
            code, lines, err = run_child(CHILD, state, out, n, cores, acked, crash_at=f"{a}:{b}")
            assert code in (-signal.SIGABRT, 0), (code, lines, err)
            assert code == 0 or "crash point" in err, err
        acked = acknowledged(lines, acked)
    code, lines, err = run_child(CHILD, state, out, n, cores, acked, "--finish")
    assert code == 0, (code, lines, err)
    assert published(str(out)) == reference(n)


def test_sink_errors_are_clear(tmp_path):
    eng = lm.Engine()
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    q = queries(src)["per_sec"]
    with pytest.raises(errors.QueryError, match="lm.files"):
        q.sink("out/")
    with pytest.raises(errors.QueryError, match="format"):
        lm.files(tmp_path, format="csv")
    q.sink(lm.files(tmp_path / "a"), name="a")
    with pytest.raises(errors.NameConflictError):
        q.sink(lm.files(tmp_path / "b"), name="a")
    with pytest.raises(errors.QueryError, match="go to sink 'a'"):
        eng._native.take_output("a")
    other = lm.Engine()
    osrc = other.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    with pytest.raises(errors.SinkError, match="in use by another engine"):
        queries(osrc)["per_sec"].sink(lm.files(tmp_path / "a"))
    eng.close()
    other.close()


def test_a_full_disk_under_a_file_sink_stops_the_engine_and_a_restart_loses_nothing(tmp_path):
    """ENOSPC while a sink writes an epoch (fault injection): the call raises SinkError naming
    the full disk, the engine stops without publishing any of that epoch, and an engine
    created again on the same state_dir (with space) publishes exactly the uninterrupted
    run's rows: the epoch published before the failure once, the rest from the log."""
    n = 10
    want = reference(n)["per_sec"]

    def open_engine(state, out, budget):
        eng = lm.Engine(state_dir=str(state), checkpoint_every="1h")
        src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
        sink = queries(src)["per_sec"].sink(lm.files(str(out), _disk_budget=budget), name="per_sec")
        return eng, src, sink

    def first_epoch(eng, src):
        for k in range(4):
            src.push(batch(k), seq=k)
        return eng.checkpoint()

    # How many bytes the first epoch's file takes (the encoding is deterministic).
    eng, src, sink = open_engine(tmp_path / "probe-state", tmp_path / "probe-out", None)
    first_epoch(eng, src)
    first_bytes = sum(os.path.getsize(p) for p in sink.files())
    eng.close()
    assert first_bytes > 0

    state, out = tmp_path / "state", tmp_path / "out"
    eng, src, sink = open_engine(state, out, first_bytes + 16)
    cp = first_epoch(eng, src)
    assert sink.metrics()["last_committed_epoch"] == cp
    published_first = sorted_rows(sink.read())
    for k in range(4, 7):
        src.push(batch(k), seq=k)
    with pytest.raises(errors.SinkError, match="is full"):
        eng.checkpoint()
    # Stopped: nothing more is accepted, and nothing of the failed epoch was published.
    with pytest.raises(errors.EngineClosedError, match="stopped after an error"):
        src.push(batch(7), seq=7)
    assert sorted_rows(sink.read()) == published_first

    eng, src, sink = open_engine(state, out, None)
    assert eng.recover()["checkpoint"] == cp
    resume = src.position()["last_seq"]
    assert resume == 6, "every acknowledged push is recovered"
    for k in range(resume + 1, n):
        src.push(batch(k), seq=k)
    eng.flush()
    eng.close()
    assert sorted_rows(sink.read()) == want


def test_durable_sinks_must_be_defined_before_data_and_kept(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    eng, src, _ = pipeline(str(state), str(out), 1)
    src.push(batch(0), seq=0)
    with pytest.raises(errors.QueryError, match="after data was pushed"):
        queries(src)["totals"].sink(lm.files(tmp_path / "late"))
    eng.checkpoint()
    eng.close()
    # The same pipeline without its callback sink is another pipeline.
    eng = lm.Engine(state_dir=str(state))
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    q = queries(src)
    q["per_sec"].sink(lm.files(out / "per_sec"), name="per_sec")
    q["totals"].sink(lm.files(out / "totals", format="jsonl"), name="totals")
    q["big"].collect("big")
    with pytest.raises(errors.DurabilityError, match="sinks"):
        eng.recover()
    eng.close()


def test_a_callback_that_raises_gets_the_epoch_again(tmp_path):
    calls: list[int] = []
    fail = [True]

    def flaky(epoch: int, table: pa.Table) -> None:
        calls.append(epoch)
        if fail[0]:
            raise RuntimeError("downstream unavailable")

    eng = lm.Engine(state_dir=str(tmp_path), checkpoint_every=None)
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    queries(src)["big"].sink(flaky, name="cb")
    src.push(batch(0), seq=0)
    with pytest.raises(errors.SinkError, match="raised on epoch 1"):
        eng.checkpoint()
    fail[0] = False
    src.push(batch(1), seq=1)  # the next call delivers epoch 1 again
    assert calls == [1, 1]
    eng.close()
    assert calls == [1, 1, 2]


def test_sink_late_rows_stay_pollable(tmp_path):
    eng = lm.Engine()
    src = eng.source("events", time="ts", watermark=lm.bounded_delay(0))
    h = (src.window(lm.tumbling(10), late="side").agg(n=lm.count())
         .sink(lm.files(tmp_path / "w"), name="w"))
    src.push(pa.table({"ts": [1, 2, 25], "v": [1, 1, 1]}))
    src.push(pa.table({"ts": [3], "v": [1]}))  # its window closed at watermark 25
    eng.flush()
    assert h.read().column("n").to_pylist() == [2, 1]
    assert h.late().poll().column("ts").to_pylist() == [3]
    eng.close()
