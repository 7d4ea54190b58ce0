"""Exceptions raised by laminar.

Every error the engine reports is a :class:`LaminarError`. The subclasses say what kind of
problem it is, and also derive from the closest built-in exception (``KeyError`` for a missing
column, ``TypeError`` for a wrong type, ``ValueError`` for a bad value), so ``except ValueError``
style code keeps working.
"""

from __future__ import annotations

__all__ = [
    "LaminarError",
    "SchemaError",
    "ColumnNotFoundError",
    "ColumnTypeError",
    "TimeColumnError",
    "SchemaMismatchError",
    "QueryError",
    "NameConflictError",
    "DurationError",
    "InputTypeError",
    "EngineClosedError",
    "BackpressureError",
    "EngineRuntimeError",
    "AggregateOverflowError",
    "DurabilityError",
    "SinkError",
    "ServerError",
    "RemoteError",
    "AuthenticationError",
    "RemoteTimeoutError",
    "DisconnectedError",
]


class LaminarError(Exception):
    """Base class of every laminar error."""


class SchemaError(LaminarError):
    """The data or a query does not fit a schema."""


class ColumnNotFoundError(SchemaError, KeyError):
    """A column named in a query, a key or the time column does not exist."""

    __str__ = Exception.__str__  # KeyError would print the message in quotes


class ColumnTypeError(SchemaError, TypeError):
    """A column exists but has a type the operation cannot use."""


class TimeColumnError(SchemaError, ValueError):
    """The event-time column has nulls or values out of range."""


class SchemaMismatchError(SchemaError):
    """Data pushed to a source does not have the source's schema."""


class QueryError(LaminarError, ValueError):
    """A query is not valid (unknown step, missing window, bad option, ...)."""


class NameConflictError(LaminarError, KeyError):
    """A source or query name is unknown or already taken."""

    __str__ = Exception.__str__


class DurationError(LaminarError, ValueError):
    """A duration such as ``"200ms"`` could not be understood."""


class InputTypeError(LaminarError, TypeError):
    """``push`` was given an object that is not tabular data laminar can read."""


class EngineClosedError(LaminarError, RuntimeError):
    """The engine (or the source) no longer accepts input."""


class BackpressureError(LaminarError):
    """An input queue is full and the overflow policy is to refuse."""


class AggregateOverflowError(LaminarError, ArithmeticError):
    """An aggregate overflowed its result type (e.g. an int64 sum)."""


class EngineRuntimeError(LaminarError, RuntimeError):
    """A core thread of the engine failed (an internal error); the engine cannot continue.

    Create a new :class:`~laminar.Engine`. Please report it with the message: it is a bug.
    """


class DurabilityError(LaminarError):
    """Durable state (write-ahead log, checkpoints, the state directory) could not be written,
    read or trusted: a damaged or foreign checkpoint, a full disk, a state directory in use.

    The message names the file and what to do about it.
    """


class SinkError(LaminarError):
    """A sink could not write, stage or publish results (a full disk, a directory in use by
    another engine, a file it cannot read back), or a callback sink's callback raised.

    A sink that cannot write closes the engine: with a ``state_dir``, a new Engine on it
    publishes the results from the last checkpoint and the log. A callback that raises does
    not: its epoch is delivered again at the next call. The message says what to do.
    """


class ServerError(LaminarError, OSError):
    """The wire-protocol server could not start (address in use, no token file, ...)."""


class RemoteError(LaminarError):
    """A laminar server answered a request with an ``Error`` frame (``lm.connect``).

    ``code`` is the protocol's numeric error code and ``code_name`` its name
    (``docs/protocol.md``, section 8); the message is the server's.
    """

    def __init__(self, message: str, code: int = 15, code_name: str = "Internal") -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


class AuthenticationError(RemoteError, PermissionError):
    """The server refused the connection's token (or the handshake)."""


class RemoteTimeoutError(LaminarError, TimeoutError):
    """The server did not answer within the client's ``timeout``."""


class DisconnectedError(LaminarError, ConnectionError):
    """The connection to the server was lost and could not be re-established."""
