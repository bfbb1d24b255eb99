"""``store.h5``: the pandas-readable view of a store, rewritten whole by write-new-then-rename.

Each table is a pandas "table" format node with data columns, so ``pandas.read_hdf(path, name)`` and existing
cox tooling read it. The file is written into a temporary file in the same folder, fsynced and moved over
``store.h5`` with ``os.replace``: readers see either the old complete file or the new complete file, never a
partial one. The journal stays the source of truth; this file is rebuilt from it.

The root node carries ``unitrack_schema``, a JSON text attribute with every table's columns and kinds (also of
tables without rows, which pandas cannot write), and ``unitrack_rows``, the row count of each table.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from unitrack.errors import CorruptStoreError, StorageError
from unitrack.store.schema import ColumnKind

__all__ = ["read_legacy_h5", "write_h5"]

H5_NAME = "store.h5"


def write_h5(
    path: str,
    tables: Sequence[tuple[str, list[str], list[ColumnKind], list[Any], int]],
    *,
    fsync: bool = True,
) -> None:
    """Atomically replace ``path`` with an HDF5 file holding ``tables``.

    Args:
        path: The ``store.h5`` to replace.
        tables: ``(name, columns, kinds, column_values, nrows)`` for each table.
        fsync: Flush the new file to disk before the rename.

    Raises:
        StorageError: The file could not be written; the old file is left in place.
    """
    import pandas as pd
    import tables as pt

    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    schema = {name: [[c, k.value] for c, k in zip(cols, kinds)] for name, cols, kinds, _, _ in tables}
    counts = {name: nrows for name, _, _, _, nrows in tables}
    try:
        with warnings.catch_warnings():
            # Column names such as 'mx^2' (seed walkthrough 2) are valid for pandas but not Python
            # identifiers; PyTables warns about that on every write. The data is stored correctly.
            warnings.simplefilter("ignore", pt.NaturalNameWarning)
            with pd.HDFStore(tmp, mode="w") as store:
                for name, cols, kinds, values, nrows in tables:
                    if nrows == 0:
                        continue
                    frame = pd.DataFrame(dict(zip(cols, _columns_for_pandas(kinds, values))), columns=cols)
                    store.put(name, frame, format="table", data_columns=True, index=False, track_times=False)
                attrs = store._handle.root._v_attrs
                attrs.unitrack_schema = json.dumps(schema)
                attrs.unitrack_rows = json.dumps(counts)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except (OSError, ValueError, pt.HDF5ExtError) as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise StorageError(f"Could not write {path}: {exc}", path=path) from exc


def _columns_for_pandas(kinds: list[ColumnKind], values: list[Any]) -> list[Any]:
    import pandas as pd

    out = []
    for kind, col in zip(kinds, values):
        out.append(pd.array(col, dtype="str") if kind not in _NUMERIC else col)
    return out


_NUMERIC = (ColumnKind.FLOAT, ColumnKind.INT, ColumnKind.BOOL)


def read_legacy_h5(path: str) -> dict[str, Any]:
    """Read every table of a ``store.h5`` that has no journal (a cox store, or one whose journal was lost).

    Args:
        path: The HDF5 file.

    Returns:
        ``{table: DataFrame}``.

    Raises:
        CorruptStoreError: The file cannot be read as HDF5.
    """
    import pandas as pd
    import tables as pt

    try:
        with pd.HDFStore(path, mode="r") as store:
            return {key.lstrip("/"): store.select(key) for key in store.keys()}
    except (OSError, ValueError, KeyError, pt.HDF5ExtError) as exc:
        raise CorruptStoreError(path, 0, f"not a readable HDF5 store ({exc})") from exc


def kinds_from_frame(frame: Any) -> Mapping[str, ColumnKind]:
    """Infer column kinds from a DataFrame's dtypes (for stores without a journal)."""
    kinds: dict[str, ColumnKind] = {}
    for column, dtype in frame.dtypes.items():
        if dtype.kind == "f":
            kinds[str(column)] = ColumnKind.FLOAT
        elif dtype.kind in "iu":
            kinds[str(column)] = ColumnKind.INT
        elif dtype.kind == "b":
            kinds[str(column)] = ColumnKind.BOOL
        else:
            kinds[str(column)] = ColumnKind.STR
    return kinds
