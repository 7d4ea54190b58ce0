"""Durability (``Engine(state_dir=...)``): the write-ahead log, checkpoints and recovery.

The model for every test is the same pipeline run without interruption: after a restart (a
clean close, or SIGKILL at a moment hypothesis picks) and completion, the results must equal
that run's row for row. Also: producer sequence numbers, positions, and each kind of bad
state directory (in use by another engine, damaged, written by another pipeline)."""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import time

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar as lm
from laminar import errors

sys.path.insert(0, os.path.dirname(__file__))
from children import acknowledged, run_child  # noqa: E402
from durable_child import batch, dedup_pipeline, pipeline  # noqa: E402
from reference import dedup  # noqa: E402

CHILD = os.path.join(os.path.dirname(__file__), "durable_child.py")


def sorted_rows(t: pa.Table) -> list:
    cols = t.column_names
    rows = [tuple(r[c] for c in cols) for r in t.to_pylist()]
    return sorted(rows, key=repr)


def uninterrupted(n: int, cores: int = 1, make=pipeline) -> dict[str, pa.Table]:
    eng, src, out = make(None, cores)
    for k in range(n):
        src.push(batch(k))
    eng.flush()
    res = {name: q.poll() for name, q in out.items()}
    eng.close()
    return res


def finish_and_compare(eng, src, out, start: int, n: int, want: dict) -> None:
    """Pushes batches ``start..n`` with their seq, flushes, checks that the one-day window
    holds exactly the uninterrupted run's rows, and closes."""
    for k in range(start, n):
        src.push(batch(k), seq=k)
    eng.flush()
    assert sorted_rows(out["all"].poll()) == sorted_rows(want["all"])
    eng.close()


def test_restart_after_close_resumes_where_it_stopped(tmp_path):
    n = 12
    want = uninterrupted(n)
    eng, src, out = pipeline(str(tmp_path), 1)
    got_before = []
    for k in range(5):
        assert src.push(batch(k), seq=k)
    cp = eng.checkpoint()
    for k in range(5, 8):
        assert src.push(batch(k), seq=k)
    got_before.append(out["per_sec"].poll())
    eng.close()

    eng, src, out = pipeline(str(tmp_path), 1)
    report = eng.recover()
    assert report["checkpoint"] is not None and report["checkpoint"] >= cp
    pos = src.position()
    assert pos["last_seq"] == 7 and pos["rows"] == 8 * 2_000
    # Pushing an already-applied batch again is recognised and ignored.
    assert src.push(batch(7), seq=7) is False
    for k in range(8, n):
        assert src.push(batch(k), seq=k)
    eng.flush()
    all_ = out["all"].poll()
    after = out["per_sec"].poll()
    assert sorted_rows(all_) == sorted_rows(want["all"])
    # per-second windows: what the first run emitted plus what the second emitted after
    # recovery equals the uninterrupted run, except windows the first run had emitted and
    # the replay of the log tail emitted again (results are exactly-once only through sinks).
    first = sorted_rows(pa.concat_tables(got_before))
    second = sorted_rows(after)
    whole = sorted_rows(want["per_sec"])
    assert set(first) | set(second) == set(whole)
    m = eng.metrics()["durability"]
    assert m["wal_records"] >= n - 8 and m["wal_syncs"] >= 1
    eng.close()


@pytest.mark.parametrize("cores", [1, 2])
def test_recovery_from_checkpoint_plus_log_equals_uninterrupted(tmp_path, cores):
    n = 10
    want = uninterrupted(n, cores=1)
    eng, src, out = pipeline(str(tmp_path), cores, checkpoint_every=None)
    for k in range(4):
        src.push(batch(k), seq=k)
    cp = eng.checkpoint()
    for k in range(4, 7):
        src.push(batch(k), seq=k)
    eng.close()  # no flush: windows stay open in the checkpoint and in the log

    eng, src, out = pipeline(str(tmp_path), cores, checkpoint_every=None)
    r = eng.recover()
    assert r["checkpoint"] == cp and r["replayed_records"] == 3, r
    finish_and_compare(eng, src, out, 7, n, want)


def test_whole_log_replay_without_checkpoint(tmp_path):
    n = 6
    want = uninterrupted(n)
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    for k in range(4):
        src.push(batch(k), seq=k)
    eng.close()
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    r = eng.recover()
    assert r["checkpoint"] is None and r["replayed_records"] == 4, r
    assert src.position()["rows"] == 4 * 2_000
    finish_and_compare(eng, src, out, 4, n, want)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(kills=st.lists(st.tuples(st.integers(0, 14), st.floats(0.0, 0.05)), min_size=1, max_size=3),
       cores=st.sampled_from([1, 2]))
