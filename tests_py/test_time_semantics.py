"""Watermark rules end to end: late data (drop / side output / allowed lateness), idle
sources, the cap on far-future timestamps, punctuated watermarks, and the GIL release."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

import laminar as lm


def test_late_rows_dropped_and_counted():
    eng = lm.Engine()
    s = eng.source("s", time="ts", watermark=lm.bounded_delay("0ms"))
    out = s.window(lm.tumbling("1s")).agg(n=lm.count()).collect("q")
    s.push({"ts": [100, 2500]})        # watermark 2500: windows [0,1s) and [1s,2s) closed
    s.push({"ts": [900, 1500, 2600]})  # 900 and 1500 are late; 2600 is on time
    eng.flush()
    assert sorted(r["n"] for r in out.to_arrow().to_pylist()) == [1, 2]
    assert eng.metrics()["queries"]["q"]["late_dropped"] == 2


def test_late_rows_to_side_output():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    q = s.window(lm.tumbling("1s"), late="side").agg(n=lm.count())
    out = q.collect()
    s.push({"ts": [100, 2500], "v": [1, 2]})
    s.push({"ts": [900, 2600], "v": [3, 4]})
    assert q.late().to_arrow().to_pylist() == [{"ts": 900, "v": 3}]
    assert out.late().poll().num_rows == 0  # already taken by the same handle
    eng.flush()
    assert eng.metrics()["queries"]["q1"]["late_side_output"] == 1


def test_allowed_lateness_updates_window_before_it_closes():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    out = (s.window(lm.tumbling("1s"), allowed_lateness="500ms").agg(n=lm.count())
           .emit(lm.final()).collect("q"))
    s.push({"ts": [100, 1200]})   # wm 1200 < 1000 + 500: window [0,1s) still open
    assert out.poll().num_rows == 0
    s.push({"ts": [300]})         # behind the watermark, but inside the allowed lateness
    s.push({"ts": [1500]})        # wm 1500: window [0,1s) closes now
    assert out.poll().to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 2}]
    s.push({"ts": [400]})         # too late now
    assert eng.metrics()["queries"]["q"]["late_dropped"] == 1


def test_on_window_close_fires_at_end_then_refires_for_allowed_late_rows():
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    out = s.window(lm.tumbling("1s"), allowed_lateness="500ms").agg(n=lm.count()).collect("q")
    s.push({"ts": [100, 1200]})   # wm 1200 >= 1000: window [0,1s) fires
    assert out.poll().to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 1}]
    s.push({"ts": [300]})         # allowed late row: the updated row again, after this push
    assert out.poll().to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 2}]
    s.push({"ts": [1500]})        # wm 1500: [0,1s) closes without a new row
    assert out.poll().to_pylist() == []
    s.push({"ts": [400]})         # too late now
    assert eng.metrics()["queries"]["q"]["late_dropped"] == 1


def test_idle_source_stops_holding_back_the_watermark():
    eng = lm.Engine()
    a = eng.source("a", time="ts")
    b = eng.source("b", time="ts", idle_timeout="150ms")
    out = a.union(b).window(lm.tumbling("1s")).agg(n=lm.count()).collect("q")
    b.push({"ts": [0]})
    a.push({"ts": [100, 5000]})
    # b's watermark (0) holds the union back: nothing closes although a is at 5000
    assert out.poll().num_rows == 0
    time.sleep(0.3)
    # b is idle now: the next poll (or push) notices, and the windows before 5000 close
    rows = out.poll().to_pylist()
    assert [r["n"] for r in rows] == [2]
    assert eng.metrics()["sources"]["b"]["idle"] is True
    # data on b makes it active again
    b.push({"ts": [5500]})
    assert eng.metrics()["sources"]["b"]["idle"] is False


def test_without_idle_timeout_a_silent_source_holds_the_watermark():
    eng = lm.Engine()
    a = eng.source("a", time="ts")
    b = eng.source("b", time="ts")
    out = a.union(b).window(lm.tumbling("1s")).agg(n=lm.count()).collect()
    a.push({"ts": [100, 5000]})
    time.sleep(0.05)
    assert out.poll().num_rows == 0  # deterministic: the wall clock moves nothing
    eng.flush()
    assert out.poll().num_rows == 2


def test_far_future_timestamp_does_not_freeze_other_windows():
    now_ms = int(time.time() * 1000)
    eng = lm.Engine()
    s = eng.source("s", time="ts", watermark=lm.bounded_delay("0ms"), max_future="1h")
    out = s.window(lm.tumbling("1s")).agg(n=lm.count()).collect("q")
    s.push({"ts": [now_ms - 10_000]})
    s.push({"ts": [now_ms + 365 * 86_400_000]})   # a year ahead: a broken clock upstream
    m = eng.metrics()["sources"]["s"]
    assert m["future_rows"] == 1
    assert m["watermark"] == now_ms - 10_000  # the far-future row did not move it
    # normal data keeps flowing and closing windows
    s.push({"ts": [now_ms - 5_000]})
    s.push({"ts": [now_ms]})
    closed = out.poll().to_pylist()
    assert closed and all(r["window_start"] < now_ms for r in closed)
    eng.flush()
    assert sum(r["n"] for r in out.to_arrow().to_pylist()) == 4


def test_punctuated_watermark_from_a_column():
    eng = lm.Engine()
    s = eng.source("s", time="ts", watermark=lm.punctuated("wm"))
    out = s.window(lm.tumbling("1s")).agg(n=lm.count()).collect()
    s.push(pa.table({"ts": [100, 5000, 200], "wm": pa.array([None, None, None], pa.int64())}))
    assert out.poll().num_rows == 0          # no punctuation yet: no watermark
    s.push(pa.table({"ts": [300], "wm": pa.array([1000], pa.int64())}))
    assert out.poll().to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 3}]


def test_push_releases_the_gil():
    """Another Python thread makes progress while a large push runs in Rust."""
    n = 4_000_000
    big = pa.table({"ts": pa.array(range(n), pa.int64()), "k": pa.array([i % 1000 for i in range(n)], pa.int64()),
                    "v": pa.array([1.0] * n)})
    eng = lm.Engine()
    s = eng.source("s", time="ts")
    out = s.window(lm.tumbling("10ms")).group_by("k").agg(n=lm.count(), t=lm.sum("v")).collect()
    ticks = 0
    stop = threading.Event()
    during = []

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = ticks
        start = time.perf_counter()
        s.push(big)
        elapsed = time.perf_counter() - start
        during.append(ticks - before)
    finally:
        stop.set()
        t.join()
    eng.flush()
    assert sum(out.to_arrow()["n"].to_pylist()) == n
    # With the GIL held for the whole push the spinner could not run at all.
    assert elapsed > 0.02, "push too quick to observe; enlarge the input"
    assert during[0] > 10_000, f"only {during[0]} spinner iterations during a {elapsed:.3f}s push"
