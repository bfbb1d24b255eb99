"""A store's table: one schema, one staged working row, rows appended to the store's journal."""

from __future__ import annotations

import array
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unitrack.errors import ReadOnlyStoreError, SchemaError
from unitrack.store.hdf5 import APPEND_ROWS
from unitrack.store.journal import REC_ROW, RowCodec, update_widths
from unitrack.store.names import validate_hdf5_name, validate_name
from unitrack.store.schema import ColumnKind, Converter, make_converter, parse_schema
from unitrack.store.serialization import (
    load_pickle,
    load_torch_state,
    obj_to_string,
    save_pickle,
    save_torch_state,
    string_to_obj,
)

if TYPE_CHECKING:
    import pandas as pd

    from unitrack.store.store import Store

__all__ = ["Table"]

# Compact in-memory columns for decoded numbers (array typecode, and the numpy dtype to view it as).
_ARRAY_CODES = {ColumnKind.FLOAT: "d", ColumnKind.INT: "q", ColumnKind.BOOL: "b"}
_ARRAY_DTYPES = {ColumnKind.FLOAT: np.float64, ColumnKind.INT: np.int64, ColumnKind.BOOL: np.bool_}

_EXACT_TYPES: dict[ColumnKind, type] = {ColumnKind.FLOAT: float, ColumnKind.STR: str, ColumnKind.BOOL: bool}

logger = logging.getLogger(__name__)