def test_sigkill_at_random_moments_then_completion_equals_uninterrupted(tmp_path_factory, kills, cores):
    n = 16
    state = tmp_path_factory.mktemp("state")
    acked = 0  # pushes acknowledged so far (the child printed them after push returned)
    for after, delay in kills:
        code, lines, err = run_child(CHILD, state, n, cores, acked, kill_after_lines=after, kill_delay=delay)
        assert code in (-signal.SIGKILL, 0), (code, lines, err)
        acked = acknowledged(lines, acked)
    out = state.parent / f"{state.name}-result.arrow"
    code, lines, err = run_child(CHILD, state, n, cores, acked, "--finish", str(out))
    assert code == 0, (code, lines, err)
    got = pa.ipc.open_file(str(out)).read_all()
    assert sorted_rows(got) == sorted_rows(uninterrupted(n)["all"])


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(kills=st.lists(st.tuples(st.integers(0, 14), st.floats(0.0, 0.05)), min_size=1, max_size=3),
       cores=st.sampled_from([1, 2]), inflight=st.sampled_from([2, 5]))
def test_sigkill_of_a_pipelined_producer_loses_no_acknowledged_push(tmp_path_factory, kills, cores, inflight):
    """The producer keeps several pushes in flight (``Source.submit``) and counts one as
    acknowledged only once its receipt's ``result()`` returned. Killed at random moments, it
    resumes after the last acknowledged push (the child exits 3 if recovery lost one); pushes
    that were applied but not yet durable are pushed again with their ``seq`` and applied once.
    After completion the results equal an uninterrupted run's."""
    n = 16
    state = tmp_path_factory.mktemp("state")
    acked = 0
    for after, delay in kills:
        code, lines, err = run_child(CHILD, state, n, cores, acked, "--submit", inflight,
                                     kill_after_lines=after, kill_delay=delay)
        assert code in (-signal.SIGKILL, 0), (code, lines, err)
        acked = acknowledged(lines, acked)
    out = state.parent / f"{state.name}-result.arrow"
    code, lines, err = run_child(CHILD, state, n, cores, acked, "--submit", inflight, "--finish", str(out))
    assert code == 0, (code, lines, err)
    got = pa.ipc.open_file(str(out)).read_all()
    assert sorted_rows(got) == sorted_rows(uninterrupted(n)["all"])


@pytest.mark.parametrize("cores,state", [(1, "memory"), (2, "memory"), (1, "mmap"), (2, "mmap")])
def test_dedup_recovers_its_store_from_checkpoint_plus_log(tmp_path, cores, state):
    """A dedup query's keyed state (its StateStore) is checkpointed: after a restart from a
    checkpoint plus the log, the rows kept before the checkpoint plus those kept after the
    restart are exactly the uninterrupted run's, so rows duplicating a row kept before the
    checkpoint are still dropped after it."""
    n = 10
    want = uninterrupted(n, make=dedup_pipeline)
    eng, src, out = dedup_pipeline(str(tmp_path), cores, checkpoint_every=None, state=state)
    for k in range(4):
        src.push(batch(k), seq=k)
    scratch = list((tmp_path / "scratch").glob("scratch-*.state"))
    # one file per core for each of the two queries that run the dedup step
    assert len(scratch) == (2 * cores if state == "mmap" else 0), scratch
    before = out["kept"].poll()
    cp = eng.checkpoint()
    for k in range(4, 7):
        src.push(batch(k), seq=k)
    eng.close()  # no flush: dedup state is in the checkpoint, batches 4-6 only in the log

    eng, src, out = dedup_pipeline(str(tmp_path), cores, checkpoint_every=None, state=state)
    r = eng.recover()
    assert r["checkpoint"] == cp and r["replayed_records"] == 3, r
    for k in range(7, n):
        src.push(batch(k), seq=k)
    eng.flush()
    after = out["kept"].poll()
    assert sorted_rows(pa.concat_tables([before, after])) == sorted_rows(want["kept"])
    assert sorted_rows(out["all"].poll()) == sorted_rows(want["all"])
    m = eng.metrics()["queries"]["kept"]
    assert m["duplicates_dropped"] > 0 and m["state_rows"] == 0
    eng.close()
    # The test can tell a restored store from a lost one: a dedup starting empty at batch 4
    # keeps rows (duplicates of rows kept in batch 3) that the recovered run dropped.
    fresh, _, _ = dedup([batch(k).to_pylist() for k in range(4, n)], time="ts", on=["key"],
                        within=300, delay=200)
    fresh_rows = {tuple(r.values()) for r in fresh}
    assert fresh_rows - set(sorted_rows(after)), "the restored state made no difference"


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(kills=st.lists(st.tuples(st.integers(0, 14), st.floats(0.0, 0.05)), min_size=1, max_size=2),
       cores=st.sampled_from([1, 2]))
