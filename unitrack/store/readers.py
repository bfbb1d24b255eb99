"""Read one table from every store of a folder into one DataFrame (cox's ``CollectionReader``).

With ``mode='r'`` (the default) no Store is opened and no lock is taken: each store's journal is read and
checked directly, and the rows of all stores are concatenated column by column before one DataFrame is built,
so reading a thousand stores costs about as much as reading one big table.

OBJECT and PICKLE cells are decoded only with ``df(..., trusted=True)``: decoding runs dill on whatever the
store holds (SEED_NOTES S1). Without it they stay serialized and one warning says how to opt in.

Stores written by cox itself (a ``store.h5`` and no journal) are read too, by :mod:`unitrack.store.h5read`,
which unpickles nothing but plain data (pandas' HDF5 attributes are pickles): their column kinds, OBJECT,
PICKLE and PYTORCH_STATE included, come from cox's own schema attribute.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from unitrack.errors import NotFoundError, SchemaError, StorageError
from unitrack.store.contents import JOURNAL_NAME, OBJECTS_DIR, is_store_dir, load_contents
from unitrack.store.journal import RowCodec
from unitrack.store.schema import ColumnKind
from unitrack.store.serialization import load_pickle, string_to_obj
from unitrack.store.store import Mode, Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CollectionReader"]

logger = logging.getLogger(__name__)

_NUMERIC = (ColumnKind.FLOAT, ColumnKind.INT, ColumnKind.BOOL)
_DECODED = (ColumnKind.OBJECT, ColumnKind.PICKLE)


class _Part:
    """One store's rows of one table, still encoded."""

    __slots__ = ("codec", "data", "exp_id", "nrows")

    def __init__(self, exp_id: str, codec: RowCodec, data: Any, nrows: int) -> None:
        self.exp_id = exp_id
        self.codec = codec
        self.data = data
        self.nrows = nrows


