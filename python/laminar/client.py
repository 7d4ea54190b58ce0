"""A client of a laminar server (``laminar serve``, ``Engine.serve``): push data, subscribe to
results, from any process.

Pure Python (``socket``, ``struct``, ``pyarrow.ipc``); it speaks the wire protocol of
``docs/protocol.md``. ::

    import laminar as lm
    with lm.connect("127.0.0.1:7878", token="secret") as c:
        c.push("trades", df)                 # waits for the server's Ack
        for table in c.subscribe("per_sec"):  # a pyarrow.Table per result frame
            ...

This module owns the client side of the protocol and nothing else: it never imports the
engine. Pushes and pings share one connection; each subscription has its own connection (so a
slow consumer never delays pushes, and frames need no demultiplexing).

Exactly once: each :class:`Client` has a random producer id and numbers its pushes 1, 2, 3...;
when the connection drops, the client reconnects and sends the same push again with the same
``(producer id, seq)``, and the server acknowledges it as a duplicate if it had applied it.
The server keeps this table in memory: a push retried across a *server restart* may be
applied twice.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any, Callable, Iterator, Optional, Union

import pyarrow as pa
import pyarrow.ipc

from .errors import AuthenticationError, DisconnectedError, RemoteError, RemoteTimeoutError

__all__ = ["connect", "Client", "Subscription"]

# Opcodes (protocol section 3).
HELLO, WELCOME, PING, PONG, ERROR, CLOSE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
PUSH, ACK, SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, RESULT = 0x10, 0x11, 0x20, 0x21, 0x22, 0x23
# Flags (section 4).
LZ4, ZSTD, EXPECTS_RESPONSE, FINAL = 0x01, 0x02, 0x04, 0x08

MAGIC = b"LMNR"
VERSION = 1
HEADER = struct.Struct("<BBHI")
MAX_CONTROL_PAYLOAD = 8192

ERROR_NAMES = {
    1: "BadFrame", 2: "UnknownOpcode", 3: "BadFlags", 4: "Unauthenticated", 5: "UnsupportedVersion",
    6: "TooLarge", 7: "BadArrow", 8: "UnsupportedCompression", 9: "UnknownSource", 10: "UnknownQuery",
    11: "SchemaMismatch", 12: "RateLimited", 13: "Overloaded", 14: "ShuttingDown", 15: "Internal",
}
FATAL = {1, 2, 3, 4, 5, 6, 14}


class _Lost(Exception):
    """The connection is gone (EOF, reset, Close from the server)."""


def _remote_error(payload: bytes) -> RemoteError:
    if len(payload) < 4:
        return RemoteError("malformed Error frame from the server", 1, "BadFrame")
    code, n = struct.unpack_from("<HH", payload)
    msg = bytes(payload[4:4 + n]).decode("utf-8", "replace")
    name = ERROR_NAMES.get(code, "Internal")
    cls = AuthenticationError if code == 4 else RemoteError
    return cls(f"server error {name} ({code}): {msg}", code, name)


def _parse_address(address: Union[str, tuple]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return str(address[0]), int(address[1])
    host, sep, port = str(address).rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be 'host:port', got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _to_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    try:
        import pandas as pd  # noqa: F401

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(data, dict):
        return pa.table(data)
    from .errors import InputTypeError

    raise InputTypeError(f"push needs a pyarrow Table/RecordBatch, a pandas or polars DataFrame or a dict, got {type(data).__name__}")


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches():
            w.write_batch(b)
    return sink.getvalue().to_pybytes()


def _name(s: str) -> bytes:
    b = s.encode("utf-8")
    if not 1 <= len(b) <= 256:
        raise ValueError(f"names must be 1 to 256 bytes of UTF-8, got {s!r}")
    return struct.pack("<H", len(b)) + b


class _Conn:
    """One handshaken connection; blocking reads with deadlines."""

    def __init__(self, host: str, port: int, token: Optional[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise _Lost(f"cannot connect to {host}:{port}: {e}") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._seq = 0
        tok = (token or "").encode("utf-8")
        if len(tok) > 1024:
            raise ValueError("the token is longer than 1024 bytes")
        seq = self.next_seq()
        self.send(HELLO, EXPECTS_RESPONSE, seq, MAGIC + struct.pack("<HH", VERSION, len(tok)) + tok)
        op, _flags, _s, payload = self.recv(deadline)
        if op == ERROR:
            err = _remote_error(payload)
            self.close()
            raise err
        if op != WELCOME or len(payload) < 8:
            self.close()
            raise _Lost(f"unexpected answer to Hello (opcode {op:#x})")
        self.version, self.max_payload = struct.unpack_from("<HI", payload)
        n = struct.unpack_from("<H", payload, 6)[0]
        self.server_info = bytes(payload[8:8 + n]).decode("utf-8", "replace")

    def next_seq(self) -> int:
        self._seq = self._seq % 65535 + 1
        return self._seq

    def send(self, op: int, flags: int, seq: int, *parts: bytes) -> None:
        n = sum(len(p) for p in parts)
        try:
            self.sock.sendall(HEADER.pack(op, flags, seq, n) + b"".join(parts) if n < 65536 else HEADER.pack(op, flags, seq, n))
            if n >= 65536:
                for p in parts:
                    self.sock.sendall(p)
        except socket.timeout as e:
            raise RemoteTimeoutError("timed out sending to the server") from e
        except OSError as e:
            raise _Lost(str(e)) from e

    def _read(self, n: int, deadline: Optional[float]) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteTimeoutError("timed out waiting for the server")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                r = self.sock.recv_into(view[got:], n - got)
            except socket.timeout as e:
                raise RemoteTimeoutError("timed out waiting for the server") from e
            except OSError as e:
                raise _Lost(str(e)) from e
            if r == 0:
                raise _Lost("the server closed the connection")
            got += r
        return buf

    def recv(self, deadline: Optional[float]) -> tuple[int, int, int, bytearray]:
        op, flags, seq, n = HEADER.unpack(self._read(8, deadline))
        payload = self._read(n, deadline) if n else bytearray()
        return op, flags, seq, payload

    def close(self, normal: bool = False) -> None:
        try:
            if normal:
                self.sock.settimeout(0.5)
                self.sock.sendall(HEADER.pack(CLOSE, 0, 0, 2) + b"\0\0")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    """A connection to a laminar server; see :func:`connect`. Thread-safe: calls from several
    threads are serialised."""

    def __init__(self, address: Union[str, tuple], token: Optional[str] = None, timeout: float = 10.0,
                 reconnect: bool = True, producer_id: Optional[int] = None) -> None:
        self.host, self.port = _parse_address(address)
        self.token = token
        self.timeout = float(timeout)
        self.reconnect = reconnect
        self.producer_id = producer_id if producer_id is not None else random.getrandbits(63) | 1
        self._seq = 0
        self._lock = threading.RLock()
        self._conn: Optional[_Conn] = None
        self._closed = False
        self._subs: list[Subscription] = []
        self.reconnects = 0
        with self._lock:
            self._ensure(time.monotonic() + self.timeout)

    # --- connection -----------------------------------------------------------------------
    def _open(self) -> _Conn:
        return _Conn(self.host, self.port, self.token, self.timeout)

    def _ensure(self, deadline: float) -> _Conn:
        if self._closed:
            raise DisconnectedError("the client is closed")
        delay = 0.02
        while self._conn is None:
            try:
                self._conn = self._open()
            except _Lost as e:
                if not self.reconnect or time.monotonic() + delay > deadline:
                    raise DisconnectedError(f"cannot reach the laminar server at {self.host}:{self.port}: {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, op: int, flags: int, parts: tuple, want: int, deadline: float) -> tuple[int, bytearray]:
        """Sends a request and returns the answer with the same seq (retrying on a new
        connection when the connection drops and ``reconnect`` is on)."""
        while True:
            conn = self._ensure(deadline)
            try:
                seq = conn.next_seq()
                conn.send(op, flags, seq, *parts)
                while True:
                    rop, _rflags, rseq, payload = conn.recv(deadline)
                    if rop == ERROR and rseq in (seq, 0):
                        err = _remote_error(payload)
                        if err.code in FATAL:
                            self._drop()
                        raise err
                    if rop == CLOSE:
                        raise _Lost("the server closed the connection")
                    if rop == want and rseq == seq:
                        return rop, payload
            except _Lost as e:
                self._drop()
                if not self.reconnect or time.monotonic() >= deadline:
                    raise DisconnectedError(f"lost the connection to {self.host}:{self.port}: {e}") from None
                self.reconnects += 1
            except RemoteTimeoutError:
                self._drop()
                raise

    # --- API ------------------------------------------------------------------------------
    def push(self, source: str, data: Any, seq: Optional[int] = None) -> bool:
        """Pushes data (pyarrow, pandas, polars) to a source of the served engine and waits for
        the server's Ack. Returns True if applied, False if the server had applied this
        ``(producer, seq)`` before (a retry). Raises :class:`~laminar.errors.RemoteError`
        (unknown source, schema mismatch, ...), :class:`~laminar.errors.RemoteTimeoutError`,
        :class:`~laminar.errors.DisconnectedError`."""
        table = _to_table(data)
        name = _name(source)
        ipc = _ipc(table)
        with self._lock:
            conn = self._ensure(time.monotonic() + self.timeout)
            limit = conn.max_payload - 18 - len(name)
            if len(ipc) > limit:
                if seq is not None:
                    raise ValueError(f"the data is {len(ipc)} bytes, over the server's {conn.max_payload}-byte frame limit; push it in parts without an explicit seq")
                if table.num_rows <= 1:
                    raise ValueError("a single row is over the server's frame limit")
                half = table.num_rows // 2
                a = self.push(source, table.slice(0, half))
                b = self.push(source, table.slice(half))
                return a and b
            if seq is None:
                self._seq += 1
                seq = self._seq
            else:
                self._seq = max(self._seq, int(seq))
            head = struct.pack("<QQ", self.producer_id, int(seq)) + name
            _, payload = self._request(PUSH, EXPECTS_RESPONSE, (head, ipc), ACK, time.monotonic() + self.timeout)
            if len(payload) != 17:
                raise RemoteError("malformed Ack from the server", 1, "BadFrame")
            return payload[16] == 1

    def ping(self) -> float:
        """Round trip to the server, in seconds."""
        with self._lock:
            nonce = random.getrandbits(64)
            t0 = time.perf_counter()
            _, payload = self._request(PING, EXPECTS_RESPONSE, (struct.pack("<Q", nonce),), PONG,
                                       time.monotonic() + self.timeout)
            dt = time.perf_counter() - t0
            if struct.unpack("<Q", bytes(payload[:8]))[0] != nonce:
                raise RemoteError("Pong with the wrong nonce", 1, "BadFrame")
            return dt

    def subscribe(self, query: str, callback: Optional[Callable[[pa.Table], Any]] = None,
                  timeout: Optional[float] = None) -> "Subscription":
        """Subscribes to a query's results on a connection of its own.

        Without ``callback``: returns a :class:`Subscription`, an iterator of pyarrow Tables
        (one per result frame; ``timeout``: seconds to wait for the next one before
        :class:`~laminar.errors.RemoteTimeoutError`, ``None`` = forever). With ``callback``:
        calls it with each Table on a background thread; ``close()`` the subscription to stop.
        """
        sub = Subscription(self, query, timeout)
        self._subs.append(sub)
        if callback is not None:
            sub._start_thread(callback)
        return sub

    def close(self) -> None:
        """Closes the connection and every subscription (a normal Close)."""
        for s in self._subs:
            s.close()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close(normal=True)
                self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"laminar.Client({self.host}:{self.port}, producer_id={self.producer_id:#x})"


class Subscription:
    """A stream of a query's results (see :meth:`Client.subscribe`). Iterate it for pyarrow
    Tables; ``close()`` ends it. After a dropped connection it resubscribes (when the client
    reconnects); rows in flight when the connection dropped are lost."""

    def __init__(self, client: Client, query: str, timeout: Optional[float]) -> None:
        self.client = client
        self.query = query
        self.timeout = timeout
        self.schema: Optional[pa.Schema] = None
        self._conn: Optional[_Conn] = None
        self._closed = False
        self._ended = False
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self._connect()

    def _connect(self) -> None:
        c = self.client
        deadline = time.monotonic() + c.timeout
        delay = 0.02
        while True:
            try:
                conn = c._open()
                self._seq = conn.next_seq()
                conn.send(SUBSCRIBE, EXPECTS_RESPONSE, self._seq, _name(self.query))
                while True:
                    op, _f, seq, payload = conn.recv(deadline)
                    if op == ERROR:
                        conn.close()
                        raise _remote_error(payload)
                    if op == SUBSCRIBED and seq == self._seq:
                        n = struct.unpack_from("<H", payload)[0]
                        schema = pa.ipc.open_stream(bytes(payload[2 + n:])).schema
                        if len(schema) > 0:
                            self.schema = schema
                        self._conn = conn
                        return
            except _Lost as e:
                if not c.reconnect or time.monotonic() + delay > deadline:
                    raise DisconnectedError(f"cannot subscribe to '{self.query}': {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def __iter__(self) -> Iterator[pa.Table]:
        return self

    def __next__(self) -> pa.Table:
        while True:
            if self._closed or self._ended:
                raise StopIteration
            conn = self._conn
            if conn is None:
                raise StopIteration
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            try:
                op, flags, seq, payload = conn.recv(deadline)
            except _Lost:
                if self._closed:
                    raise StopIteration from None
                conn.close()
                self._conn = None
                if not self.client.reconnect:
                    raise DisconnectedError(f"lost the subscription to '{self.query}'") from None
                self.client.reconnects += 1
                self._connect()
                continue
            if op == ERROR:
                err = _remote_error(payload)
                if flags & FINAL or err.code in FATAL:
                    self._ended = True
                raise err
            if op == CLOSE:
                if self._closed:
                    raise StopIteration
                self._ended = True
                raise StopIteration
            if op != RESULT or seq != self._seq:
                continue
            n = struct.unpack_from("<H", payload)[0]
            table = pa.ipc.open_stream(bytes(payload[2 + n:])).read_all()
            if flags & FINAL:
                self._ended = True
            if table.num_rows == 0:
                continue
            self.schema = table.schema
            return table

    def next(self, timeout: Optional[float] = None) -> Optional[pa.Table]:
        """The next result Table, or None if none arrives within ``timeout`` seconds."""
        saved = self.timeout
        self.timeout = timeout
        try:
            return next(self)
        except RemoteTimeoutError:
            return None
        except StopIteration:
            return None
        finally:
            self.timeout = saved

    def _start_thread(self, callback: Callable[[pa.Table], Any]) -> None:
        def run() -> None:
            try:
                for t in self:
                    callback(t)
            except BaseException as e:  # reported on .error, never lost silently
                if not self._closed:
                    self.error = e

        self._thread = threading.Thread(target=run, name=f"laminar-sub-{self.query}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Ends the subscription and its connection (and joins its callback thread)."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(address: Union[str, tuple], token: Optional[str] = None, timeout: float = 10.0,
            reconnect: bool = True, producer_id: Optional[int] = None) -> Client:
    """Connects to a laminar server (``laminar serve``, ``Engine.serve``).

    ``address``: ``"host:port"``; ``token``: the server's token, if it has one; ``timeout``:
    seconds for connecting and for each request; ``reconnect``: reconnect and retry a push (with
    the same producer id and seq, so it is applied once) when the connection drops;
    ``producer_id``: fix the producer id (to continue a producer's numbering across processes).
    Raises :class:`~laminar.errors.AuthenticationError` for a refused token and
    :class:`~laminar.errors.DisconnectedError` when the server cannot be reached.
    """
    return Client(address, token=token, timeout=timeout, reconnect=reconnect, producer_id=producer_id)

