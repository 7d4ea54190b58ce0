"""Column expressions for ``filter`` and ``select``: ``lm.col("price") * lm.col("qty") > 100``.

Expressions are lazy descriptions; the engine evaluates them with vectorised Arrow kernels.
Combine conditions with ``&``, ``|`` and ``~`` (Python's ``and``/``or``/``not`` cannot be
overloaded and raise a helpful error).
"""

from __future__ import annotations

from typing import Any, Callable, Union

from .errors import QueryError

__all__ = ["Expr", "col", "lit"]


def _literal(value: Any) -> dict:
    if value is None:
        return {"lit": "null"}
    if isinstance(value, bool):
        return {"lit": {"bool": value}}
    if isinstance(value, int):
        return {"lit": {"int": int(value)}}
    if isinstance(value, float):
        return {"lit": {"float": float(value)}}
    if isinstance(value, str):
        return {"lit": {"str": value}}
    # numpy scalars and the like
    try:
        import numpy as np  # optional dependency
    except ImportError:  # pragma: no cover - numpy ships with pandas
        np = None
    if np is not None and isinstance(value, np.integer):
        return {"lit": {"int": int(value)}}
    if np is not None and isinstance(value, np.floating):
        return {"lit": {"float": float(value)}}
    raise QueryError(
        f"cannot use {type(value).__name__} value {value!r} in an expression; "
        "use int, float, str, bool or None"
    )


def _node(value: Any) -> dict:
    return value._node if isinstance(value, Expr) else _literal(value)


def _operator(op: str, reflected: bool = False) -> Callable[["Expr", Any], "Expr"]:
    """The method behind one Python operator on :class:`Expr`."""

    def method(self: "Expr", other: Any) -> "Expr":
        left, right = (_node(other), self._node) if reflected else (self._node, _node(other))
        return Expr({"binary": {"op": op, "left": left, "right": right}})

    method.__name__ = f"__{'r' if reflected else ''}{op}__"
    return method


class Expr:
    """A column expression. Build with :func:`col` and :func:`lit` and Python operators."""

    __slots__ = ("_node", "_name")
    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    def __init__(self, node: dict, name: str | None = None) -> None:
        self._node = node
        self._name = name

    # --- naming -----------------------------------------------------------------------------
    def alias(self, name: str) -> "Expr":
        """The same expression, producing a column called ``name`` in ``select``."""
        return Expr(self._node, name)

    @property
    def output_name(self) -> str | None:
        """The column name this expression produces (its alias, or the column it reads)."""
        if self._name is not None:
            return self._name
        return self._node.get("col") if isinstance(self._node.get("col"), str) else None

    # Operators: each builds a binary node; the reflected forms (2 * col) swap the operands.
    __eq__ = _operator("eq")  # type: ignore[assignment]
    __ne__ = _operator("ne")  # type: ignore[assignment]
    __lt__ = _operator("lt")
    __le__ = _operator("le")
    __gt__ = _operator("gt")
    __ge__ = _operator("ge")
    __and__, __rand__ = _operator("and"), _operator("and", reflected=True)
    __or__, __ror__ = _operator("or"), _operator("or", reflected=True)
    __add__, __radd__ = _operator("add"), _operator("add", reflected=True)
    __sub__, __rsub__ = _operator("sub"), _operator("sub", reflected=True)
    __mul__, __rmul__ = _operator("mul"), _operator("mul", reflected=True)
    __truediv__, __rtruediv__ = _operator("div"), _operator("div", reflected=True)
    __mod__ = _operator("mod")

    def __invert__(self) -> "Expr":
        return Expr({"not": self._node})

    def is_null(self) -> "Expr":
        """True where the value is null."""
        return Expr({"is_null": self._node})

    def is_not_null(self) -> "Expr":
        """True where the value is not null."""
        return Expr({"is_not_null": self._node})

    def __bool__(self) -> bool:
        raise QueryError(
            "an expression has no truth value; combine conditions with & | ~ "
            "(and wrap comparisons in parentheses), not with and/or/not"
        )

    def __repr__(self) -> str:
        return f"Expr({self._node!r})" + (f".alias({self._name!r})" if self._name else "")


def col(name: str) -> Expr:
    """The column called ``name``."""
    if not isinstance(name, str) or not name:
        raise QueryError(f"col() takes a column name, got {name!r}")
    return Expr({"col": name})


def lit(value: Union[int, float, str, bool, None]) -> Expr:
    """A constant."""
    return Expr(_literal(value))
