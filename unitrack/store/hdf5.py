"""``store.h5``: the pandas-readable view of a store, rewritten whole by write-new-then-rename.

Each table is a pandas "table" format node with data columns, so ``pandas.read_hdf(path, name)`` and existing
cox tooling read it. The file is written into a temporary file in the same folder, fsynced and moved over
``store.h5`` with ``os.replace``: readers see either the old complete file or the new complete file, never a
partial one. The journal stays the source of truth; this file is rebuilt from it.

The root node carries ``unitrack_schema``, a JSON text attribute with every table's columns and kinds (also of
tables without rows, which pandas cannot write), and ``unitrack_rows``, the row count of each table.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from unitrack.errors import StorageError
from unitrack.store.schema import ColumnKind

__all__ = ["write_empty_h5", "write_h5"]

_NUMPY = {
    ColumnKind.FLOAT: ("<f8", "float64"),
    ColumnKind.INT: ("<i8", "int64"),
    ColumnKind.BOOL: ("?", "bool"),
}


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
    import tables as pt

    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        image = h5_image(tables)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
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


def h5_image(tables: Sequence[tuple[str, list[str], list[ColumnKind], list[Any], int]]) -> bytes:
    """Build the bytes of a store.h5 holding ``tables`` in memory (HDF5's core driver, no backing file).

    Building in memory and writing the image with one ``write`` avoids HDF5's many small writes.
    """
    import tables as pt

    schema = {
        name: [[c, k.value] for c, k in zip(cols, kinds, strict=True)] for name, cols, kinds, _, _ in tables
    }
    counts = {name: nrows for name, _, _, _, nrows in tables}
    with warnings.catch_warnings():
        # Names such as 'mx^2' (seed walkthrough 2) are valid for pandas but not Python identifiers;
        # PyTables warns about that on every node and attribute. The data is stored correctly.
        warnings.simplefilter("ignore", pt.NaturalNameWarning)
        with pt.open_file(
            "store.h5", mode="w", pytables_sys_attrs=False, driver="H5FD_CORE", driver_core_backing_store=0
        ) as h5:
            for name, cols, kinds, values, nrows in tables:
                if nrows:
                    _write_frame_table(h5, name, cols, kinds, values, nrows)
            h5.root._v_attrs.unitrack_schema = json.dumps(schema)
            h5.root._v_attrs.unitrack_rows = json.dumps(counts)
            h5.flush()
            image: bytes = h5.get_file_image()
    return image


@functools.lru_cache(maxsize=1)
def _empty_h5_bytes() -> bytes:
    """The bytes of a store.h5 without tables, built once per process (building costs ~1 ms)."""
    return h5_image([])


def write_empty_h5(path: str) -> None:
    """Create ``path`` as a complete store.h5 without tables (write new, then rename)."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_empty_h5_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"Could not write {path}: {exc}", path=path) from exc


def _write_frame_table(
    h5: Any, name: str, cols: list[str], kinds: list[ColumnKind], values: list[Any], nrows: int
) -> None:
    """Write one table in the layout ``pandas.HDFStore.put(format='table', data_columns=True)`` produces.

    PyTables is used directly because pandas' writer costs ~10 ms per table, which made closing a store too
    slow for the 1,000-store target. ``tests/store`` reads the result back with ``pandas.read_hdf``.
    """
    fields: list[tuple[str, str]] = [("index", "<i8")]
    arrays: list[Any] = [np.arange(nrows, dtype="<i8")]
    dtypes: list[str] = []
    for column, kind, col in zip(cols, kinds, values, strict=True):
        if kind in _NUMPY:
            code, label = _NUMPY[kind]
            arrays.append(np.asarray(col, dtype=code))
            fields.append((column, code))
            dtypes.append(label)
        else:
            encoded = [v.encode("utf-8") for v in col]
            width = max(1, max(map(len, encoded), default=1))
            arrays.append(np.array(encoded, dtype=f"S{width}"))
            fields.append((column, f"S{width}"))
            dtypes.append(f"bytes{width * 8}")
    record = np.empty(nrows, dtype=fields)
    for (field, _), arr in zip(fields, arrays, strict=True):
        record[field] = arr
    group = h5.create_group("/", name)
    attrs = group._v_attrs
    # Only the attributes pandas needs to read the node back (it reads the others with defaults).
    attrs.pandas_type = "frame_table"
    attrs.table_type = "appendable_frame"
    attrs.encoding = "UTF-8"
    attrs.index_cols = [(0, "index")]
    attrs.values_cols = list(cols)
    attrs.non_index_axes = [(1, list(cols))]
    attrs.data_columns = list(cols)
    attrs.levels = 1
    table = h5.create_table(group, "table", record, track_times=False)
    tattrs = table.attrs
    tattrs.index_kind = "integer"
    for column, kind, label in zip(cols, kinds, dtypes, strict=True):
        setattr(tattrs, f"{column}_kind", [column])
        setattr(tattrs, f"{column}_dtype", label)
        if kind not in _NUMPY:
            setattr(tattrs, f"{column}_meta", "str")
