"""The wire-protocol server (``Engine.serve``, ``laminar serve``) and the Python client
(``lm.connect``) over loopback: round trips equal the in-process engine, several producer
processes and a subscriber process see every row once, retries after a reconnect are applied
once, bad tokens and timeouts raise clear errors, and the CLI serves a pipeline file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar as lm
from laminar.errors import AuthenticationError, DisconnectedError, RemoteError, RemoteTimeoutError

TOKEN = "s3cret-token"


def pipeline(eng: lm.Engine):
    s = eng.source("trades", time="ts", watermark=lm.bounded_delay("1h"))
    per_key = s.window(lm.tumbling("1s")).group_by("key").agg(n=lm.count(), total=lm.sum("value")).collect(name="per_key")
    everything = s.select("id", "ts", "key", "value").collect(name="all")
    return s, per_key, everything


def data(start: int, n: int) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table({
        "id": ids,
        "ts": pc.multiply(ids, pa.scalar(7, pa.int64())),
        "key": pa.array([f"k{i % 5}" for i in range(start, start + n)]),
        "value": pc.cast(ids, pa.float64()),
    })


def in_process(tables: list[pa.Table]) -> pa.Table:
    eng = lm.Engine()
    s, per_key, _ = pipeline(eng)
    for t in tables:
        s.push(t)
    eng.flush()
    return per_key.to_arrow()


def canon(t: pa.Table) -> pa.Table:
    return t.select(["window_start", "window_end", "key", "n", "total"]).sort_by(
        [("window_start", "ascending"), ("key", "ascending")])


def collect_until(sub, rows: int, timeout: float = 30.0) -> pa.Table:
    got = []
    have = 0
    deadline = time.monotonic() + timeout
    while have < rows and time.monotonic() < deadline:
        t = sub.next(timeout=0.5)
        if t is not None:
            got.append(t)
            have += t.num_rows
    assert have >= rows, f"only {have} of {rows} rows arrived"
    return pa.concat_tables(got)


@pytest.fixture
def served():
    eng = lm.Engine()
    pipeline(eng)
    srv = eng.serve(token=TOKEN)
    yield eng, srv
    srv.close()
    eng.close()


def test_push_subscribe_round_trip_equals_in_process(served):
    eng, srv = served
    tables = [data(i * 1000, 1000) for i in range(5)]
    expected = in_process(tables)
    with lm.connect(srv.address, token=TOKEN) as c:
        sub = c.subscribe("per_key")
        for t in tables:
            assert c.push("trades", t) is True
        assert c.ping() < 1.0
        eng.flush()  # end of input, on the serving side: every window closes
        got = collect_until(sub, expected.num_rows)
        sub.close()
    assert canon(got).equals(canon(expected))
    m = srv.metrics()
    assert m["pushes"] == 5 and m["rows_in"] == 5000
    assert m["result_rows_sent"] == expected.num_rows


def test_callback_subscription(served):
    eng, srv = served
    seen = []
    done = threading.Event()
    with lm.connect(srv.address, token=TOKEN) as c:
        sub = c.subscribe("all", callback=lambda t: (seen.append(t), done.set() if sum(x.num_rows for x in seen) >= 300 else None))
        c.push("trades", data(0, 300))
        assert done.wait(10)
        sub.close()
        assert sub.error is None
    ids = pa.concat_tables(seen).column("id").to_pylist()
    assert sorted(ids) == list(range(300))


PRODUCER = textwrap.dedent("""
    import sys, pyarrow as pa, pyarrow.compute as pc, laminar as lm
    addr, token, start, n, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    c = lm.connect(addr, token=token)
    for i, off in enumerate(range(start, start + n, per)):
        ids = pa.array(range(off, min(off + per, start + n)), pa.int64())
        t = pa.table({"id": ids, "ts": pc.multiply(ids, pa.scalar(7, pa.int64())),
                      "key": pa.array([f"k{j % 5}" for j in ids.to_pylist()]), "value": pc.cast(ids, pa.float64())})
        assert c.push("trades", t, seq=i + 1) is True
        assert c.push("trades", t, seq=i + 1) is False  # a retry is acknowledged, not applied
    c.close()
