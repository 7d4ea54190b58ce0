"""Turning what users push (pandas, polars, pyarrow, anything with the Arrow PyCapsule
interface, or a dict of columns) into something the engine imports zero-copy."""

from __future__ import annotations

import sys
from typing import Any

import pyarrow as pa

from .errors import InputTypeError


def to_arrow(data: Any) -> Any:
    """Returns ``data`` as an object exporting ``__arrow_c_stream__`` or ``__arrow_c_array__``.

    pyarrow tables and batches and other Arrow PyCapsule objects pass through untouched (the
    engine imports them without copying). pandas frames are converted by pyarrow (numeric
    columns without copying where pandas allows). Other objects raise
    :class:`~laminar.errors.InputTypeError`.
    """
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return data
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    pl = sys.modules.get("polars")
    if pl is not None and isinstance(data, pl.DataFrame):
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return data
    if isinstance(data, dict):
        try:
            return pa.table(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            raise InputTypeError(f"could not build a table from the dict of columns: {e}") from e
    raise InputTypeError(
        f"cannot push a {type(data).__module__}.{type(data).__name__}; push a pandas or polars "
        "DataFrame, a pyarrow Table or RecordBatch, an object with the Arrow PyCapsule "
        "interface, or a dict of equal-length columns"
    )
