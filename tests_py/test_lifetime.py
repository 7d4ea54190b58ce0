"""An engine's lifetime: it is freed (its core threads stopped) as soon as the program drops
it and every handle on it, without waiting for Python's cycle collector, and handles the
program keeps still work."""

import gc
import os
import time
import weakref

import pyarrow as pa
import pytest

import laminar as lm
from laminar.errors import EngineClosedError, NameConflictError


def core_threads() -> int:
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().startswith("laminar-core")
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return n


def eventually(check, timeout: float = 5.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` seconds (a thread names itself once it
    runs, so its name shows up a moment after the engine that spawned it returns)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def no_cycle_collector():
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build(cores: int):
    eng = lm.Engine(cores=cores)
    src = eng.source("t", time="ts", watermark=lm.bounded_delay("0ms"))
    tab = eng.table("ref", pa.table({"k": [1, 2], "v": [10, 20]}), on="k")
    out = src.lookup(tab, on="k").window(lm.tumbling("1s")).group_by("k").agg(n=lm.count()).collect()
    got = []
    sink = src.sink(lambda epoch, table: got.append(table))
    src.push(pa.table({"ts": [1, 2, 1500], "k": [1, 1, 2]}))
    return eng, src, tab, out, sink


@pytest.mark.parametrize("cores", [1, 2])
def test_a_dropped_engine_is_freed_at_once(no_cycle_collector, cores):
    before = core_threads()
    eng, src, tab, out, sink = build(cores)
    assert eventually(lambda: core_threads() == before + (cores if cores > 1 else 0))
    alive = weakref.ref(eng)
    del eng, src, tab, out, sink
    assert alive() is None, "a reference cycle keeps the dropped engine alive"
    assert eventually(lambda: core_threads() == before)


def test_kept_handles_outlive_dropped_ones(no_cycle_collector):
    eng, src, tab, out, sink = build(1)
    del src, sink
    # The engine still knows its source; a new handle pushes as the old one did.
    again = eng.sources["t"]
    again.push(pa.table({"ts": [3000], "k": [2]}))
    eng.flush()
    rows = out.to_arrow().sort_by([("window_start", "ascending"), ("k", "ascending")])
    assert rows.column("n").to_pylist() == [2, 1, 1]
    # A result handle keeps its engine: its rows stay readable after the engine is dropped.
    alive = weakref.ref(eng)
    del eng, again
    assert alive() is not None
    assert out.to_arrow().num_rows == 3
    # A table handle does not keep its engine.
    del out
    assert alive() is None
    with pytest.raises(EngineClosedError, match="no longer exists"):
        tab.update(pa.table({"k": [1], "v": [1]}))


def test_names_stay_taken_after_their_handles_are_dropped():
    eng = lm.Engine()
    src = eng.source("t", time="ts")
    src.filter(lm.col("ts") > 0).collect("q")
    src.sink(lambda epoch, table: None, name="s")
    for taken in ("q", "s"):
        with pytest.raises(NameConflictError, match=f"'{taken}'"):
            src.collect(taken)
    assert src.collect().name not in {"q", "s"}
    assert sorted(eng.sources) == ["t"]