def test_dedup_after_sigkill_then_completion_equals_uninterrupted(tmp_path_factory, kills, cores):
    """kill -9 at random moments of a dedup → per-key window pipeline, then completion: what
    was kept per key equals the uninterrupted run's (a duplicate of a row kept before a crash
    that were kept after it would raise its key's count)."""
    n = 16
    state = tmp_path_factory.mktemp("dedup-state")
    acked = 0
    for after, delay in kills:
        code, lines, err = run_child(CHILD, state, n, cores, acked, "--pipeline", "dedup",
                                     kill_after_lines=after, kill_delay=delay)
        assert code in (-signal.SIGKILL, 0), (code, lines, err)
        acked = acknowledged(lines, acked)
    out = state.parent / f"{state.name}-result.arrow"
    code, lines, err = run_child(CHILD, state, n, cores, acked, "--pipeline", "dedup", "--finish", str(out))
    assert code == 0, (code, lines, err)
    got = pa.ipc.open_file(str(out)).read_all()
    assert sorted_rows(got) == sorted_rows(uninterrupted(n, make=dedup_pipeline)["all"])


def test_state_dir_in_use_by_another_engine(tmp_path):
    eng, _, _ = pipeline(str(tmp_path), 1)
    with pytest.raises(errors.DurabilityError, match="(?i)lock|in use|another"):
        pipeline(str(tmp_path), 1)
    eng.close()
    del eng
    import gc
    gc.collect()
    eng2, src, _ = pipeline(str(tmp_path), 1)  # released on close
    eng2.close()


def test_pipeline_changed_is_refused_clearly(tmp_path):
    eng, src, out = pipeline(str(tmp_path), 1)
    src.push(batch(0), seq=0)
    eng.checkpoint()
    eng.close()
    eng = lm.Engine(state_dir=str(tmp_path))
    other = eng.source("other_name", time="ts", watermark=lm.bounded_delay("200ms"))
    other.window(lm.tumbling("1s")).agg(n=lm.count()).collect()
    with pytest.raises(errors.DurabilityError, match="different pipeline"):
        eng.recover()
    eng.close()


def test_damaged_checkpoint_is_an_error_not_silence(tmp_path):
    eng, src, out = pipeline(str(tmp_path), 1)
    src.push(batch(0), seq=0)
    eng.checkpoint()
    eng.close()
    files = [p for p in pathlib.Path(tmp_path).rglob("*") if p.is_file() and "ckpt" in p.name]
    assert files, list(pathlib.Path(tmp_path).rglob("*"))
    for f in files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    eng, src, out = pipeline(str(tmp_path), 1)
    with pytest.raises(errors.DurabilityError):
        eng.recover()
    eng.close()


def test_definitions_after_data_and_bad_settings(tmp_path):
    eng, src, out = pipeline(str(tmp_path), 1)
    src.push(batch(0), seq=0)
    with pytest.raises(errors.QueryError, match="define every source"):
        eng.source("late_source", time="ts")
    eng.close()
    with pytest.raises(errors.QueryError, match="backpressure"):
        lm.Engine(cores=2, state_dir=str(tmp_path / "x"), backpressure="drop")
    with pytest.raises(errors.LaminarError):
        lm.Engine(state_dir=str(tmp_path / "y"), checkpoint_every="0s")
    with pytest.raises(errors.QueryError, match="seq"):
        e = lm.Engine()
        s = e.source("s", time="ts")
        s.push(batch(0), seq=-1)
    with pytest.raises(errors.QueryError, match="state_dir"):
        lm.Engine().checkpoint()


def test_seq_without_state_dir_dedups_too():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    assert s.push(batch(0), seq=3) is True
    assert s.push(batch(1), seq=3) is False
    assert s.push(batch(1), seq=2) is False
    assert s.push(batch(1), seq=4) is True
    assert s.position() == {"rows": 4_000, "batches": 2, "last_seq": 4}


