"""``Source.submit`` and ``Engine.sync``: a producer that keeps several durable pushes in
flight. The model is the same data pushed one ``push`` at a time: results must be equal, every
receipt must be durable once ``result()`` or ``sync()`` returned, and a log failure must reach
the producer as an error, never as a silently lost push. (Killing such a producer is in
``test_durability.py``.)"""

from __future__ import annotations

import collections
import os
import sys

import pyarrow as pa
import pytest

import laminar as lm
from laminar import errors

sys.path.insert(0, os.path.dirname(__file__))
from durable_child import batch  # noqa: E402


def build(state_dir=None, **kw):
    eng = lm.Engine(state_dir=None if state_dir is None else str(state_dir), checkpoint_every=None, **kw)
    src = eng.source("events", time="ts", watermark=lm.bounded_delay("200ms"))
    per_sec = (src.window(lm.tumbling("1s")).group_by("key")
                  .agg(n=lm.count(), total=lm.sum("value")).collect("per_sec"))
    return eng, src, per_sec


def rows(t: pa.Table) -> list:
    return sorted(t.to_pylist(), key=lambda r: tuple(map(str, r.values())))


def pushed_one_by_one(n: int) -> list:
    eng, src, out = build()
    for k in range(n):
        src.push(batch(k), seq=k)
    eng.flush()
    got = rows(out.to_arrow())
    eng.close()
    return got


def test_without_a_state_dir_a_receipt_is_done_at_once():
    eng, src, out = build()
    r = src.submit(batch(0), seq=0)
    assert r.done() and r.applied and r.result() is True
    assert "done" in repr(r)
    again = src.submit(batch(0), seq=0)  # a retry: ignored, as with push
    assert again.done() and again.applied is False and again.result() is False
    eng.sync()  # nothing to wait for
    eng.close()


@pytest.mark.parametrize("cores", [1, 2])
def test_pipelined_pushes_give_the_same_results_and_are_durable_after_sync(tmp_path, cores):
    n = 24
    eng, src, out = build(tmp_path, cores=cores)
    receipts = collections.deque()
    acknowledged = []
    for k in range(n):
        receipts.append((k, src.submit(batch(k), seq=k)))
        if len(receipts) > 4:
            k0, r = receipts.popleft()
            assert r.result() is True
            assert r.done()
            acknowledged.append(k0)
    eng.sync()
    assert all(r.done() for _, r in receipts)
    assert acknowledged == list(range(n - 4))
    m = eng.metrics()["durability"]
    assert m["wal_records"] == n and 1 <= m["wal_syncs"] <= n, m
    assert m["durable_lsn"] == n, m
    eng.flush()
    assert rows(out.to_arrow()) == pushed_one_by_one(n)
    eng.close()

    # Everything submitted was durable: a new engine replays all of it.
    eng, src, out = build(tmp_path, cores=cores)
    assert eng.recover()["replayed_records"] == n + 1  # the pushes and the flush
    assert src.position()["last_seq"] == n - 1
    eng.close()


def test_receipts_stay_usable_after_close(tmp_path):
    eng, src, _ = build(tmp_path)
    rs = [src.submit(batch(k), seq=k) for k in range(5)]
    eng.close()  # writes and syncs everything appended
    assert [r.result() for r in rs] == [True] * 5
    with pytest.raises(errors.EngineClosedError):
        eng.sync()
    with pytest.raises(errors.EngineClosedError):
        src.submit(batch(5), seq=5)


def test_a_retry_waits_for_what_it_retries(tmp_path):
    """A submit whose ``seq`` was applied before is not applied again; its receipt is done only
    once everything logged before it is durable (the first attempt may still be in flight)."""
    eng, src, out = build(tmp_path)
    first = src.submit(batch(0), seq=0)
    retry = src.submit(batch(0), seq=0)
    assert first.applied and not retry.applied
    assert retry.result() is False and first.done()
    eng.flush()
    assert rows(out.to_arrow()) == pushed_one_by_one(1)
    eng.close()


def test_a_full_disk_reaches_the_pipelined_producer_and_nothing_acknowledged_is_lost(tmp_path):
    """ENOSPC, simulated by a disk budget on the log's writes, while pushes are in flight: a
    receipt's ``result()`` (or a later submit, or ``sync``) raises DurabilityError; every push
    whose receipt returned before survives into a new engine on the directory."""
    big = pa.concat_tables([batch(k) for k in range(10)])
    eng, src, _ = build(tmp_path, fsync=False, _wal_disk_budget=80 << 20)
    receipts = collections.deque()
    acked = 0
    with pytest.raises(errors.DurabilityError, match="disk full"):
        for k in range(1000):
            receipts.append((k, src.submit(big, seq=k)))
            if len(receipts) > 3:
                k0, r = receipts.popleft()
                r.result()
                acked = k0 + 1
        eng.sync()
    assert 0 < acked < 1000
    with pytest.raises((errors.DurabilityError, errors.EngineClosedError)):
        eng.sync()
    with pytest.raises(errors.EngineClosedError, match="same state_dir"):
        src.submit(big, seq=1000)
    eng.close()

    eng, src, _ = build(tmp_path)
    eng.recover()
    last = src.position()["last_seq"]
    assert last is not None and last >= acked - 1
    eng.close()


def test_submit_checks_its_arguments():
    eng, src, _ = build()
    with pytest.raises(errors.QueryError, match="seq must be a non-negative int"):
        src.submit(batch(0), seq=-1)
    with pytest.raises(errors.QueryError, match="seq must be a non-negative int"):
        src.submit(batch(0), seq=True)
    assert src.submit(batch(0), seq=0).result()
    with pytest.raises(errors.SchemaMismatchError, match="column .key. .* is missing"):
        src.submit(pa.table({"ts": [1], "other": ["x"]}))
    eng.close()


def test_a_kept_receipt_does_not_keep_a_dropped_engine_alive(tmp_path):
    """A receipt refers to its engine weakly: an engine dropped without ``close()`` is freed
    (its state_dir lock released) while the caller still holds receipts, which still answer."""
    import gc

    eng, src, out = build(tmp_path)
    receipts = [src.submit(batch(k), seq=k) for k in range(3)]
    del eng, src, out
    gc.collect()
    # The directory is free again: the old engine is gone, its log closed (and synced).
    eng, src, _ = build(tmp_path)
    assert [r.result() for r in receipts] == [True] * 3
    assert all(r.done() for r in receipts)
    eng.recover()
    assert src.position()["last_seq"] == 2
    eng.close()