class CollectionReader:
    """Collect the tables of every store in ``directory``.

    Args:
        directory: A folder whose sub-folders are stores.
        log_warnings: Log a warning for stores lacking a table or with a different schema.
        mode: ``'r'`` reads without opening Stores (no lock); ``'a'``/``'w'`` open each as a writing Store.
            Either way :attr:`stores` is ``{exp_id: Store}`` (in ``'r'`` read-only Stores, opened on first use).
        exp_filter: ``exp_filter(exp_id)`` False excludes the store.
        skip_errs: Skip (and log) stores that cannot be read instead of raising.
        read_cox_h5: Read stores that have only a ``store.h5`` (written by cox, no journal); the default. They
            are read without unpickling anything (see :mod:`unitrack.store.h5read`); False skips them.

    Raises:
        NotFoundError: ``directory`` does not exist.
        CorruptStoreError: A store is damaged and ``skip_errs`` is False.

    Example:
        >>> import tempfile
        >>> from unitrack.store import Store
        >>> out = tempfile.mkdtemp()
        >>> for x in (1.0, 2.0):
        ...     with Store(out, quiet=True) as store:
        ...         store.add_table("result", {"final_x": float}).append_row({"final_x": x})
        >>> reader = CollectionReader(out)
        >>> sorted(reader.df("result")["final_x"].tolist())
        [1.0, 2.0]
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        log_warnings: bool = True,
        mode: str = "r",
        exp_filter: Callable[[str], bool] | None = None,
        skip_errs: bool = False,
        *,
        read_cox_h5: bool = True,
    ) -> None:
        self.directory = os.fspath(directory)
        self.log_warnings = log_warnings
        self._mode = Mode.parse(mode)
        self._stores: dict[str, Store] = {}
        self._parts: dict[str, dict[str, _Part]] = {}
        try:
            entries = sorted(e.name for e in os.scandir(self.directory) if e.is_dir())
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"No folder {self.directory} to read stores from.", path=self.directory
            ) from exc
        for exp_id in entries:
            path = os.path.join(self.directory, exp_id)
            if not is_store_dir(path) or (exp_filter is not None and not exp_filter(exp_id)):
                continue
            if not read_cox_h5 and not os.path.isfile(os.path.join(path, JOURNAL_NAME)):
                continue
            try:
                self._parts[exp_id] = self._read(exp_id, path)
            except (StorageError, SchemaError) as exc:
                if not skip_errs:
                    raise
                logger.warning("Error on exp_id %s, skipped: %s", exp_id, exc)

    def _read(self, exp_id: str, path: str) -> dict[str, _Part]:
        parts: dict[str, _Part] = {}
        if self._mode is Mode.READ:
            for name, table in load_contents(path).tables.items():
                codec = table.codec
                data = b"".join(table.payloads) if codec.is_fixed else table.payloads
                parts[name] = _Part(exp_id, codec, data, len(table.payloads))
            return parts
        store = Store(self.directory, exp_id, mode=self._mode.value)
        self._stores[exp_id] = store
        for name, tab in store.tables.items():
            codec = store._codecs[name]
            data = bytes(tab._fixed_rows) if codec.is_fixed else list(tab._rows)
            parts[name] = _Part(exp_id, codec, data, tab.nrows)
        return parts

    @property
    def stores(self) -> dict[str, Store]:
        """``{exp_id: Store}`` for every store read, as cox gave (read-only Stores in mode ``'r'``)."""
        if self._mode is Mode.READ and len(self._stores) < len(self._parts):
            for exp_id in self._parts:
                if exp_id not in self._stores:
                    self._stores[exp_id] = Store(self.directory, exp_id, mode="r")
        return self._stores

    @property
    def exp_ids(self) -> list[str]:
        """The ids of the stores read."""
        return list(self._parts)

    @property
    def tables(self) -> dict[str, list[str]]:
        """``{table: [exp_id, ...]}`` for every table found."""
        out: dict[str, list[str]] = {}
        for exp_id, parts in self._parts.items():
            for name in parts:
                out.setdefault(name, []).append(exp_id)
        return out

    @property
    def schemas(self) -> dict[str, dict[str, ColumnKind]]:
        """The schema of each table, as in the first store holding it."""
        out: dict[str, dict[str, ColumnKind]] = {}
        for parts in self._parts.values():
            for name, part in parts.items():
                out.setdefault(name, dict(zip(part.codec.columns, part.codec.kinds, strict=True)))
        return out

    def df(
        self,
        key: str,
        append_exp_id: bool = True,
        keep_serialized: Iterable[str] = (),
        union_schemas: bool = False,
        exp_filter: Callable[[str], bool] | None = None,
        skip_errors: bool = False,
        trusted: bool = False,
    ) -> pd.DataFrame:
        """Concatenate table ``key`` of every store into one DataFrame.

        Args:
            key: The table's name.
            append_exp_id: Add an ``exp_id`` column.
            keep_serialized: OBJECT/PICKLE columns never to decode.
            union_schemas: Accept stores whose columns differ, filling missing values; otherwise raise. A column
                must still hold one kind in every store (int and float combine as float).
            exp_filter: ``exp_filter(exp_id)`` False excludes the store.
            skip_errors: Skip stores whose table cannot be read or does not match, instead of raising.
            trusted: Decode OBJECT and PICKLE columns (runs dill on the stores' data; only for stores you trust).

        Returns:
            The rows of all stores, each store's index starting at 0 (as cox did).

        Raises:
            SchemaError: Stores have other columns and ``union_schemas`` is False, or a column holds different
                kinds in different stores (other than int and float); the message names the stores of each kind.
            NotFoundError: No store has the table.
        """
        import pandas as pd

        keep = set(keep_serialized)
        parts: list[_Part] = []
        for exp_id, tables in self._parts.items():
            if exp_filter is not None and not exp_filter(exp_id):
                continue
            part = tables.get(key)
            if part is None:
                if self.log_warnings:
                    logger.warning("exp_id %s has no table %r. Skipping.", exp_id, key)
                continue
            parts.append(part)
        if not parts:
            raise NotFoundError(f"No store in {self.directory} has a table {key!r}.", table=key)

        columns = list(parts[0].codec.columns)
        kinds = dict(zip(parts[0].codec.columns, parts[0].codec.kinds, strict=True))
        accepted: list[_Part] = []
        for part in parts:
            theirs = dict(zip(part.codec.columns, part.codec.kinds, strict=True))
            try:
                kinds = _merge_kinds(key, kinds, theirs, part.exp_id, union_schemas, self.log_warnings, parts)
            except SchemaError:
                if not skip_errors:
                    raise
                logger.warning("exp_id %s: table %r does not match; skipped.", part.exp_id, key)
                continue
            columns += [c for c in part.codec.columns if c not in columns]
            accepted.append(part)

        pieces: dict[str, list[Any]] = {c: [] for c in columns}
        exp_ids: list[str] = []
        counts: list[int] = []
        for part in accepted:
            try:
                values = dict(zip(part.codec.columns, part.codec.decode(part.data), strict=True))
            except ValueError as exc:
                if not skip_errors:
                    raise StorageError(f"Cannot decode table {key!r} of {part.exp_id}: {exc}") from exc
                logger.warning("exp_id %s: cannot decode table %r, skipped: %s", part.exp_id, key, exc)
                continue
            for column in columns:
                col = values.get(column)
                if col is None:
                    col = np.full(part.nrows, np.nan) if kinds[column] in _NUMERIC else [None] * part.nrows
                pieces[column].append(col)
            exp_ids.append(part.exp_id)
            counts.append(part.nrows)

        data: dict[str, Any] = {}
        serialized = []
        for column in columns:
            kind = kinds[column]
            if kind in _NUMERIC:
                data[column] = np.concatenate(pieces[column]) if pieces[column] else np.array([], dtype=float)
                continue
            flat = [v for piece in pieces[column] for v in piece]
            if kind in _DECODED and column not in keep and flat:
                if trusted:
                    data[column] = self._decode(kind, flat, exp_ids, counts)
                    continue
                serialized.append(column)
            data[column] = pd.array(flat, dtype="str")
        if serialized:
            logger.warning(
                "Table %r: column(s) %s hold OBJECT/PICKLE data and were left serialized; decoding runs code "
                "stored in the files. Pass trusted=True to decode them (only for stores you trust), or list "
                "them in keep_serialized.",
                key,
                ", ".join(serialized),
            )
        index = np.concatenate([np.arange(n) for n in counts]) if counts else np.array([], dtype=np.int64)
        frame = pd.DataFrame(data, columns=columns, index=index)
        if append_exp_id:
            frame["exp_id"] = pd.array(np.repeat(np.array(exp_ids, dtype=object), counts), dtype="str")
        return frame

    def _decode(self, kind: ColumnKind, flat: list[Any], exp_ids: list[str], counts: list[int]) -> Any:
        out = np.empty(len(flat), dtype=object)
        if kind is ColumnKind.OBJECT:
            out[:] = [string_to_obj(v) for v in flat]
            return out
        pos = 0
        for exp_id, n in zip(exp_ids, counts, strict=True):
            folder = os.path.join(self.directory, exp_id, OBJECTS_DIR)
            for i in range(pos, pos + n):
                out[i] = None if flat[i] is None else load_pickle(folder, flat[i])
            pos += n
        return out

    def close(self) -> None:
        """Close every Store the reader opened."""
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def __enter__(self) -> CollectionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return "".join(f"-- Table: {name} --\n{list(schema)}\n" for name, schema in self.schemas.items())


def _merge_kinds(
    key: str,
    ours: dict[str, ColumnKind],
    theirs: dict[str, ColumnKind],
    exp_id: str,
    union: bool,
    log_warnings: bool,
    everyone: list[_Part],
) -> dict[str, ColumnKind]:
    merged = dict(ours)
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    if (missing or extra) and not union:
        raise SchemaError(
            f"Table {key!r} of {exp_id} has other columns: missing {missing}, new {extra}. "
            "Pass union_schemas=True to combine them.",
            table=key,
            exp_id=exp_id,
        )
    for column, kind in theirs.items():
        have = merged.get(column)
        if have is None or have is kind:
            merged.setdefault(column, kind)
            continue
        if {have, kind} <= {ColumnKind.INT, ColumnKind.FLOAT}:
            merged[column] = ColumnKind.FLOAT
            continue
        stores: dict[str, list[str]] = {}  # the message names the stores of each kind, among all read
        for part in everyone:
            for name, held in zip(part.codec.columns, part.codec.kinds, strict=True):
                if name == column:
                    stores.setdefault(held.value, []).append(part.exp_id)
        described = " but ".join(f"{k} in {_some(ids)}" for k, ids in stores.items())
        raise SchemaError(
            f"Column {column!r} of table {key!r} is {described}; a column must hold one kind in every store "
            "(only int and float combine), and union_schemas=True does not change that. Pass skip_errors=True "
            "to read only the stores that match the first one read, or exp_filter= to read the stores of each "
            "kind separately.",
            table=key,
            column=column,
            kinds=stores,
            exp_id=exp_id,
        )
    if (missing or extra) and log_warnings:
        logger.warning("exp_id %s: table %r schema differs (missing %s, new %s)", exp_id, key, missing, extra)
    return merged


def _some(exp_ids: list[str], limit: int = 5) -> str:
    """``a, b, c`` or, past ``limit`` names, ``a, b, c, d, e and 7 more``."""
    shown = ", ".join(exp_ids[:limit])
    return f"{shown} and {len(exp_ids) - limit} more" if len(exp_ids) > limit else shown