def session_and_join_pipeline(state_dir, every=None):
    eng = lm.Engine(state_dir=state_dir, checkpoint_every=every)
    a = eng.source("a", time="ts", watermark=lm.bounded_delay("100ms"))
    b = eng.source("b", time="ts", watermark=lm.bounded_delay("100ms"))
    out = {
        "sessions": a.window(lm.session("300ms")).group_by("key")
                     .agg(n=lm.count(), total=lm.sum("value")).collect("sessions"),
        "joined": a.join(b, on="key", within=("0s", "1s")).collect("joined"),
    }
    return eng, a, b, out


def ab_batch(k: int, side: str) -> pa.Table:
    t = batch(k)
    if side == "b":
        t = t.set_column(0, "ts", pa.compute.add(t["ts"], 300))
    return t.slice(0, 400)


@pytest.mark.parametrize("checkpoint_mid", [False, True])
def test_sessions_and_joins_recover(tmp_path, checkpoint_mid):
    n = 8

    def run_all(state_dir, stop_at=None, start=0, eng_parts=None):
        eng, a, b, out = eng_parts or session_and_join_pipeline(state_dir)
        for k in range(start, n if stop_at is None else stop_at):
            a.push(ab_batch(k, "a"), seq=k)
            b.push(ab_batch(k, "b"), seq=k)
            if checkpoint_mid and k == 2 and state_dir:
                eng.checkpoint()  # session windows and interval joins are checkpointable
        return eng, out

    eng, out = run_all(None)
    eng.flush()
    want = {k: sorted_rows(q.to_arrow()) for k, q in out.items()}
    eng.close()

    eng, out = run_all(str(tmp_path), stop_at=5)
    first = {k: sorted_rows(q.to_arrow()) for k, q in out.items()}
    eng.close()
    parts = session_and_join_pipeline(str(tmp_path))
    report = parts[0].recover()
    assert (report["checkpoint"] is not None) == checkpoint_mid, report
    eng, out = run_all(str(tmp_path), start=5, eng_parts=parts)
    eng.flush()
    got = {k: sorted_rows(q.to_arrow()) for k, q in out.items()}
    eng.close()
    # What the first run emitted plus what the recovered run emitted (the replayed log tail
    # re-emits results after the checkpoint) is exactly the uninterrupted run's results.
    for k in want:
        assert set(first[k]) | set(got[k]) == set(want[k]), k
        assert set(got[k]) <= set(want[k]), k
    assert got["sessions"] and got["joined"]


@pytest.mark.parametrize("cores", [1, 2])
def test_a_join_still_waiting_for_one_side_is_checkpointed_with_its_backlog(tmp_path, cores):
    """Source ``a`` pushes for a while before ``b`` sends its first batch: the join waits for
    ``b``'s schema and holds ``a``'s rows meanwhile. Checkpoints are taken all the same (the
    held rows are saved with them: none skipped, so the log can be released), and after a
    restart from such a checkpoint, with no log to replay, the join's results equal the
    uninterrupted run's."""
    n = 6

    def parts(state_dir):
        eng = lm.Engine(cores=cores, state_dir=state_dir, checkpoint_every="1ms")
        a = eng.source("a", time="ts", watermark=lm.bounded_delay("100ms"))
        b = eng.source("b", time="ts", watermark=lm.bounded_delay("100ms"))
        out = a.join(b, on="key", within=("0s", "1s")).collect("joined")
        return eng, a, b, out

    def run(eng, a, b, out, a_from, b_upto):
        for k in range(a_from, n):
            a.push(ab_batch(k, "a"), seq=k)
        for k in range(b_upto):
            b.push(ab_batch(k, "b"), seq=k)
        eng.flush()
        got = sorted_rows(out.to_arrow())
        eng.close()
        return got

    want = run(*parts(None), 0, n)
    assert want

    eng, a, b, out = parts(str(tmp_path))
    for k in range(n):
        a.push(ab_batch(k, "a"), seq=k)
        time.sleep(0.002)  # a periodic checkpoint falls due at every push
    cp = eng.checkpoint()
    m = eng.metrics()["durability"]
    assert m["checkpoints_skipped"] == 0 and m["checkpoints"] >= 2, m
    assert out.poll().num_rows == 0  # nothing joined yet: b has sent nothing
    eng.close()

    eng, a, b, out = parts(str(tmp_path))
    report = eng.recover()
    # Restored from a checkpoint alone: a's rows held for the join came from it.
    assert report["checkpoint"] >= cp and report["replayed_records"] == 0, report
    assert a.position()["last_seq"] == n - 1
    assert run(eng, a, b, out, n, n) == want


