"""The cox Store: one experiment's folder of tables, objects and TensorBoard events.

Layout of ``storage_folder/exp_id``::

    store.journal     every schema and row, CRC-framed, appended as written (the source of truth)
    store.h5          the same tables in pandas "table" format, rewritten atomically in batches and at close
    store.lock        who is writing (the single-writer lock)
    save/  tensorboard/  .table_objects/
"""

from __future__ import annotations

import atexit
import enum
import logging
import os
import sys
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from unitrack.errors import (
    AlreadyExistsError,
    ConfigError,
    NotFoundError,
    ReadOnlyStoreError,
    SchemaError,
    StorageError,
    TableNotFoundError,
)
from unitrack.store.contents import (
    H5_NAME,
    JOURNAL_NAME,
    LOCK_NAME,
    OBJECTS_DIR,
    h5_only_rows,
    load_contents,
)
from unitrack.store.hdf5 import Chunk, H5TableSpec, write_empty_h5, write_h5
from unitrack.store.journal import (
    MAGIC,
    Damage,
    JournalReader,
    JournalWriter,
    RowCodec,
    frame,
    schema_payload,
)
from unitrack.store.lock import StoreLock
from unitrack.store.names import validate_name
from unitrack.store.schema import OBJECT, PICKLE, PYTORCH_STATE, _scalar, schema_from_dict
from unitrack.store.table import Table

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

__all__ = ["OBJECT", "PICKLE", "PYTORCH_STATE", "Mode", "Store", "repair_journal"]

logger = logging.getLogger(__name__)


class Mode(enum.Enum):
    """How a store is opened: ``r`` read only, ``a`` append, ``w`` write (start the store afresh)."""

    READ = "r"
    APPEND = "a"
    WRITE = "w"

    @classmethod
    def parse(cls, mode: str | Mode) -> Mode:
        """Parse ``'r'``, ``'a'`` or ``'w'``.

        Raises:
            ConfigError: Any other value.
        """
        if isinstance(mode, Mode):
            return mode
        for member in cls:
            if mode == member.value:
                return member
        raise ConfigError(
            f"Invalid store mode {mode!r}; use 'r' (read), 'a' (append) or 'w' (write).", mode=mode
        )


_open_writers: weakref.WeakSet[Store] | None = None


def _track_open(store: Store) -> None:
    """Remember a writing Store, so stores their scripts never closed (as cox's walkthroughs do) still get an
    up-to-date store.h5 when the interpreter exits."""
    global _open_writers
    if _open_writers is None:
        _open_writers = weakref.WeakSet()
        atexit.register(_at_exit)
    _open_writers.add(store)


def _at_exit() -> None:
    for store in list(_open_writers or ()):
        try:
            store.close()
        except (OSError, StorageError) as exc:
            logger.error("closing store %s at exit failed: %s", store.path, exc)


#: Rows after which a store with ``h5_every_rows=None`` would rebuild store.h5: never reached.
_NEVER = 1 << 62


