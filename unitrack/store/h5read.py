"""Read a ``store.h5`` that has no journal (a store cox wrote, or another tool) without running its code.

pandas keeps its table layout in HDF5 attributes, and PyTables **unpickles** every attribute whose bytes look
like a pickle as soon as a node is opened: ``pandas.read_hdf`` or ``tables.open_file`` on a file someone else
wrote runs whatever code its author put there (SEED_NOTES S1, issue #12 item 9). This module never lets
PyTables or pandas open such a file. It reads it with h5py, which returns attributes as raw bytes, and decodes
the few pickled attributes pandas and cox write (lists of column names, cox's ``COX_DATA`` schema such as
``{'x': float, 'o': '__object__'}``) with an unpickler that can build only plain data: lists, tuples, dicts,
strings, numbers, None and the types ``int``, ``float``, ``str``, ``bool``. Anything else in a pickle (a class,
a function, ``os.system``) is refused, and the attribute is treated as unreadable.

What is read: every top-level node in pandas' ``table`` format (``format='table'``, what cox and unitrack
write), whether its columns are data columns or value blocks, with int, float, bool and text columns. Column
kinds come from unitrack's own ``unitrack_schema`` root attribute (JSON), else from cox's ``COX_DATA`` schema
(so OBJECT, PICKLE and PYTORCH_STATE columns keep their kind), else from the stored dtypes. A node in another
layout (pandas' ``fixed`` format, whose text columns are themselves pickles) raises
:class:`~unitrack.errors.ForeignStoreError` naming the node.

Example:
    >>> import os, tempfile
    >>> import pandas as pd
    >>> path = os.path.join(tempfile.mkdtemp(), "store.h5")
    >>> pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "bc"]}).to_hdf(path, key="t", format="table")
    >>> table = read_store_h5(path)["t"]
    >>> table.columns, [k.value for k in table.kinds], table.values
    (['x', 's'], ['float', 'str'], [[1.0, 2.0], ['a', 'bc']])
"""

from __future__ import annotations

import io
import json
import logging
import pickle  # noqa: S403 - only the restricted _PlainUnpickler below is used, which builds plain data
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from unitrack.errors import CorruptStoreError, ForeignStoreError
from unitrack.store.schema import ColumnKind, kind_of

__all__ = ["H5Table", "RowPicker", "UnsafePickleError", "plain_loads", "read_store_h5"]

logger = logging.getLogger(__name__)