def test_lookup_tables_are_checkpointed_and_recover(tmp_path):
    def build(state_dir):
        eng = lm.Engine(state_dir=state_dir, checkpoint_every="10ms")
        src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
        names = eng.table("names", {"key": list(range(50)), "name": [f"k{i}" for i in range(50)]}, on="key")
        out = src.lookup(names, on="key").collect("enriched")
        return eng, src, names, out

    def update(names, k):
        names.update({"key": [k % 50, (k + 7) % 50], "name": [f"v{k}", f"w{k}"]})

    eng, src, names, out = build(None)
    for k in range(8):
        src.push(batch(k).slice(0, 300))
        update(names, k)
    want = sorted_rows(out.to_arrow())
    eng.close()

    eng, src, names, out = build(str(tmp_path))
    for k in range(3):
        src.push(batch(k).slice(0, 300), seq=k)
        update(names, k)
    cp = eng.checkpoint()
    src.push(batch(3).slice(0, 300), seq=3)
    update(names, 3)
    time.sleep(0.02)
    src.push(batch(4).slice(0, 300), seq=4)  # a periodic checkpoint is due
    update(names, 4)
    m = eng.metrics()["durability"]
    assert m["checkpoints_skipped"] == 0 and m["checkpoints"] >= 2, m
    first = sorted_rows(out.to_arrow())
    eng.close()

    eng, src, names, out = build(str(tmp_path))
    r = eng.recover()
    assert r["checkpoint"] is not None and r["checkpoint"] > cp, r
    for k in range(5, 8):
        src.push(batch(k).slice(0, 300), seq=k)
        update(names, k)
    got = sorted_rows(out.to_arrow())
    eng.close()
    assert sorted(first + got, key=repr) == want


def damaged_tail_run(tmp_path, pushes: int, rows: int) -> pathlib.Path:
    """Pushes ``pushes`` slices of ``rows`` rows with seq, closes, and returns the log's last
    segment file, for the tests that damage it."""
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    for k in range(pushes):
        src.push(batch(k).slice(0, rows), seq=k)
    eng.close()
    return sorted(pathlib.Path(tmp_path, "wal").glob("*.wal"))[-1]


def test_damaged_log_tail_is_cut_and_reported_not_silent(tmp_path):
    seg = damaged_tail_run(tmp_path, 3, 100)
    data = bytearray(seg.read_bytes())
    last = max(i for i, b in enumerate(data) if b)  # inside the last record's payload
    data[last] ^= 0xFF
    seg.write_bytes(bytes(data))
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    r = eng.recover()
    assert r["log_cut"] and "bad checksum" in r["log_cut"], r
    assert r["replayed_records"] == 2
    assert eng.metrics()["durability"]["log_cut"] == r["log_cut"]
    assert src.position()["last_seq"] == 1
    assert src.push(batch(2).slice(0, 100), seq=2) is True  # the producer pushes it again
    eng.close()


def test_full_disk_is_an_error_and_every_acknowledged_push_survives(tmp_path):
    """ENOSPC, simulated by a disk budget on the log's writes: the push that hits it raises
    DurabilityError, the engine refuses everything after it (nothing more is acknowledged),
    and a new engine on the directory recovers every push acknowledged before."""
    big = pa.concat_tables([batch(k) for k in range(10)])

    def build(**kw):
        eng = lm.Engine(state_dir=str(tmp_path), checkpoint_every=None, **kw)
        src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
        out = src.window(lm.tumbling("1d")).agg(n=lm.count()).collect("n")
        return eng, src, out

    eng, src, _ = build(fsync=False, _wal_disk_budget=80 << 20)
    acked = 0
    with pytest.raises(errors.DurabilityError, match="disk full"):
        for k in range(1000):
            src.push(big, seq=k)
            acked = k + 1
    assert 0 < acked < 1000
    with pytest.raises(errors.EngineClosedError, match="same state_dir"):
        src.push(big, seq=acked)
    eng.close()

    eng, src, out = build()
    eng.recover()
    last = src.position()["last_seq"]
    assert last is not None and last >= acked - 1  # the failed push may or may not be in
    for k in range(last + 1, acked + 3):
        assert src.push(big, seq=k)
    eng.flush()
    assert out.to_arrow().column("n").to_pylist() == [(acked + 3) * big.num_rows]
    eng.close()


