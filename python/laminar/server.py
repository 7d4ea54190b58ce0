"""Serving an engine over the wire protocol: :meth:`laminar.Engine.serve` returns a
:class:`Server`.

This module owns the Python face of the native server (address, metrics, close, token files)
and nothing else; the server itself runs on one native I/O thread (``laminar._laminar``), and
remote clients use :func:`laminar.connect`.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Optional, Union

from .errors import ServerError

__all__ = ["Server", "read_token_file"]


def read_token_file(path: Union[str, "os.PathLike[str]"]) -> str:
    """The token in a file (surrounding whitespace removed); a clear error when it is missing
    or empty."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ServerError(f"cannot read the token file {os.fspath(path)!r}: {e.strerror}") from None
    if not token:
        raise ServerError(f"the token file {os.fspath(path)!r} is empty")
    return token


class Server:
    """A running server. ``address`` is ``"host:port"``; ``close()`` shuts it down gracefully
    (stop accepting, send Close to every client, flush, join). A context manager."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @property
    def address(self) -> str:
        """``"host:port"`` the server listens on."""
        a = self._native.address
        if a is None:
            raise ServerError("the server is closed")
        return a

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def backend(self) -> Optional[str]:
        """The I/O backend: ``"uring"`` or ``"epoll"`` (``LAMINAR_IO`` forces one)."""
        return self._native.backend

    @property
    def running(self) -> bool:
        return self._native.running

    def metrics(self) -> dict:
        """The server's counters: connections, frames, bytes, pushes, rows, results, and one
        counter per kind of refused input (``bad_header``, ``unknown_opcode``, ``oversized``,
        ``bad_frame``, ``bad_arrow``, ``unauthenticated``, ``rate_limited``, ...)."""
        return dict(self._native.metrics())

    def close(self) -> None:
        """Graceful shutdown. Idempotent."""
        self._native.close()

    def serve_forever(self) -> None:
        """Blocks until SIGINT or SIGTERM (main thread only), then closes the server."""
        stop = threading.Event()
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.2):
                if not self.running:
                    break
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        a = self._native.address
        return f"laminar.Server({a or 'closed'}, backend={self.backend})"