#: The globals a pickled attribute may name, and what they stand for (Python 2 names included: PyTables
#: pickles with protocol 0, which writes ``__builtin__.unicode`` for ``str``).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", t.__name__): t for t in (int, float, str, bool)},
    ("__builtin__", "int"): int,
    ("__builtin__", "long"): int,
    ("__builtin__", "float"): float,
    ("__builtin__", "str"): str,
    ("__builtin__", "unicode"): str,
    ("__builtin__", "bool"): bool,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something other than plain data; nothing from it was built."""


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: it refuses every global outside :data:`_ALLOWED_GLOBALS`.

    Without a global, a pickle cannot name a callable, so REDUCE, BUILD, NEWOBJ and INST have nothing to
    call; extension codes and persistent ids are refused too.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"refused to load {module}.{name} (only plain data is read)")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent id (only plain data is read)")


def plain_loads(data: bytes) -> Any:
    """Unpickle ``data`` if it holds plain data only (lists, dicts, strings, numbers, builtin types).

    Raises:
        UnsafePickleError: The pickle names a class or function outside the allow-list (nothing is built).
        pickle.UnpicklingError: The bytes are not a (well-formed) pickle; every other failure of the
            unpickler on malformed bytes is turned into this one.

    Example:
        >>> plain_loads(pickle.dumps({"x": float, "n": [1, 2]}, protocol=0))
        {'x': <class 'float'>, 'n': [1, 2]}
        >>> import os
        >>> plain_loads(pickle.dumps(os.getcwd))
        Traceback (most recent call last):
        ...
        unitrack.store.h5read.UnsafePickleError: refused to load posix.getcwd (only plain data is read)
    """
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError:
        raise
    except (
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
        MemoryError,
        RecursionError,
        struct.error,
    ) as exc:  # malformed bytes: lengths past the end or the platform's sizes, bad opcodes, a bad stack
        raise pickle.UnpicklingError(f"not a readable pickle: {exc!r}") from exc


#: Given a table's name and its number of rows, the rows to read (``slice(n - 1, n)``: only the last one).
RowPicker = Callable[[str, int], slice]


@dataclass
class H5Table:
    """One table read from a ``store.h5``: column names, kinds, and each column's values (Python lists).

    ``nrows`` counts every row of the table, also when only some were read (``values`` holds those).
    """

    name: str
    columns: list[str]
    kinds: list[ColumnKind]
    values: list[list[Any]]
    nrows: int


def _raw(attrs: Any, name: str) -> Any:
    try:
        return attrs[name] if name in attrs else None
    except (OSError, KeyError, TypeError, ValueError):  # an attribute h5py cannot decode
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


def _pickled(path: str, node: str, attrs: Any, name: str) -> Any:
    """Decode a pickled attribute with :func:`plain_loads`; None (with a warning) when it is not plain data."""
    value = _raw(attrs, name)
    if value is None:
        return None
    if not isinstance(value, (bytes, np.bytes_)):
        return value
    data = bytes(value)
    try:
        return plain_loads(data)
    except UnsafePickleError as exc:
        logger.warning("%s: attribute %s of /%s was not read: %s", path, name, node, exc)
    except pickle.UnpicklingError as exc:
        logger.warning("%s: attribute %s of /%s is not a readable pickle: %s", path, name, node, exc)
    return None


def _string_list(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _schema_kinds(path: str, node: str, schema: Any) -> dict[str, ColumnKind]:
    """Kinds from unitrack's JSON schema (``[[column, kind], ...]``) or cox's ``{column: type}``."""
    kinds: dict[str, ColumnKind] = {}
    items = schema.items() if isinstance(schema, dict) else schema if isinstance(schema, list) else []
    for item in items:
        try:
            column, spec = item
            kinds[str(column)] = ColumnKind(spec) if isinstance(spec, str) else kind_of(spec)
        except (TypeError, ValueError):
            logger.warning(
                "%s: the schema of /%s gives column %r an unknown type; read by dtype", path, node, item
            )
    return kinds


def _from_dtype(values: np.ndarray, declared: str | None) -> ColumnKind:
    if values.dtype.kind == "f":
        return ColumnKind.FLOAT
    if declared == "bool" or values.dtype.kind == "b":
        return ColumnKind.BOOL
    if values.dtype.kind in "iu":
        return ColumnKind.INT
    return ColumnKind.STR


def _column(values: np.ndarray, kind: ColumnKind, encoding: str) -> list[Any]:
    if values.dtype.kind in "SO":
        return [
            (bytes(v) if not isinstance(v, bytes) else v).decode(encoding, "replace") for v in values.tolist()
        ]
    if kind is ColumnKind.BOOL:
        return [bool(v) for v in values.tolist()]
    if kind is ColumnKind.INT and values.dtype.kind in "iu":
        return [int(v) for v in values.tolist()]
    if kind in (ColumnKind.FLOAT, ColumnKind.INT):
        return [float(v) for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def _read_table(
    path: str, name: str, group: Any, own_schema: dict[str, Any], pick: RowPicker | None = None
) -> H5Table:
    attrs = group.attrs
    pandas_type = _text(_raw(attrs, "pandas_type"))
    if pandas_type != "frame_table" or "table" not in group:
        raise ForeignStoreError(
            path,
            name,
            f"it is not in pandas' table format (pandas_type={pandas_type!r}); reading it would run pickles",
        )
    table = group["table"]
    try:
        total = int(table.shape[0]) if table.shape else 0
        data = table[()] if pick is None else table[pick(name, total)]
    except (OSError, TypeError, ValueError) as exc:
        raise CorruptStoreError(path, 0, f"table /{name} cannot be read ({exc})") from exc
    if data.dtype.names is None:
        raise ForeignStoreError(path, name, "its table is not a record array")
    axes = _pickled(path, name, attrs, "non_index_axes")
    order: list[str] | None = None
    if isinstance(axes, list) and axes and isinstance(axes[0], (list, tuple)) and len(axes[0]) == 2:
        order = _string_list(axes[0][1])
    encoding = _text(_raw(attrs, "encoding")) or "UTF-8"
    targs = table.attrs
    sources: dict[str, tuple[str, int | None]] = {}  # column -> (field, position in a values block)
    for field in data.dtype.names:
        if field == "index":
            continue
        kind_attr = _pickled(path, name, targs, f"{field}_kind")
        members = _string_list(kind_attr)
        if field.startswith("values_block_") and members is not None:
            for position, column in enumerate(members):
                sources[column] = (field, position)
        else:
            sources[field] = (field, None)
    if order is None:
        order = list(sources)
    missing = [c for c in order if c not in sources]
    if missing:
        raise ForeignStoreError(path, name, f"columns {missing} are not in its table")
    schema: dict[str, ColumnKind] = {}
    if name in own_schema:
        schema = _schema_kinds(path, name, own_schema[name])
    else:
        cox = _pickled(path, name, attrs, "COX_DATA")
        if isinstance(cox, dict) and isinstance(cox.get("schema"), dict):
            schema = _schema_kinds(path, name, cox["schema"])
    kinds: list[ColumnKind] = []
    values: list[list[Any]] = []
    for column in order:
        source, slot = sources[column]
        raw = data[source]
        if slot is not None:
            raw = raw[:, slot] if raw.ndim == 2 else raw
        declared = _text(_raw(targs, f"{source}_dtype"))
        kind = schema.get(column) or _from_dtype(raw, declared)
        if raw.dtype.kind not in "fiubSO":
            raise ForeignStoreError(path, name, f"column {column!r} has an unsupported type {raw.dtype}")
        kinds.append(kind)
        values.append(_column(raw, kind, encoding))
    return H5Table(name, order, kinds, values, total)


def read_store_h5(path: str, *, pick: RowPicker | None = None) -> dict[str, H5Table]:
    """Read every table of ``path`` without unpickling anything but plain data (see the module docstring).

    Args:
        path: A ``store.h5``.
        pick: Read only these rows of each table (given its name and row count, a slice); default all. A
            listing reads the last row of each table this way, whatever the tables' length.

    Returns:
        ``{table name: H5Table}``.

    Raises:
        CorruptStoreError: The file is not readable HDF5.
        ForeignStoreError: A table is in a layout that cannot be read without running code.
    """
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise CorruptStoreError(path, 0, f"not a readable HDF5 file ({exc})") from exc
    with h5:
        own_schema: dict[str, Any] = {}
        text = _text(_raw(h5.attrs, "unitrack_schema"))
        if text:
            try:
                loaded = json.loads(text)
            except ValueError:
                logger.warning("%s: its unitrack_schema attribute is not JSON; kinds read from dtypes", path)
            else:
                if isinstance(loaded, dict):
                    own_schema = loaded
        tables: dict[str, H5Table] = {}
        for name in sorted(h5.keys()):
            try:
                group = h5[name]
            except (OSError, KeyError, ValueError) as exc:
                raise CorruptStoreError(path, 0, f"node /{name} cannot be opened ({exc})") from exc
            if not hasattr(group, "keys"):
                raise ForeignStoreError(path, name, "it is a bare array, not a pandas table")
            tables[name] = _read_table(path, name, group, own_schema, pick)
        for name, schema in own_schema.items():  # unitrack keeps tables without rows in its schema only
            if name not in tables:
                kinds = _schema_kinds(path, name, schema)
                tables[name] = H5Table(name, list(kinds), list(kinds.values()), [[] for _ in kinds], 0)
        return tables