class Table:
    """One table of a :class:`~unitrack.store.Store`, written row by row.

    Tables are made by :meth:`Store.add_table`; the constructor keeps cox's signature.

    Args:
        name: The table's name.
        schema: ``{column: type}`` (see :class:`~unitrack.store.Store`).
        table_obj_dir: The folder of PICKLE and PYTORCH_STATE objects (``.table_objects``).
        store: The parent store.
        has_initialized: Kept for cox compatibility; unused.

    Example:
        >>> import tempfile
        >>> from unitrack.store import Store
        >>> with Store(tempfile.mkdtemp(), "exp1") as store:
        ...     table = store.add_table("train", {"epoch": int, "loss": float})
        ...     table.append_row({"epoch": 0, "loss": 0.5})
        ...     table.nrows
        Logging in: .../exp1
        1
    """

    def __init__(
        self,
        name: str,
        schema: Mapping[str, Any],
        table_obj_dir: str,
        store: Store,
        has_initialized: bool = False,
    ) -> None:
        self._name = validate_hdf5_name("table", validate_name("table", name))
        kinds = parse_schema(name, schema)
        self._schema = {column: kind.schema_type for column, kind in kinds.items()}
        self._columns = list(kinds)
        self._kinds = list(kinds.values())
        self._obj_dir = table_obj_dir
        self._store = store
        self._row: dict[str, Any] = {}
        self._converters: dict[str, Converter] = {}
        for column, kind in kinds.items():
            self._converters[column] = self._serializer(column, kind)
        self._converter_list = [self._converters[column] for column in self._columns]
        # The Python type of each column when a value of exactly that type is stored as it is (float, str,
        # bool), or None when some column always needs its converter (int: range check; serialized kinds).
        exact = [_EXACT_TYPES.get(kind) for kind in self._kinds]
        self._exact_types = tuple(exact) if all(t is not None for t in exact) else None
        self._codec: RowCodec | None = None
        self._fixed_rows = bytearray()
        self._rows: list[bytes] = []
        self._decoded: list[Any] | None = None  # columns decoded so far (tables with text columns)
        self._decoded_rows = 0
        self._nrows = 0
        #: The longest UTF-8 text of each column, in bytes: store.h5's string widths, known before its rows are
        #: read again, so store.h5 is built in chunks (#12 item 15).
        self._widths = [0] * len(self._kinds)

    # ------------------------------------------------------------------------------------------ wiring
    def _attach(
        self,
        codec: RowCodec,
        payloads: list[bytes],
        nrows: int | None = None,
        widths: list[int] | None = None,
    ) -> None:
        """Give the table its codec and the rows already in the journal (called by the Store): their payloads
        (kept when the store keeps rows), or only their count and text widths."""
        self._codec = codec
        self._decoded, self._decoded_rows = None, 0
        if not self._store._keep_rows:
            pass  # read back from the journal when asked (see Store keep_rows)
        elif codec.is_fixed:
            self._fixed_rows = bytearray(b"".join(payloads))
        else:
            self._rows = list(payloads)
        self._nrows = len(payloads) if nrows is None else nrows
        self._widths = [0] * len(codec.kinds)
        if widths is not None:
            self._widths = list(widths)
        else:
            update_widths(codec, self._widths, payloads)

    def _serializer(self, column: str, kind: ColumnKind) -> Converter:
        if kind is ColumnKind.OBJECT:
            return obj_to_string
        fsync = self._store.fsync
        if kind is ColumnKind.PICKLE:
            return lambda value: save_pickle(self._obj_dir, value, fsync=fsync)
        if kind is ColumnKind.PYTORCH_STATE:
            return lambda value: save_torch_state(self._obj_dir, value, fsync=fsync)
        return make_converter(self._name, column, kind)

    @property
    def kinds(self) -> dict[str, ColumnKind]:
        """The kind of every column, in schema order."""
        return dict(zip(self._columns, self._kinds, strict=True))

    # ------------------------------------------------------------------------------------------ writing
    def update_row(self, data: Mapping[str, Any]) -> None:
        """Stage values into the working row; the row is written by :meth:`flush_row`.

        Values are converted when no information is lost (numpy and 0-d torch scalars, ``int`` into a float
        column); serialized columns are serialized now (PICKLE and PYTORCH_STATE files are written).

        Args:
            data: ``{column: value}``; any subset of the columns.

        Raises:
            SchemaError: A key is not a column, or a value does not fit its column. Nothing is staged then.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        if self._store._writer is None:
            raise ReadOnlyStoreError(self._store.path, f"write to table {self._name!r}")
        converters = self._converters
        staged = {}
        for key, value in data.items():
            convert = converters.get(key)
            if convert is None:
                raise self._unknown_column(key)
            staged[key] = convert(value)
        self._row.update(staged)

    def flush_row(self) -> None:
        """Write the working row and start a new, empty one.

        When this returns the row is in the journal: it survives the process being killed.

        Raises:
            SchemaError: A column has no value; nothing is written and the working row is kept.
        """
        row = self._row
        try:
            values = [row[column] for column in self._columns]
        except KeyError:
            missing = [column for column in self._columns if column not in row]
            raise SchemaError(
                f"Table {self._name!r}: no value for column(s) {', '.join(missing)}; nothing was written. "
                "Set them with update_row before flush_row.",
                table=self._name,
                missing=missing,
            ) from None
        codec = self._codec
        if codec is None:  # pragma: no cover - tables are always attached by their store
            raise ReadOnlyStoreError(self._store.path, f"write to table {self._name!r}")
        payload = codec.pack(values)
        store = self._store
        writer = store._writer
        if writer is None:
            raise ReadOnlyStoreError(store.path, f"write to table {self._name!r}")
        writer.append(payload)
        if not codec.is_fixed:
            update_widths(codec, self._widths, [payload])
        if not store._keep_rows:
            pass
        elif codec.is_fixed:
            self._fixed_rows += payload
        else:
            self._rows.append(payload)
        self._nrows += 1
        self._row = {}
        store._rows_since_h5 += 1
        if store._rows_since_h5 >= store._h5_due:
            store._write_h5()

    def append_row(self, data: Mapping[str, Any]) -> None:
        """Write ``data`` as a whole row: :meth:`update_row` then :meth:`flush_row`.

        Args:
            data: ``{column: value}`` with every column.

        Raises:
            SchemaError: A key is unknown, a value does not fit, or a column is missing.
        """
        self.update_row(data)
        self.flush_row()

    def append_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write several whole rows with a single write to the journal.

        Every row is checked and converted before anything is written: a bad row writes none of them.

        Args:
            rows: ``{column: value}`` mappings, each with every column.

        Raises:
            SchemaError: A key is unknown, a value does not fit, or a column is missing.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        columns = self._columns
        values = []
        for data in rows:
            if len(data) != len(columns) or any(column not in data for column in columns):
                unknown = [k for k in data if k not in self._converters]
                if unknown:
                    raise self._unknown_column(unknown[0])
                missing = [column for column in columns if column not in data]
                raise SchemaError(
                    f"Table {self._name!r}: no value for column(s) {', '.join(missing)}; nothing was written.",
                    table=self._name,
                    missing=missing,
                )
            values.append([data[column] for column in columns])
        self.append_tuples(values)

    def append_tuples(self, rows: Sequence[Sequence[Any]]) -> None:
        """Like :meth:`append_rows`, with each row's values in column order (the fast path for many rows).

        Raises:
            SchemaError: A row has the wrong length or a value does not fit; nothing is written.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        payloads = self._pack(rows)
        if payloads:
            self._store._journal().append_many(payloads)
            self._accept(payloads)

    def _pack(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Convert and pack ``rows`` (values in column order) into journal payloads, writing nothing.

        Raises:
            SchemaError: A row has the wrong length or a value does not fit.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        codec = self._codec
        if self._store._writer is None or codec is None:
            raise ReadOnlyStoreError(self._store.path, f"write to table {self._name!r}")
        exact = self._exact_types
        if exact is not None and all(tuple(map(type, row)) == exact for row in rows):
            # Values of exactly the column types need no conversion (the common case: a metrics table's floats
            # and names). Text that cannot be encoded is left to the converters below, which name the column.
            try:
                return self._pack_exact(rows)
            except UnicodeEncodeError:
                pass
        converters = self._converter_list
        width = len(converters)
        payloads = []
        for row in rows:
            if len(row) != width:
                raise SchemaError(
                    f"Table {self._name!r}: a row has {len(row)} values for {width} columns "
                    f"({', '.join(self._columns)}); nothing was written.",
                    table=self._name,
                )
            payloads.append(codec.pack([convert(v) for convert, v in zip(converters, row)]))  # noqa: B905 - checked
        return payloads

    def _pack_exact(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Pack rows the caller built with exactly the column types (float, int within int64, bool, str that
        encodes as UTF-8): nothing is converted or checked. For writers that check their values first (the
        ``hdf5://`` backend's metric points); anyone else uses :meth:`_pack`."""
        codec = self._codec
        if self._store._writer is None or codec is None:
            raise ReadOnlyStoreError(self._store.path, f"write to table {self._name!r}")
        at = codec.single_text
        if at is None:
            return [codec.pack(list(row)) for row in rows]
        struct_pack, rec, tid = codec.struct.pack, REC_ROW, codec.table_id
        payloads = []
        for row in rows:
            values = list(row)
            text = values[at].encode("utf-8")
            values[at] = len(text)
            payloads.append(struct_pack(rec, tid, *values) + text)
        return payloads

    def _accept(self, payloads: list[bytes]) -> None:
        """Take rows the store has just written to the journal into the table (and rebuild store.h5 when due)."""
        store = self._store
        codec = self._codec
        if codec is not None and not codec.is_fixed:
            update_widths(codec, self._widths, payloads)
        if not store._keep_rows:
            pass
        elif codec is not None and codec.is_fixed:
            self._fixed_rows += b"".join(payloads)
        else:
            self._rows.extend(payloads)
        self._nrows += len(payloads)
        store._rows_since_h5 += len(payloads)
        if store._rows_since_h5 >= store._h5_due:
            store._write_h5()

    def _unknown_column(self, key: object) -> SchemaError:
        return SchemaError(
            f"Table {self._name!r} has no column {key!r}; declared: {', '.join(sorted(self._columns))}. "
            "Declare it in the schema or drop the key.",
            table=self._name,
            column=str(key),
            declared=sorted(self._columns),
        )

    # ------------------------------------------------------------------------------------------ reading
    def _column_values(self, payloads: list[bytes] | None = None) -> list[Any]:
        """Decode every row into one array or list per column.

        Rows of tables with text columns are decoded once and kept as columns (numbers in compact arrays,
        repeated strings shared), so rebuilding ``store.h5`` as a table grows costs O(new rows) in Python. A
        store that keeps no rows reads them from its journal (or takes ``payloads``, read by the caller).
        """
        codec = self._codec
        if codec is None:  # pragma: no cover
            return [[] for _ in self._columns]
        if not self._store._keep_rows:
            rows = self._store._table_payloads(self._name) if payloads is None else payloads
            return codec.decode(b"".join(rows) if codec.is_fixed else rows)
        if codec.is_fixed:
            return codec.decode(bytes(self._fixed_rows))
        decoded = self._decode_kept()
        return [
            np.frombuffer(column, dtype=_ARRAY_DTYPES[kind]).copy() if kind in _ARRAY_CODES else list(column)
            for column, kind in zip(decoded, codec.kinds, strict=True)
        ]

    def _decode_kept(self) -> list[Any]:
        """The kept rows of a table with text columns, decoded into compact columns (new rows only)."""
        codec = self._codec
        assert codec is not None  # attached by the store before any row
        if self._decoded is None:
            self._decoded = [
                array.array(_ARRAY_CODES[kind]) if kind in _ARRAY_CODES else [] for kind in codec.kinds
            ]
        decoded = self._decoded
        new = self._rows[self._decoded_rows :]
        if new:
            for column, values, kind in zip(decoded, codec.decode(new), codec.kinds, strict=True):
                if kind in _ARRAY_CODES:
                    column.frombytes(np.asarray(values, dtype=_ARRAY_DTYPES[kind]).tobytes())
                else:
                    column.extend(values)
            self._decoded_rows = len(self._rows)
        return decoded

    def _h5_chunks(self) -> Iterator[tuple[int, list[Any]]]:
        """The kept rows as ``(count, columns)``, a slice of rows at a time (for store.h5: no copy of the whole
        table)."""
        codec = self._codec
        if codec is None or not self._nrows:
            return
        nrows = self._nrows
        if codec.is_fixed:
            size = codec.fixed_size
            for start in range(0, nrows, APPEND_ROWS):
                count = min(APPEND_ROWS, nrows - start)
                yield count, codec.decode(bytes(self._fixed_rows[start * size : (start + count) * size]))
            return
        columns = self._decode_kept()
        for start in range(0, nrows, APPEND_ROWS):
            count = min(APPEND_ROWS, nrows - start)
            # Copies of each slice: no view of the arrays stays exported (they grow in place) across a yield.
            yield (
                count,
                [
                    np.frombuffer(
                        column, dtype=_ARRAY_DTYPES[kind], count=count, offset=start * column.itemsize
                    ).copy()
                    if kind in _ARRAY_CODES
                    else column[start : start + count]
                    for column, kind in zip(columns, codec.kinds, strict=True)
                ],
            )

    def iter_rows(self) -> Iterator[tuple[Any, ...]]:
        """Yield every flushed row as a tuple in column order (serialized columns hold their text or ids)."""
        codec = self._codec
        if codec is None:  # pragma: no cover
            return
        if not self._store._keep_rows:
            for payloads in self._store._journal_batches(self._name):
                yield from map(codec.unpack, payloads)
        elif codec.is_fixed:
            raw = bytes(self._fixed_rows)
            size = len(raw) // self._nrows if self._nrows else 0
            for start in range(0, len(raw), size or 1):
                yield codec.unpack(raw[start : start + size])
        else:
            for payload in self._rows:
                yield codec.unpack(payload)

    @property
    def df(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (serialized columns hold their text or ids)."""
        from unitrack.store.frames import frame_from_columns

        return frame_from_columns(self._columns, self._kinds, self._column_values())

    @property
    def nrows(self) -> int:
        """How many rows were flushed."""
        return self._nrows

    @property
    def schema(self) -> dict[str, Any]:
        """A copy of the schema ``{column: type}``."""
        return dict(self._schema)

    @property
    def name(self) -> str:
        """The table's name."""
        return self._name

    def get_object(self, s: str) -> Any:
        """Decode an OBJECT cell. This runs dill: only use it on stores you trust."""
        return string_to_obj(s)

    def get_pickle(self, uid: str) -> Any:
        """Load a PICKLE object by the id in its cell. This runs dill: only use it on stores you trust.

        Raises:
            InvalidNameError: The id is malformed (it could point outside ``.table_objects``).
            NotFoundError: No such object.
        """
        return load_pickle(self._obj_dir, uid)

    def get_state_dict(self, uid: str, **kwargs: Any) -> Any:
        """Load a PYTORCH_STATE object with ``torch.load(weights_only=True)``.

        Args:
            uid: The id in the cell.
            **kwargs: Passed to ``torch.load`` (e.g. ``map_location``).

        Raises:
            InvalidNameError: The id is malformed.
            NotFoundError: No such object.
        """
        return load_torch_state(self._obj_dir, uid, **kwargs)

    get_pytorch_state = get_state_dict

    def __str__(self) -> str:
        return str(self.df)

    def __repr__(self) -> str:
        return f"Table({self._name!r}, nrows={self._nrows}, columns={self._columns})"


def objects_dir(store_path: str) -> str:
    """The ``.table_objects`` folder of a store."""
    return os.path.join(store_path, ".table_objects")