@pytest.mark.parametrize("damage", ["flip", "missing"])
def test_repair_falls_back_from_a_damaged_or_missing_checkpoint(tmp_path, damage):
    n = 6
    want = uninterrupted(n)
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    src.push(batch(0), seq=0)
    first = eng.checkpoint()
    src.push(batch(1), seq=1)
    newest = eng.checkpoint()
    src.push(batch(2), seq=2)
    eng.close()
    f = pathlib.Path(tmp_path, "checkpoints", f"ckpt-{newest:020}.bin")
    if damage == "missing":
        f.unlink()
    else:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))

    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    with pytest.raises(errors.DurabilityError, match="repair_state_dir"):
        eng.recover()
    with pytest.raises(errors.EngineClosedError, match="stopped after an error"):
        src.push(batch(3), seq=3)
    eng.close()
    r = lm.repair_state_dir(tmp_path)
    assert r["fell_back"] and r["checkpoint"] == first and r["log_cut"] is None, r
    if damage == "flip":
        assert any(p.name.startswith(f.name + ".damaged-") for p in f.parent.iterdir())

    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    rec = eng.recover()
    assert rec["checkpoint"] == first and rec["replayed_records"] == 2, rec
    assert src.position()["last_seq"] == 2
    finish_and_compare(eng, src, out, 3, n, want)


def test_recovery_modes_and_the_log_repair(tmp_path):
    seg = damaged_tail_run(tmp_path, 3, 100)
    data = bytearray(seg.read_bytes())
    data[max(i for i, b in enumerate(data) if b)] ^= 0xFF  # inside the last record
    seg.write_bytes(bytes(data))
    with pytest.raises(errors.QueryError, match="recovery must be"):
        lm.Engine(state_dir=str(tmp_path), recovery="best_effort")
    with pytest.raises(errors.DurabilityError, match="repair_state_dir"):
        lm.Engine(state_dir=str(tmp_path), recovery="absolute_consistency")
    r = lm.repair_state_dir(tmp_path)
    assert r["log_cut"] and r["log_records"] == 2 and not r["fell_back"], r
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    assert eng.recover()["log_cut"] is None  # repaired: nothing more to cut
    assert src.position()["last_seq"] == 1
    eng.close()


def test_truncated_log_segment_is_cut_and_reported(tmp_path):
    seg = damaged_tail_run(tmp_path, 6, 500)
    data = seg.read_bytes()
    end = max(i for i, b in enumerate(data) if b) + 1
    seg.write_bytes(data[: end // 2])  # a segment cut short in the middle of a record
    with pytest.raises(errors.DurabilityError, match="repair_state_dir"):
        lm.Engine(state_dir=str(tmp_path), recovery="absolute_consistency")
    eng, src, out = pipeline(str(tmp_path), 1, checkpoint_every=None)
    r = eng.recover()
    assert r["log_cut"], r
    last = src.position()["last_seq"]
    assert last is not None and 0 <= last < 5 and r["replayed_records"] == last + 1
    for k in range(last + 1, 6):
        assert src.push(batch(k).slice(0, 500), seq=k)  # the producer resumes from position
    eng.close()


def test_pushes_from_several_threads_are_all_durable(tmp_path):
    """Each push waits for its sync outside the engine lock, so pushes from several threads
    share syncs; every push that returned is in the log, and recovery finds them all."""
    import threading

    def build():
        eng = lm.Engine(state_dir=str(tmp_path), checkpoint_every=None)
        src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
        out = src.window(lm.tumbling("1d")).agg(n=lm.count()).collect("n")
        return eng, src, out

    eng, src, _ = build()
    rows = 400
    errors_seen: list[BaseException] = []

    def producer(t: int) -> None:
        try:
            for k in range(t * 25, (t + 1) * 25):
                src.push(batch(k).slice(0, rows))
        except BaseException as e:  # pragma: no cover - reported below
            errors_seen.append(e)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors_seen, errors_seen
    m = eng.metrics()["durability"]
    assert m["wal_records"] == 100 and 1 <= m["wal_syncs"] <= 100, m
    eng.close()

    eng, src, out = build()
    assert eng.recover()["replayed_records"] == 100
    eng.flush()
    assert out.to_arrow().column("n").to_pylist() == [100 * rows]
    eng.close()
