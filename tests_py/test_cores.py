"""``Engine(cores=N)``: the thread-per-core runtime (docs/SEMANTICS.md, "Cores").

Results with two cores must equal one core's for every window kind, emit strategy and join
type, with late rows, random batch boundaries and interleavings (property tests: the one-core
engine is itself checked against the reference models elsewhere). Also: queries over query
results, lookups, keyless and stateless queries, several Python threads pushing at once, each
backpressure policy, the per-core counters, errors and thread clean-up."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import laminar as lm
from laminar import errors
from reference import JOIN_TYPES, canonical, rows_of
from scenarios import (
    WINDOW_KINDS, join_scenario, random_split, result_columns, run_join, run_window, scenario_aggs,
    window_scenario,
)

EMITS = {
    "final": lm.final,
    "on_window_close": lm.on_window_close,
    "on_update": lm.on_update,
    "changelog": lm.changelog,
}


def per_push(run, cols):
    return [canonical(p, cols) for p in run.per_push]


@settings(max_examples=40)
@given(st.sampled_from(WINDOW_KINDS).flatmap(lambda k: window_scenario(kinds=(k,))),
       st.sampled_from(sorted(EMITS)), st.randoms(use_true_random=False))
def test_two_cores_equal_one_for_windows(sc, emit, rnd):
    names = scenario_aggs(sc)
    cols = result_columns(sc, names, weight=emit == "changelog")
    batches = random_split(rnd, sc.rows)
    one = run_window(sc, names, emit=EMITS[emit](), batches=batches, cores=1)
    two = run_window(sc, names, emit=EMITS[emit](), batches=batches, cores=2)
    assert per_push(two, cols) == per_push(one, cols), "results after each push differ"
    late_cols = list(sc.schema.names)
    assert canonical(two.late, late_cols) == canonical(one.late, late_cols)
    for k in ("rows_in", "rows_out", "late_dropped", "late_side_output", "watermark"):
        assert two.metrics[k] == one.metrics[k], k


@settings(max_examples=40)
@given(st.sampled_from(JOIN_TYPES).flatmap(lambda how: join_scenario(hows=(how,))),
       st.randoms(use_true_random=False))
def test_two_cores_equal_one_for_joins(sc, rnd):
    cols = sc.result_columns()
    lb, rb = random_split(rnd, sc.left_rows), random_split(rnd, sc.right_rows)
    order = ["left"] * len(lb) + ["right"] * len(rb)
    rnd.shuffle(order)
    one = run_join(sc, left_batches=lb, right_batches=rb, order=order, cores=1)
    two = run_join(sc, left_batches=lb, right_batches=rb, order=list(order), cores=2)
    assert canonical(two.rows, cols) == canonical(one.rows, cols)
    assert sorted(map(repr, two.late)) == sorted(map(repr, one.late))
    for k in ("rows_in", "rows_out", "late_dropped", "late_side_output", "state_rows"):
        assert two.metrics[k] == one.metrics[k], k


SCHEMA = pa.schema([("ts", pa.int64()), ("sym", pa.large_string()), ("venue", pa.int64()), ("px", pa.float64())])


def trades(n: int, seed: int, keys: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ts": np.sort(rng.integers(0, 20_000, n)) - rng.integers(0, 300, n),
        "sym": [f"s{k}" for k in rng.integers(0, keys, n)],
        "venue": rng.integers(0, 3, n),
        "px": rng.random(n).round(3),
    })


def run_queries(cores: int, build, data: pd.DataFrame, *, batch: int = 997, **engine_args) -> dict:
    """Builds queries with ``build(src) -> {name: Query}`` on a fresh engine, pushes ``data``
    in batches, flushes, returns each query's rows sorted, with the engine's metrics."""
    with lm.Engine(cores=cores, **engine_args) as eng:
        src = eng.source("t", time="ts", watermark=lm.bounded_delay("250ms"), schema=SCHEMA)
        outs = {name: q.collect(name) for name, q in build(src, eng).items()}
        for i in range(0, len(data), batch):
            src.push(data.iloc[i:i + batch])
        eng.flush()
        got = {name: canonical(rows_of(o.to_arrow()), o.to_arrow().column_names or []) for name, o in outs.items()}
        got["__metrics"] = eng.metrics()
        return got


def compare(build, data, **kw):
    one, two = run_queries(1, build, data, **kw), run_queries(2, build, data, **kw)
    m1, m2 = one.pop("__metrics"), two.pop("__metrics")
    assert two == one
    assert any(rows for rows in one.values()), "the workload produced results"
    return m1, m2


def test_chained_windows_keyless_windows_and_stateless_steps_split_correctly():
    def build(src, eng):
        fine = (src.window(lm.tumbling("100ms")).group_by("sym", "venue")
                .agg(n=lm.count(), px=lm.max("px")).emit(lm.final()))
        return {
            "rollup": fine.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.sum("n"), px=lm.max("px")),
            "global": src.window(lm.tumbling("1s")).agg(n=lm.count(), px=lm.sum("px")),
            "renamed": src.select(s="sym", ts="ts", px="px").window(lm.sliding("1s", every="250ms"))
                          .group_by("s").agg(n=lm.count()),
            "filtered": src.filter(lm.col("px") > 0.5).select("ts", "sym", "px"),
            "sessions": src.window(lm.session("40ms")).group_by("sym").agg(n=lm.count()),
        }

    _, m2 = compare(build, trades(20_000, 1))
    parts = {q: m2["queries"][q]["partitioning"] for q in m2["queries"]}
    assert parts["rollup"] == ["keys[1]"], parts  # by sym, the keys both windows share
    assert parts["global"][0].startswith("single"), parts
    assert parts["renamed"] == ["keys[1]"], parts
    assert parts["filtered"] == ["even"], parts


def test_joins_and_lookups_split_correctly():
    ref = pd.DataFrame({"sym": [f"s{k}" for k in range(0, 50, 2)], "sector": [k % 5 for k in range(0, 50, 2)]})

    def build(src, eng):
        quotes = eng.source("q", time="ts", watermark=lm.bounded_delay("250ms"), schema=SCHEMA)
        build.quotes = quotes
        return {
            "joined": src.join(quotes, on="sym", within=("-50ms", "50ms"), how="left")
                         .window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count()),
            "looked_up": src.lookup(ref, on="sym", how="inner").window(lm.tumbling("1s"))
                            .group_by("sector").agg(n=lm.count()),
        }

    data = trades(10_000, 2)

    def run(cores):
        with lm.Engine(cores=cores) as eng:
            src = eng.source("t", time="ts", watermark=lm.bounded_delay("250ms"), schema=SCHEMA)
            outs = {n: q.collect(n) for n, q in build(src, eng).items()}
            other = trades(6_000, 3)
            for i in range(10):
                src.push(data.iloc[i * 1000:(i + 1) * 1000])
                build.quotes.push(other.iloc[i * 600:(i + 1) * 600])
            eng.flush()
            return {n: canonical(rows_of(o.to_arrow()), o.to_arrow().column_names) for n, o in outs.items()}

    one, two = run(1), run(2)
    assert two == one and all(one.values())


def test_several_python_threads_push_at_once():
    """Four threads push disjoint keys concurrently; nothing is late (the delay covers the
    disorder), so the final results cannot depend on how the pushes interleave."""
    frames = [trades(8_000, 10 + i, keys=10).assign(sym=lambda d, i=i: d["sym"] + f"-{i}") for i in range(4)]
    everything = pd.concat(frames).sort_values("ts", kind="stable")

    def build(src, eng):
        return {"q": src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count(), px=lm.sum("px"))
                .emit(lm.final())}

    want = run_queries(1, build, everything, batch=4000)
    with lm.Engine(cores=2) as eng:
        src = eng.source("t", time="ts", watermark=lm.bounded_delay("30s"), schema=SCHEMA)
        out = build(src, eng)["q"].collect("q")
        errors_seen = []

        def pusher(df):
            try:
                for i in range(0, len(df), 500):
                    src.push(df.iloc[i:i + 500])
            except Exception as e:  # pragma: no cover - reported below
                errors_seen.append(e)

        threads = [threading.Thread(target=pusher, args=(f,)) for f in frames]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors_seen == []
        eng.flush()
        got = canonical(rows_of(out.to_arrow()), out.to_arrow().column_names)
    assert got == want["q"]
    assert sum(r[-2] for r in got) == len(everything)  # column n: every row counted once


def per_batch_keys(n_batches: int, rows: int = 200) -> list[pd.DataFrame]:
    """Batch i holds only key "b{i}", so which batches were applied shows in the result."""
    return [pd.DataFrame({"ts": np.arange(rows) + 10 * i, "sym": f"b{i}", "venue": 0, "px": 1.0})
            for i in range(n_batches)]


def counted(out) -> dict:
    t = out.to_pandas()
    return t.groupby("sym")["n"].sum().to_dict() if len(t) else {}


def stalled_engine(policy: str, credits: int = 1):
    eng = lm.Engine(cores=2, backpressure=policy, credits=credits, floating_credits=0, low_watermark=0)
    src = eng.source("t", time="ts", watermark=lm.bounded_delay("10s"), schema=SCHEMA)
    out = src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count()).emit(lm.final()).collect("q")
    return eng, src, out


def test_backpressure_error_refuses_whole_batches():
    eng, src, out = stalled_engine("error")
    batches = per_batch_keys(12)
    for c in range(2):
        eng._native._stall_core(c, 300)
    refused = []
    for i, b in enumerate(batches):
        try:
            src.push(b)
        except errors.BackpressureError as e:
            assert "retry" in str(e)
            refused.append(i)
    assert refused, "the stalled cores never pushed back"
    eng.flush()
    got = counted(out)
    assert set(got) == {f"b{i}" for i in range(12) if i not in refused}
    assert all(v == 200 for v in got.values()), "an applied batch lost rows"
    m = eng.metrics()
    assert m["backpressure"]["refused"] >= len(refused) and m["backpressure"]["policy"] == "error"
    assert m["sources"]["t"]["rows"] == 200 * (12 - len(refused))
    eng.close()


def test_backpressure_drop_discards_and_counts():
    eng, src, out = stalled_engine("drop")
    for c in range(2):
        eng._native._stall_core(c, 300)
    for b in per_batch_keys(12):
        src.push(b)
    eng.flush()
    got = counted(out)
    m = eng.metrics()
    dropped = m["sources"]["t"]["dropped_rows"]
    assert dropped > 0 and m["backpressure"]["dropped"] > 0
    assert sum(got.values()) + dropped == 12 * 200
    assert all(v == 200 for v in got.values())
    eng.close()


def test_backpressure_block_waits_and_loses_nothing():
    eng, src, out = stalled_engine("block")
    for c in range(2):
        eng._native._stall_core(c, 200)
    started = time.perf_counter()
    for b in per_batch_keys(12):
        src.push(b)
    waited = time.perf_counter() - started
    eng.flush()
    got = counted(out)
    m = eng.metrics()
    assert got == {f"b{i}": 200 for i in range(12)}
    assert m["backpressure"]["blocked"] >= 1 and m["sources"]["t"]["dropped_rows"] == 0
    assert waited > 0.05, "pushes did not wait for the stalled cores"
    assert m["backpressure"]["acquired"] == m["backpressure"]["released"]
    eng.close()


def test_every_core_does_a_comparable_share():
    data = trades(100_000, 5, keys=1000)

    def build(src, eng):
        return {"q": src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count())}

    _, m2 = compare(build, data, batch=10_000)
    cores = m2["cores"]
    assert len(cores) == 2
    rows = [c["rows"] for c in cores]
    assert sum(rows) == len(data)
    assert min(rows) > 0.35 * len(data), rows  # 1000 keys hash evenly enough
    assert all(c["batches"] > 0 and c["busy_s"] > 0 for c in cores)
    assert all(c["credits_in_use"] == 0 and c["queue_depth"] == 0 for c in cores)


def test_bad_settings_are_clear_errors():
    with pytest.raises(errors.QueryError, match="cores"):
        lm.Engine(cores=0)
    with pytest.raises(errors.QueryError, match="backpressure"):
        lm.Engine(cores=2, backpressure="wait")
    with pytest.raises(errors.QueryError, match="credits"):
        lm.Engine(cores=2, credits=0)


def test_an_operator_error_on_a_core_is_raised_by_the_next_poll():
    with lm.Engine(cores=2) as eng:
        s = eng.source("s", time="ts")
        out = s.window(lm.tumbling("1s")).group_by("k").agg(total=lm.sum("v")).collect()
        s.push(pa.table({"ts": [0, 1, 2], "k": [1, 1, 2], "v": [2**62, 2**62, 5]}))  # returns: queued
        with pytest.raises(errors.AggregateOverflowError, match="int64"):
            out.poll()
        s.push(pa.table({"ts": [3], "k": [2], "v": [1]}))  # the engine goes on
        eng.flush()
        # the overflowed window reports again instead of emitting a wrapped sum
        with pytest.raises(errors.AggregateOverflowError, match="earlier in this window"):
            out.poll()


def core_thread_cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process's laminar core threads."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("laminar-core-"):
                    continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def test_idle_cores_park_instead_of_spinning():
    with lm.Engine(cores=2) as eng:
        src = eng.source("t", time="ts", schema=SCHEMA)
        out = src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count()).collect()
        src.push(trades(1000, 1))
        out.poll()
        time.sleep(0.1)
        before = core_thread_cpu_seconds()
        time.sleep(1.0)
        used = core_thread_cpu_seconds() - before
        assert used < 0.1, f"two idle cores used {used:.2f} s of CPU in 1 s: they spin"
        src.push(trades(1000, 2))  # and they wake up again
        assert out.poll() is not None


def test_pinning_is_reported_and_optional_and_one_cpu_is_enough():
    with lm.Engine(cores=2, pin=False) as eng:
        src = eng.source("t", time="ts", schema=SCHEMA)
        src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count()).collect()
        src.push(trades(100, 1))
        assert [c["pinned"] for c in eng.metrics()["cores"]] == [False, False]
    # Three cores confined to one CPU (more cores than CPUs): same results, no hang.
    script = (
        "import os\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "import laminar as lm, pyarrow as pa\n"
        "eng = lm.Engine(cores=3)\n"
        "s = eng.source('s', time='ts')\n"
        "out = s.window(lm.tumbling('10ms')).group_by('k').agg(n=lm.count()).collect()\n"
        "s.push(pa.table({'ts': list(range(1000)), 'k': [i % 7 for i in range(1000)]}))\n"
        "eng.flush()\n"
        "m = eng.metrics()\n"
        "print(sum(out.to_pandas()['n']), all(c['pinned'] for c in m['cores']))\n"
    )
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "True"]


def threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


def test_closing_or_dropping_engines_joins_their_threads():
    before = threads_now()
    for _ in range(20):
        eng = lm.Engine(cores=2)
        src = eng.source("t", time="ts", schema=SCHEMA)
        src.window(lm.tumbling("1s")).group_by("sym").agg(n=lm.count()).collect()
        src.push(trades(100, 1))
        eng.close()
    for _ in range(5):
        eng = lm.Engine(cores=3)
        del eng
    assert threads_now() == before