""")

SUBSCRIBER = textwrap.dedent("""
    import sys, time, pyarrow as pa, laminar as lm
    addr, token, total, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    c = lm.connect(addr, token=token)
    sub = c.subscribe("all")
    print("ready", flush=True)
    got, have, deadline = [], 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        t = sub.next(timeout=0.3)
        if t is None:
            if have >= total:
                break          # quiet after all rows: any duplicate would have arrived by now
            continue
        got.append(t.select(["id"]))
        have += t.num_rows
    ids = pa.concat_tables(got) if got else pa.table({"id": pa.array([], pa.int64())})
    with pa.OSFile(out, "wb") as f, pa.ipc.new_file(f, ids.schema) as w:
        w.write_table(ids)
    sub.close(); c.close()
""")


def test_several_producer_processes_and_a_subscriber_process(served, tmp_path):
    eng, srv = served
    producers, per_producer, batch = 3, 6000, 1000
    total = producers * per_producer
    out = tmp_path / "ids.arrow"
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, srv.address, TOKEN, str(total), str(out)],
                           stdout=subprocess.PIPE, text=True)
    assert sub.stdout.readline().strip() == "ready"
    # The windowed query is read in this process while the producers push.
    with lm.connect(srv.address, token=TOKEN) as c:
        windows = c.subscribe("per_key")
        procs = [subprocess.Popen([sys.executable, "-c", PRODUCER, srv.address, TOKEN,
                                   str(p * per_producer), str(per_producer), str(batch)]) for p in range(producers)]
        for p in procs:
            assert p.wait(timeout=120) == 0
        assert sub.wait(timeout=120) == 0
        ids = pa.ipc.open_file(str(out)).read_all().column("id").to_pylist()
        assert len(ids) == total, "every row arrives once (no loss, no duplicate)"
        assert sorted(ids) == list(range(total))
        eng.flush()
        expected = in_process([data(0, total)])
        got = collect_until(windows, expected.num_rows)
        windows.close()
    assert canon(got).equals(canon(expected)), "remote results equal the in-process engine's"
    m = srv.metrics()
    assert m["rows_in"] == total
    assert m["duplicate_pushes"] == total // batch


def test_retry_after_reconnect_is_applied_once(served):
    eng, srv = served
    with lm.connect(srv.address, token=TOKEN) as c, lm.connect(srv.address, token=TOKEN) as watcher:
        sub = watcher.subscribe("all")
        t = data(0, 100)
        assert c.push("trades", t, seq=1) is True
        c._conn.sock.shutdown(socket.SHUT_RDWR)  # the connection drops (as if the Ack was lost)
        assert c.push("trades", t, seq=1) is False  # reconnects, same (producer, seq): not applied again
        assert c.reconnects >= 1
        assert c.push("trades", data(100, 50)) is True  # numbering continues after the explicit seq
        got = collect_until(sub, 150)
        time.sleep(0.2)
        extra = sub.next(timeout=0.3)
        sub.close()
    assert extra is None
    assert sorted(got.column("id").to_pylist()) == list(range(150))
    assert srv.metrics()["duplicate_pushes"] == 1


def test_bad_token_and_missing_token_raise_clearly(served):
    _, srv = served
    with pytest.raises(AuthenticationError, match="token was refused"):
        lm.connect(srv.address, token="wrong")
    with pytest.raises(AuthenticationError):
        lm.connect(srv.address)
    assert srv.metrics()["unauthenticated"] == 2


def test_remote_errors_name_the_problem(served):
    _, srv = served
    with lm.connect(srv.address, token=TOKEN) as c:
        with pytest.raises(RemoteError, match="unknown source 'nope'") as e:
            c.push("nope", data(0, 1))
        assert e.value.code_name == "UnknownSource"
        with pytest.raises(RemoteError) as e:
            c.push("trades", pa.table({"x": [1, 2]}))
        assert e.value.code_name == "SchemaMismatch"
        with pytest.raises(RemoteError) as e:
            c.subscribe("no_such_query")
        assert e.value.code_name == "UnknownQuery"
        assert c.push("trades", data(0, 10)) is True  # the connection is still usable


def test_timeouts():
    # A listener that accepts and never answers: the handshake times out.
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    addr = "127.0.0.1:%d" % lst.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RemoteTimeoutError):
        lm.connect(addr, timeout=0.3)
    assert time.monotonic() - t0 < 3
    lst.close()
    # Nothing listening, no reconnect: a clear DisconnectedError.
    with pytest.raises(DisconnectedError, match="cannot reach"):
        lm.connect(addr, timeout=0.3, reconnect=False)


def test_subscription_next_times_out_and_server_close_ends_streams():
    eng = lm.Engine()
    pipeline(eng)
    srv = eng.serve()
    c = lm.connect(srv.address)
    sub = c.subscribe("all")
    t0 = time.monotonic()
    assert sub.next(timeout=0.2) is None
    assert time.monotonic() - t0 < 2
    srv.close()  # graceful: clients get Close, the stream ends
    assert list(sub) == []
    assert not srv.running
    eng.close()


def test_serve_options_are_checked(tmp_path):
    eng = lm.Engine()
    pipeline(eng)
    with pytest.raises(lm.errors.ServerError, match="token file"):
        eng.serve(token_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(lm.errors.ServerError, match="empty"):
        eng.serve(token_file=tmp_path / "empty")
    (tmp_path / "tok").write_text(TOKEN + "\n")
    srv = eng.serve(token_file=tmp_path / "tok", max_batch_rows=10)
    with lm.connect(srv.address, token=TOKEN) as c:
        with pytest.raises(RemoteError, match="maximum of 10 rows"):
            c.push("trades", data(0, 11))
    eng.close()  # closes its servers
    assert not srv.running


PIPELINE_FILE = """
import laminar as lm
eng = lm.Engine()
s = eng.source("trades", time="ts", watermark=lm.bounded_delay("1h"))
s.select("id", "ts", "key", "value").collect(name="all")
"""


def test_cli_serves_a_pipeline_until_sigint(tmp_path):
    (tmp_path / "pipe.py").write_text(PIPELINE_FILE)
    (tmp_path / "tok").write_text(TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "laminar.cli", "serve", str(tmp_path / "pipe.py"),
                             "--port", "0", "--token-file", str(tmp_path / "tok")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, line + proc.stderr.read()
        addr = line.split(" on ")[1].split(" ")[0]
        with lm.connect(addr, token=TOKEN) as c:
            sub = c.subscribe("all")
            assert c.push("trades", data(0, 20)) is True
            assert collect_until(sub, 20).num_rows == 20
            sub.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_refuses_a_file_without_an_engine(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    r = subprocess.run([sys.executable, "-m", "laminar.cli", "serve", str(tmp_path / "empty.py"), "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "defines no lm.Engine named `engine` or `eng`" in r.stderr


@pytest.mark.parametrize("backend", ["epoll", "uring"])
def test_backend_is_selectable_by_env(backend):
    code = ("import laminar as lm; e = lm.Engine(); s = e.source('t', time='ts'); "
            "srv = e.serve(); print(srv.backend); c = lm.connect(srv.address); c.ping(); c.close(); srv.close()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LAMINAR_IO": backend})
    if backend == "uring" and r.returncode != 0 and "io_uring" in r.stderr:
        pytest.skip("io_uring unavailable here")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == backend


def test_subscribing_to_a_sink_fed_query_ends_with_an_error(tmp_path):
    eng = lm.Engine()
    s = eng.source("trades", time="ts", watermark=lm.bounded_delay("1h"))
    s.select("id", "ts").sink(lm.files(str(tmp_path / "out")), name="to_files")
    srv = eng.serve()
    with lm.connect(srv.address) as c:
        sub = c.subscribe("to_files", timeout=5)
        with pytest.raises(RemoteError, match="sink") as e:
            next(sub)
        assert e.value.code_name == "Internal"
        assert list(sub) == []  # the stream ended (FINAL)
        assert c.ping() < 1.0
    srv.close()
    eng.close()


def test_client_reconnects_to_a_restarted_server():
    eng = lm.Engine()
    pipeline(eng)
    srv = eng.serve()
    port = srv.port
    c = lm.connect(srv.address, timeout=10)
    assert c.push("trades", data(0, 10)) is True
    srv.close()
    restarted = []
    threading.Timer(0.3, lambda: restarted.append(eng.serve(port=port))).start()
    assert c.push("trades", data(10, 10)) is True  # waits for the server to come back
    assert c.reconnects >= 1
    assert restarted and restarted[0].metrics()["rows_in"] == 10
    c.close()
    eng.close()