class Store:
    """Save an experiment's tables, objects and TensorBoard events in ``storage_folder/exp_id``.

    Rows are appended to a CRC-framed journal with one ``os.write`` each, so a row is durable against SIGKILL
    as soon as ``flush_row``/``append_row`` returns. ``store.h5`` is rebuilt from the rows every
    ``h5_every_rows`` rows (the interval doubles as the table grows) and at :meth:`close`, by writing a new file
    and renaming it, so it is always a complete file that ``pandas.read_hdf`` opens.

    Args:
        storage_folder: The parent folder of the store.
        exp_id: The store's folder name; a new uuid4 by default.
        new: Refuse to open a store that already exists.
        mode: ``'a'`` append (default), ``'r'`` read only (creates nothing, no TensorBoard writer, no lock),
            ``'w'`` write: start the store afresh, dropping its tables.
        fsync: Also ``fsync`` every row, for durability against power loss (slower).
        h5_every_rows: Rebuild ``store.h5`` after this many rows (then after as many rows as it holds); None: only
            at :meth:`close` (for writers that read their rows back from the journal, as every reader here does).
        keep_rows: Keep every row in memory, so ``df`` and ``store.h5`` rebuilds read no file (the default). With
            False a writer's memory stays the same however many rows it writes, and reading a table (``df``,
            ``iter_rows``, ``store.h5`` at close) reads the journal again, in chunks: for long runs that rarely
            read. Opening, writing and closing then need the same memory whatever the journal's length.
        skip_damaged: Read around damaged frames in the middle of the journal (each is skipped, with a warning
            naming the file, offset and size) instead of raising :class:`~unitrack.errors.CorruptStoreError`. A
            writer opened so appends after the last intact frame; the damaged bytes stay in the file.
        quiet: Do not print ``Logging in: <path>`` when the store's folder is created (cox printed it; it is
            the store's one line of console output and goes to ``stream``, not through logging alone).
        stream: Where that line goes (default ``sys.stdout`` at the time of writing).

    Raises:
        InvalidNameError: ``exp_id`` is not a safe folder name (checked before any file is touched).
        AlreadyExistsError: ``new=True`` and the store exists.
        NotFoundError: ``mode='r'`` and the store does not exist.
        StoreLockedError: Another Store object or process is writing this store.
        CorruptStoreError: A frame in the middle of the journal is damaged (the error names the file, the offset
            and where intact frames resume; nothing is changed). A torn tail (an interrupted last write) is
            dropped with a warning, and a frame whose length field alone is damaged is read by its checksum.

    Example:
        >>> import tempfile
        >>> from unitrack.store import Store
        >>> with Store(tempfile.mkdtemp(), "exp1") as store:
        ...     _ = store.add_table("result", {"final_x": float, "final_opt": float})
        ...     store["result"].update_row({"final_x": 3.0})
        ...     store["result"].update_row({"final_opt": 3.9409})
        ...     store["result"].flush_row()
        ...     print(store["result"].df)
        Logging in: .../exp1
           final_x  final_opt
        0      3.0     3.9409
    """

    OBJECT = OBJECT
    PICKLE = PICKLE
    PYTORCH_STATE = PYTORCH_STATE

    def __init__(
        self,
        storage_folder: str | os.PathLike[str],
        exp_id: str | None = None,
        new: bool = False,
        mode: str = "a",
        *,
        fsync: bool = False,
        h5_every_rows: int | None = 10_000,
        keep_rows: bool = True,
        skip_damaged: bool = False,
        quiet: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self._keep_rows = bool(keep_rows) or Mode.parse(mode) is Mode.READ
        self._skip_damaged = bool(skip_damaged)
        self._writer: JournalWriter | None = None
        self._lock: StoreLock | None = None
        self._tb: SummaryWriter | None = None
        self._closed = False
        self.tables: dict[str, Table] = {}
        self._codecs: dict[str, RowCodec] = {}
        self._rows_since_h5 = 0
        self._tables_since_h5 = False
        self._h5_due = 1 << 62
        self._mode = Mode.parse(mode)
        if exp_id is None:
            exp_id = str(uuid.uuid4())
        self.exp_id = validate_name("exp_id", exp_id)
        if h5_every_rows is not None and (
            not isinstance(h5_every_rows, int) or isinstance(h5_every_rows, bool) or h5_every_rows < 1
        ):
            raise ConfigError(f"h5_every_rows must be a positive int or None, not {h5_every_rows!r}.")
        self.fsync = bool(fsync)
        self._h5_every_rows = _NEVER if h5_every_rows is None else h5_every_rows
        self.path = os.path.abspath(os.path.join(os.fspath(storage_folder), self.exp_id))
        self.save_dir = os.path.join(self.path, "save")
        self.tb_dir = os.path.join(self.path, "tensorboard")
        self._obj_dir = os.path.join(self.path, OBJECTS_DIR)
        self._journal_path = os.path.join(self.path, JOURNAL_NAME)
        self._h5_path = os.path.join(self.path, H5_NAME)

        exists = os.path.isdir(self.path)
        if new and exists:
            raise AlreadyExistsError(
                f"Store {self.path} already exists and new=True. Pick another exp_id or drop new=True.",
                path=self.path,
            )
        if self._mode is Mode.READ:
            if not exists:
                raise NotFoundError(f"No store at {self.path} (mode='r' creates nothing).", path=self.path)
            self._load(load_contents(self.path, skip_damaged=self._skip_damaged))
            return

        created = not exists
        for folder in (self.path, self.save_dir, self.tb_dir, self._obj_dir):
            os.makedirs(folder, exist_ok=True)
        if created:
            logger.info("Logging in: %s", self.path)
            if not quiet:
                (stream or sys.stdout).write(f"Logging in: {self.path}\n")
        self._lock = StoreLock(os.path.join(self.path, LOCK_NAME), self.path)
        try:
            self._open_writer(created)
        except BaseException:
            self._lock.release()
            self._lock = None
            raise
        _track_open(self)

    def _open_writer(self, created: bool) -> None:
        # We hold the lock, so any temporary store.h5 left here belongs to a writer that was killed.
        for entry in os.listdir(self.path):
            if entry.startswith(f".{H5_NAME}.") and entry.endswith(".tmp"):
                os.unlink(os.path.join(self.path, entry))
        if self._mode is Mode.WRITE:
            self._reset_journal()
        contents = load_contents(
            self.path, holds_lock=True, skip_damaged=self._skip_damaged, keep_payloads=self._keep_rows
        )
        if contents.valid_end == 0 and contents.tables:
            # A cox store without a journal: start a journal holding its rows, then append to it.
            self._writer = JournalWriter(self._journal_path, 0, fsync=self.fsync)
            for table in contents.tables.values():
                codec = table.codec
                self._writer.append_many(
                    [schema_payload(table.name, codec.table_id, codec.columns, codec.kinds), *table.payloads]
                )
        else:
            self._writer = JournalWriter(self._journal_path, contents.valid_end, fsync=self.fsync)
            if not created and self._mode is not Mode.WRITE and self._take_h5_only_rows(contents):
                contents = load_contents(
                    self.path, holds_lock=True, skip_damaged=self._skip_damaged, keep_payloads=self._keep_rows
                )
        self._load(contents)
        total = sum(t.nrows for t in self.tables.values())
        self._h5_due = max(self._h5_every_rows, total)
        if created or not os.path.exists(self._h5_path):
            # A complete store.h5 from the start, so pandas tooling never finds a missing or partial file.
            write_empty_h5(self._h5_path)
        # An existing store.h5 may predate rows in the journal (a writer killed before closing): rebuild it.
        self._tables_since_h5 = not created

    def _take_h5_only_rows(self, contents: Any) -> bool:
        """Append to the journal the rows another tool (cox) appended to ``store.h5`` (see
        :func:`~unitrack.store.contents.h5_only_rows`); a ``store.h5`` whose rows cannot be taken is kept aside as
        ``store.h5.kept-<n>`` (with a warning) before it is rebuilt. Returns whether the journal grew."""
        try:
            records = h5_only_rows(self.path, contents)
        except StorageError as exc:
            n = 1
            while os.path.exists(f"{self._h5_path}.kept-{n}"):
                n += 1
            os.replace(self._h5_path, f"{self._h5_path}.kept-{n}")
            logger.warning("%s; kept as %s.kept-%d, store.h5 is rebuilt from the journal", exc, H5_NAME, n)
            return False
        if not records:
            return False
        assert self._writer is not None  # opened just before
        self._writer.append_many(records)
        logger.info("%s: took %d record(s) appended to store.h5 by another tool", self.path, len(records))
        return True

    def _reset_journal(self) -> None:
        tmp = self._journal_path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
        os.replace(tmp, self._journal_path)

    def _load(self, contents: Any) -> None:
        for name, jtable in contents.tables.items():
            codec = jtable.codec
            schema = {c: k.schema_type for c, k in zip(codec.columns, codec.kinds, strict=True)}
            table = Table(name, schema, self._obj_dir, self)
            table._attach(codec, jtable.payloads, jtable.nrows, jtable.widths)
            self.tables[name] = table
            self._codecs[name] = codec

    # ------------------------------------------------------------------------------------------ tables
    def add_table(self, table_name: str, schema: Mapping[str, Any]) -> Table:
        """Add a table; its schema is saved at once, even before the first row.

        Adding a table that exists with the same schema returns it (so a script can reopen its store).

        Args:
            table_name: The table's name.
            schema: ``{column: type}`` with types ``int``, ``float``, ``str``, ``bool``, ``Store.OBJECT``,
                ``Store.PICKLE`` or ``Store.PYTORCH_STATE``.

        Returns:
            The new table.

        Raises:
            InvalidNameError: A table or column name is unsafe.
            SchemaError: A type is unsupported, or the table exists with another schema.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        validate_name("table", table_name)
        table = Table(table_name, schema, self._obj_dir, self)
        existing = self.tables.get(table_name)
        if existing is not None:
            if existing.kinds == table.kinds:
                return existing
            raise SchemaError(
                f"Table {table_name!r} already exists in {self.path} with schema {existing.kinds}; "
                f"cannot add it again with {table.kinds}. Use another name.",
                table=table_name,
            )
        writer = self._writer
        if writer is None:
            raise ReadOnlyStoreError(self.path, f"add table {table_name!r}")
        table_id = max((c.table_id for c in self._codecs.values()), default=-1) + 1
        if table_id > 0xFFFF:
            raise StorageError(f"Store {self.path} cannot hold more than 65536 tables.", path=self.path)
        columns, kinds = list(table.kinds), list(table.kinds.values())
        codec = RowCodec(table_id, columns, kinds)
        writer.append(schema_payload(table_name, table_id, columns, kinds))
        table._attach(codec, [])
        self._tables_since_h5 = True
        self.tables[table_name] = table
        self._codecs[table_name] = codec
        return table

    def append_many(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        """Append rows to several tables with one journal write: all of them are durable, or none is.

        Args:
            rows: ``{table name: rows}``, each row's values in column order (as :meth:`Table.append_tuples`).

        Raises:
            TableNotFoundError: A table does not exist; nothing is written.
            SchemaError: A row has the wrong length or a value does not fit; nothing is written.
            ReadOnlyStoreError: The store was opened with ``mode='r'``.

        Example:
            >>> import tempfile
            >>> with Store(tempfile.mkdtemp(), "exp1") as store:
            ...     _ = store.add_table("metrics", {"step": int, "loss": float})
            ...     _ = store.add_table("events", {"what": str})
            ...     store.append_many({"metrics": [(1, 0.5), (2, 0.25)], "events": [("checkpoint",)]})
            ...     store["metrics"].nrows, store["events"].nrows
            Logging in: .../exp1
            (2, 1)
        """
        tables = self.tables
        if not rows.keys() <= tables.keys():  # every table exists before anything is packed
            missing = next(name for name in rows if name not in tables)
            raise TableNotFoundError(str(missing), self.path, list(tables))
        self._write_packed(
            [(tables[name], tables[name]._pack(table_rows)) for name, table_rows in rows.items()]
        )

    def _append_exact(self, rows: Mapping[str, Sequence[Sequence[Any]]]) -> None:
        """:meth:`append_many` for rows of exactly the column types, already checked by the caller (see
        :meth:`Table._pack_exact`): one journal write, no conversion."""
        tables = self.tables
        self._write_packed(
            [(tables[name], tables[name]._pack_exact(table_rows)) for name, table_rows in rows.items()]
        )

    def _write_packed(self, packed: list[tuple[Table, list[bytes]]]) -> bytes:
        """Write every table's packed rows with one journal write, then hand each table its rows.

        Returns:
            The bytes written: each row's frame, in the order given.
        """
        everything = [payload for _, payloads in packed for payload in payloads]
        if not everything:
            return b""
        data = self._journal().append_many(everything)
        for table, payloads in packed:
            if payloads:
                table._accept(payloads)
        return data

    def _journal_batches(self, name: str | None = None) -> Iterator[Any]:
        """The rows of the journal a chunk at a time (for a store that keeps no rows in memory): lists of one
        table's payloads when ``name`` is given, else ``(name, payloads)`` pairs."""
        reader = JournalReader(self._journal_path, writer_alive=True, skip_damaged=self._skip_damaged)
        for batch in reader.batches():
            for jtable, payloads in batch:
                if name is None:
                    yield jtable.name, payloads
                elif jtable.name == name:
                    yield payloads
            batch.clear()  # not held while the next chunk is read

    def _table_payloads(self, name: str) -> list[bytes]:
        """Every row payload of one table, read from the journal."""
        return [payload for payloads in self._journal_batches(name) for payload in payloads]

    def _journal(self) -> JournalWriter:
        writer = self._writer
        if writer is None:
            raise ReadOnlyStoreError(self.path, "write rows")
        return writer

    def add_table_like_example(
        self, table_name: str, example: Mapping[str, Any], alternative: str = OBJECT
    ) -> Table:
        """Add a table whose column types are those of the values in ``example``.

        Args:
            table_name: The table's name.
            example: An example row.
            alternative: How to store columns holding other Python objects (OBJECT, PICKLE or PYTORCH_STATE).

        Returns:
            The new table.
        """
        return self.add_table(table_name, schema_from_dict(example, alternative=alternative))

    def get_table(self, table_id: str) -> Table:
        """Return the table named ``table_id``.

        Raises:
            TableNotFoundError: No such table (also a ``KeyError``).
        """
        table = self.tables.get(table_id)
        if table is None:
            raise TableNotFoundError(str(table_id), self.path, list(self.tables))
        return table

    __getitem__ = get_table

    @property
    def keys(self) -> list[str]:
        """The tables' HDF5 keys, as cox listed them (``'/name'``)."""
        return ["/" + name for name in self.tables]

    # ------------------------------------------------------------------------------------------ tensorboard
    @property
    def tensorboard(self) -> SummaryWriter:
        """The tensorboardX ``SummaryWriter`` on ``<store>/tensorboard``, created on first use.

        Raises:
            ReadOnlyStoreError: The store was opened with ``mode='r'``.
        """
        if self._tb is None:
            if self._writer is None:
                raise ReadOnlyStoreError(self.path, "write TensorBoard events")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.tb_dir)
        return self._tb

    @property
    def writer(self) -> SummaryWriter:
        """Alias of :attr:`tensorboard` (the name walkthrough 2 uses)."""
        return self.tensorboard

    def log_table_and_tb(
        self, table_name: str, update_dict: Mapping[str, Any], summary_type: str = "scalar"
    ) -> None:
        """Stage values in a table's working row and log them to TensorBoard as ``<table>/<column>``.

        The TensorBoard step is the table's ``nrows``. The row is not flushed.

        Args:
            table_name: The table.
            update_dict: ``{column: value}``.
            summary_type: The ``SummaryWriter.add_<summary_type>`` method to use.

        Raises:
            TableNotFoundError: No such table.
            SchemaError: A key or value does not fit the table (nothing is logged then).
            ConfigError: The writer has no ``add_<summary_type>`` method.
        """
        table = self.get_table(table_name)
        add = getattr(self.tensorboard, f"add_{summary_type}", None)
        if add is None or not isinstance(summary_type, str) or not summary_type.isidentifier():
            raise ConfigError(
                f"Unknown TensorBoard summary type {summary_type!r} (e.g. 'scalar', 'histogram')."
            )
        step = table.nrows
        table.update_row(update_dict)
        for column, value in update_dict.items():
            add(f"{table_name}/{column}", _scalar(value), global_step=step)

    # ------------------------------------------------------------------------------------------ lifecycle
    def _write_h5(self) -> None:
        """Rebuild ``store.h5`` from the rows (write new, fsync, rename), a chunk of rows at a time."""
        tables = [
            H5TableSpec(name, table._columns, table._kinds, table.nrows, table._widths)
            for name, table in self.tables.items()
        ]
        write_h5(self._h5_path, tables, self._h5_chunks())
        total = sum(t.nrows for t in self.tables.values())
        self._rows_since_h5 = 0
        self._tables_since_h5 = False
        self._h5_due = max(self._h5_every_rows, total)

    def _h5_chunks(self) -> Iterator[Chunk]:
        """Every table's rows as columns, a chunk at a time: from memory, or read from the journal."""
        if self._keep_rows:
            for name, table in self.tables.items():
                for count, values in table._h5_chunks():
                    yield name, count, values
            return
        for name, payloads in self._journal_batches():
            codec = self._codecs[name]
            rows = b"".join(payloads) if codec.is_fixed else payloads
            yield name, len(payloads), codec.decode(rows, raw_text=True)

    def close(self, rebuild_h5: bool = True) -> None:
        """Write ``store.h5``, close the journal and TensorBoard writer, and release the lock (idempotent).

        Args:
            rebuild_h5: Rebuild ``store.h5`` when rows or tables were added since it was last written. With
                False the journal alone holds them (every reader here reads it) until the next writer closes.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None and rebuild_h5 and (self._rows_since_h5 or self._tables_since_h5):
                self._write_h5()
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Garbage collection can run anywhere, even inside another ast.parse (rebuilding store.h5 parses numpy
        # dtype strings with ast.literal_eval, and a nested parse corrupts CPython 3.11's AST state), so only
        # release here; the journal already holds every row, and store.h5 is rebuilt at exit (see _at_exit).
        if getattr(self, "_closed", True) or getattr(self, "_writer", None) is None:
            return
        try:
            self.close(rebuild_h5=False)
        except (OSError, StorageError) as exc:
            logger.error("closing store %s on garbage collection failed: %s", self.path, exc)

    def __str__(self) -> str:
        return "".join(f"-- Table: {name} --\n{table}\n" for name, table in self.tables.items())

    def __repr__(self) -> str:
        return f"Store({self.path!r}, mode={self._mode.value!r}, tables={list(self.tables)})"


def repair_journal(storage_folder: str | os.PathLike[str], exp_id: str) -> list[Damage]:
    """Rewrite a store's journal with every intact frame and without its damaged bytes.

    For a journal that raises :class:`~unitrack.errors.CorruptStoreError`: the rows of every intact frame are
    kept (a frame whose length field alone is damaged is restored by its checksum), the damaged stretches are
    dropped, and the damaged file is kept beside the new one as ``store.journal.damaged-<n>``. ``store.h5`` is
    rebuilt by the next writer that closes the store.

    Args:
        storage_folder: The parent folder of the store.
        exp_id: The store's folder name.

    Returns:
        The damaged stretches dropped (empty, and nothing changed, when the journal had none).

    Raises:
        NotFoundError: The store has no journal.
        StoreLockedError: A writer holds the store.
        CorruptStoreError: The file is not a journal at all.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with Store(folder, "exp1", quiet=True) as store:
        ...     store.add_table("t", {"x": float}).append_row({"x": 1.0})
        >>> repair_journal(folder, "exp1")  # an intact journal is left alone
        []
    """
    path = os.path.abspath(os.path.join(os.fspath(storage_folder), validate_name("exp_id", exp_id)))
    journal = os.path.join(path, JOURNAL_NAME)
    if not os.path.isfile(journal):
        raise NotFoundError(f"No journal at {journal}; nothing to repair.", path=journal)
    lock = StoreLock(os.path.join(path, LOCK_NAME), path)
    tmp = journal + ".repair.tmp"
    try:
        reader = JournalReader(journal, skip_damaged=True)
        written: set[int] = set()
        with open(tmp, "wb") as out:
            out.write(MAGIC)
            for batch in reader.batches():
                for table, payloads in batch:
                    if id(table) not in written:
                        written.add(id(table))
                        codec = table.codec
                        out.write(
                            frame(schema_payload(table.name, codec.table_id, codec.columns, codec.kinds))
                        )
                    out.write(b"".join(map(frame, payloads)))
            for table in reader.tables.values():  # tables without rows
                if id(table) not in written:
                    codec = table.codec
                    out.write(frame(schema_payload(table.name, codec.table_id, codec.columns, codec.kinds)))
            out.flush()
            os.fsync(out.fileno())
        if not (reader.damaged or reader.recovered or reader.torn_at is not None):
            os.unlink(tmp)
            return []
        n = 0
        while os.path.exists(f"{journal}.damaged-{n}"):
            n += 1
        os.link(journal, f"{journal}.damaged-{n}")
        os.replace(tmp, journal)
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        logger.warning(
            "%s: rewritten without %d damaged stretch(es); the damaged file is kept as %s.damaged-%d",
            journal,
            len(reader.damaged),
            journal,
            n,
        )
        return list(reader.damaged)
    except OSError as exc:
        raise StorageError(f"Could not repair {journal}: {exc}", path=journal) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        lock.release()
