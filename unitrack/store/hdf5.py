"""``store.h5``: the pandas-readable view of a store, rewritten whole by write-new-then-rename.

Each table is a pandas "table" format node with data columns, so ``pandas.read_hdf(path, name)`` and existing
cox tooling read it. The file is written into a temporary file in the same folder, fsynced and moved over
``store.h5`` with ``os.replace``: readers see either the old complete file or the new complete file, never a
partial one. The journal stays the source of truth; this file is rebuilt from it.

The root node carries ``unitrack_schema``, a JSON text attribute with every table's columns and kinds (also of
tables without rows, which pandas cannot write), and ``unitrack_rows``, the row count of each table. Each table's
group also carries ``COX_DATA`` (``{'schema': {column: type}, 'name': table}``, pickled by PyTables as cox 0.2
writes it), so the original cox finds the tables; unitrack itself reads ``unitrack_schema``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitrack.errors import StorageError
from unitrack.store.schema import ColumnKind

__all__ = ["H5TableSpec", "write_empty_h5", "write_h5"]

#: PyTables (and the HDF5 library under it) is not thread-safe, and every image is built under the name
#: ``store.h5`` (PyTables refuses a second open of one name): one store.h5 is built at a time in a process.
_PYTABLES = threading.Lock()

_NUMPY = {
    ColumnKind.FLOAT: ("<f8", "float64"),
    ColumnKind.INT: ("<i8", "int64"),
    ColumnKind.BOOL: ("?", "bool"),
}


@dataclass(frozen=True)
class H5TableSpec:
    """What store.h5 needs to know of a table before its rows arrive: columns, kinds, row count, text widths."""

    name: str
    columns: list[str]
    kinds: list[ColumnKind]
    nrows: int
    #: The longest UTF-8 text of each column, in bytes (ignored for numeric columns).
    widths: list[int]

    @property
    def row_bytes(self) -> int:
        """Bytes of one row in the file (the index and every column)."""
        return 8 + sum(8 if k in _NUMPY else max(1, w) for k, w in zip(self.kinds, self.widths, strict=True))


#: A store.h5 of at most this many bytes of rows is built in memory and written with one write (fast for many
#: small stores); a larger one is streamed into a temporary file in chunks, so building it needs about as much
#: memory as one chunk whatever the run's length (#12 item 15).
IMAGE_MAX_BYTES = 16 << 20

#: Chunks of rows are cut to at most this many rows before they become a record array.
APPEND_ROWS = 1 << 15

#: PyTables' caches, sized for appending once front to back (its defaults, 16 MiB each, are for reading).
_CACHES = {"chunk_cache_size": 1 << 20, "io_buffer_size": 1 << 20}

#: ``(table name, number of rows, one array or list per column)``.
Chunk = tuple[str, int, list[Any]]


def write_h5(
    path: str, tables: Sequence[H5TableSpec], chunks: Iterable[Chunk], *, fsync: bool = True
) -> None:
    """Atomically replace ``path`` with an HDF5 file holding ``tables``, whose rows come from ``chunks``.

    Args:
        path: The ``store.h5`` to replace.
        tables: Every table (also those without rows), with its exact row count and text widths.
        chunks: ``(table name, number of rows, one array or list per column)`` in row order per table; the
            tables' chunks may be interleaved. Only one chunk is held at a time. Text is ``str`` or its UTF-8
            ``bytes``.
        fsync: Flush the new file to disk before the rename.

    Raises:
        StorageError: The file could not be written, or the chunks do not hold each table's row count; the old
            file is left in place.
    """
    import tables as pt

    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        if sum(t.nrows * t.row_bytes for t in tables) <= IMAGE_MAX_BYTES:
            image = h5_image(tables, chunks)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(image)
                while view:
                    view = view[os.write(fd, view) :]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with (
                _PYTABLES,
                _quiet_names(),
                pt.open_file(tmp, mode="w", pytables_sys_attrs=False, **_CACHES) as h5,
            ):
                _fill(h5, tables, chunks)
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


@contextlib.contextmanager
def _quiet_names() -> Iterator[None]:
    """Names such as 'mx^2' (seed walkthrough 2) are valid for pandas but not Python identifiers; PyTables warns
    about that on every node and attribute. The data is stored correctly."""
    import tables as pt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pt.NaturalNameWarning)
        yield


def h5_image(tables: Sequence[H5TableSpec], chunks: Iterable[Chunk] = ()) -> bytes:
    """Build the bytes of a store.h5 holding ``tables`` in memory (HDF5's core driver, no backing file).

    Building in memory and writing the image with one ``write`` avoids HDF5's many small writes.
    """
    import tables as pt

    with (
        _PYTABLES,
        _quiet_names(),
        pt.open_file(
            "store.h5", mode="w", pytables_sys_attrs=False, driver="H5FD_CORE", driver_core_backing_store=0
        ) as h5,
    ):
        _fill(h5, tables, chunks)
        h5.flush()
        image: bytes = h5.get_file_image()
    return image


def _fill(h5: Any, tables: Sequence[H5TableSpec], chunks: Iterable[Chunk]) -> None:
    """Create every table of ``tables`` in ``h5``, append the rows of ``chunks``, and write the root attributes.

    Raises:
        ValueError: The chunks hold more or fewer rows than a table's count.
    """
    layouts = {t.name: _Layout(t) for t in tables}
    nodes = {t.name: layouts[t.name].create(h5) for t in tables if t.nrows}
    written = dict.fromkeys(layouts, 0)
    for name, count, values in chunks:
        if not count:
            continue
        start = written[name]
        if start + count > layouts[name].table.nrows:
            raise ValueError(f"table {name!r} has more rows than the {layouts[name].table.nrows} counted")
        for at in range(0, count, APPEND_ROWS):
            part = [col[at : at + APPEND_ROWS] for col in values]
            nodes[name].append(layouts[name].records(start + at, min(APPEND_ROWS, count - at), part))
        written[name] = start + count
    for t in tables:
        if written[t.name] != t.nrows:
            raise ValueError(f"table {t.name!r} has {written[t.name]} rows, not the {t.nrows} counted")
    schema = {t.name: [[c, k.value] for c, k in zip(t.columns, t.kinds, strict=True)] for t in tables}
    h5.root._v_attrs.unitrack_schema = json.dumps(schema)
    h5.root._v_attrs.unitrack_rows = json.dumps({t.name: t.nrows for t in tables})


#: Column names pandas cannot keep as a data column of their own: its attributes ``<name>_kind`` etc. would
#: start with a prefix PyTables reserves (``_c`` -> ``_c_kind``), the field would (``_v_x``), or the name is
#: taken by the table's own fields (``index``, ``values_block_<n>``). Such a column is stored in a values block
#: of its own, as pandas stores columns that are not data columns, so any valid name round-trips (#12 item 13).
_RESERVED_PREFIX = re.compile(r"_[cfgv]_")


def _needs_block(column: str) -> bool:
    return (
        bool(_RESERVED_PREFIX.match(column))
        or bool(_RESERVED_PREFIX.match(column + "_"))
        or column == "index"
        or column.startswith("values_block_")
    )


class _Layout:
    """One table in the layout ``pandas.HDFStore.put(format='table', data_columns=True)`` produces.

    PyTables is used directly because pandas' writer costs ~10 ms per table, which made closing a store too
    slow for the 1,000-store target. ``tests/store`` reads the result back with ``pandas.read_hdf``.
    """

    def __init__(self, table: H5TableSpec) -> None:
        self.table = table
        fields: list[tuple[str, Any]] = [("index", "<i8")]
        #: (field name, column position, is a values block) in the order of the record's fields.
        self.slots: list[tuple[str, int, bool]] = []
        self.labels: list[str] = []
        blocks = [i for i, c in enumerate(table.columns) if _needs_block(c)]
        data = [i for i in range(len(table.columns)) if i not in set(blocks)]
        for position in blocks + data:
            kind = table.kinds[position]
            if kind in _NUMPY:
                code, label = _NUMPY[kind]
            else:
                width = max(1, table.widths[position])
                code, label = f"S{width}", f"bytes{width * 8}"
            self.labels.append(label)
            block = position in blocks
            name = f"values_block_{len(self.slots)}" if block else table.columns[position]
            fields.append((name, (code, (1,))) if block else (name, code))
            self.slots.append((name, position, block))
        self.dtype = np.dtype(fields)

    def create(self, h5: Any) -> Any:
        t = self.table
        cols = list(t.columns)
        group = h5.create_group("/", t.name)
        attrs = group._v_attrs
        # Only the attributes pandas needs to read the node back (it reads the others with defaults).
        attrs.pandas_type = "frame_table"
        attrs.table_type = "appendable_frame"
        attrs.encoding = "UTF-8"
        attrs.index_cols = [(0, "index")]
        attrs.values_cols = [name for name, _, _ in self.slots]
        attrs.non_index_axes = [(1, cols)]
        attrs.data_columns = [name for name, _, block in self.slots if not block]
        attrs.levels = 1
        # cox's own schema attribute, as cox 0.2 writes it (``Table._initialize_nonempty_table``): the original
        # cox lists only the tables that carry it. PyTables pickles this dict of plain builtins (protocol 0),
        # byte for byte as it does for cox; unitrack reads it back with an allow-list unpickler (h5read).
        attrs.COX_DATA = {
            "schema": {c: k.schema_type for c, k in zip(cols, t.kinds, strict=True)},
            "name": t.name,
        }
        node = h5.create_table(group, "table", self.dtype, expectedrows=max(t.nrows, 1), track_times=False)
        tattrs = node.attrs
        tattrs.index_kind = "integer"
        for (name, position, _), label in zip(self.slots, self.labels, strict=True):
            setattr(tattrs, f"{name}_kind", [cols[position]])
            setattr(tattrs, f"{name}_dtype", label)
            if t.kinds[position] not in _NUMPY:
                setattr(tattrs, f"{name}_meta", "str")
        return node

    def records(self, start: int, count: int, values: list[Any]) -> Any:
        """The record array of ``count`` rows from row ``start`` holding ``values`` (an array or list per column)."""
        record = np.empty(count, dtype=self.dtype)
        record["index"] = np.arange(start, start + count, dtype="<i8")
        kinds = self.table.kinds
        for name, position, block in self.slots:
            col = values[position]
            if kinds[position] in _NUMPY:
                arr = np.asarray(col, dtype=_NUMPY[kinds[position]][0])
            elif len(col) and isinstance(col[0], str):
                arr = np.array([v.encode("utf-8") for v in col], dtype=record.dtype[name].base)
            else:  # already UTF-8 bytes (read from the journal)
                arr = np.array(col, dtype=record.dtype[name].base)
            if block:
                record[name][:, 0] = arr
            else:
                record[name] = arr
        return record


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
