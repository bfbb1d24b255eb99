"""Build pandas DataFrames from decoded columns (pandas is imported only here, and only when called)."""

from __future__ import annotations

from typing import Any

from unitrack.store.schema import ColumnKind

__all__ = ["frame_from_columns", "pandas_column"]

_NUMPY_DTYPES = {ColumnKind.FLOAT: "float64", ColumnKind.INT: "int64", ColumnKind.BOOL: "bool"}


def pandas_column(kind: ColumnKind, values: Any) -> Any:
    """Return ``values`` as a pandas-ready array for a column of ``kind``."""
    import pandas as pd

    if kind in _NUMPY_DTYPES:
        return values
    return pd.array(values, dtype="str")


def frame_from_columns(columns: list[str], kinds: list[ColumnKind], values: list[Any]) -> Any:
    """Return a DataFrame with ``columns`` in order, typed by ``kinds`` even when empty."""
    import pandas as pd

    data = {}
    for column, kind, col in zip(columns, kinds, values, strict=True):
        if kind in _NUMPY_DTYPES:
            data[column] = pd.Series(col, dtype=_NUMPY_DTYPES[kind])
        else:
            data[column] = pd.Series(pd.array(list(col), dtype="str"))
    return pd.DataFrame(data, columns=columns)
