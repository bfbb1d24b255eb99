"""Read what a store folder holds, without taking its lock: from the journal, or from a cox ``store.h5``.

A ``store.h5`` without a journal (written by cox or another tool) is read by :mod:`unitrack.store.h5read`,
which never unpickles anything but plain data: opening someone else's folder runs none of their code.
"""

from __future__ import annotations

import logging
import os
import socket

from unitrack.errors import StorageError
from unitrack.store.h5read import H5Table, read_store_h5
from unitrack.store.journal import JournalContents, JournalTable, RowCodec, read_journal, schema_payload

__all__ = [
    "H5_NAME",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "OBJECTS_DIR",
    "h5_only_rows",
    "is_store_dir",
    "load_contents",
]

logger = logging.getLogger(__name__)

JOURNAL_NAME = "store.journal"
H5_NAME = "store.h5"
LOCK_NAME = "store.lock"
OBJECTS_DIR = ".table_objects"


def is_store_dir(path: str) -> bool:
    """Whether ``path`` holds a store (a journal, or a ``store.h5`` written by cox)."""
    return os.path.isfile(os.path.join(path, JOURNAL_NAME)) or os.path.isfile(os.path.join(path, H5_NAME))


def writer_alive(path: str) -> bool:
    """Whether a live process on this host holds the store's writer lock.

    The lock file is read, not locked: even a momentary shared lock could make a writer starting at that
    instant fail. A holder's file says ``pid <pid> on <host>`` and is cleared when released; a SIGKILLed
    holder leaves its text, so the pid is checked.
    """
    try:
        with open(os.path.join(path, LOCK_NAME), encoding="utf-8", errors="replace") as fh:
            words = fh.read().split()
    except FileNotFoundError:
        return False
    if len(words) != 4 or words[0] != "pid" or words[2] != "on" or words[3] != socket.gethostname():
        return False
    try:
        os.kill(int(words[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def load_contents(
    path: str, *, holds_lock: bool = False, skip_damaged: bool = False, keep_payloads: bool = True
) -> JournalContents:
    """Read every table of the store in ``path``.

    The journal is the source of truth. A folder with only ``store.h5`` (a cox store) is read with pandas and
    its rows are packed as if they came from a journal, so the rest of the code has one shape to handle.

    Args:
        path: The store folder.
        holds_lock: The caller is the store's writer, so an incomplete last frame is a torn tail (warned about)
            rather than another writer's write in progress.
        skip_damaged: Skip damaged frames in the middle of the journal (with a warning) instead of raising.
        keep_payloads: Keep every row's payload; otherwise only row counts and text widths (the journal is read
            in chunks, in constant memory).

    Returns:
        The tables and their row payloads; ``valid_end`` is 0 for a store without a journal.

    Raises:
        CorruptStoreError: The journal or the HDF5 file is damaged.
    """
    journal = os.path.join(path, JOURNAL_NAME)
    if os.path.isfile(journal):
        return read_journal(
            journal,
            writer_alive=not holds_lock and writer_alive(path),
            skip_damaged=skip_damaged,
            keep_payloads=keep_payloads,
        )
    h5 = os.path.join(path, H5_NAME)
    if not os.path.isfile(h5):
        return JournalContents({}, 0, None)
    return _contents_from_h5(read_store_h5(h5))


def _contents_from_h5(read: dict[str, H5Table]) -> JournalContents:
    """Pack the rows of a journal-less store.h5 as if they came from a journal (one shape for the callers)."""
    tables: dict[str, JournalTable] = {}
    for table_id, name in enumerate(sorted(read)):
        h5table = read[name]
        codec = RowCodec(table_id, list(h5table.columns), list(h5table.kinds))
        table = JournalTable(name, codec)
        payloads = [codec.pack(list(row)) for row in zip(*h5table.values, strict=True)]
        if not h5table.columns:
            payloads = [codec.pack([]) for _ in range(h5table.nrows)]
        table.take(payloads)  # the payloads, their count and text widths
        tables[name] = table
    return JournalContents(tables, 0, None)


def h5_only_rows(path: str, contents: JournalContents) -> list[bytes]:
    """The journal records (schemas, then rows) of what ``store.h5`` holds beyond the journal ``contents``.

    unitrack rebuilds ``store.h5`` from its journal; a tool that appends to ``store.h5`` itself (cox's
    ``Table.flush_row`` does ``HDFStore.append``) adds rows, and tables, the journal never saw, which that rebuild
    would drop. The writer calls this when it opens an existing store and appends the records to its journal, so
    those rows are kept, after the journal's, in the order ``store.h5`` holds them; so are rows a torn journal
    tail lost that the last build of ``store.h5`` holds. Only the rows past each table's journal count are read
    (a ``store.h5`` holding fewer is an older build, to be rebuilt).

    Raises:
        StorageError: ``store.h5`` cannot be read safely, or a table's columns there differ from the journal's:
            its extra rows cannot be taken (the caller keeps the file aside).
    """
    h5 = os.path.join(path, H5_NAME)
    if not os.path.isfile(h5):
        return []
    counts = {name: table.nrows for name, table in contents.tables.items()}
    read = read_store_h5(h5, pick=lambda name, total: slice(min(counts.get(name, 0), total), total))
    if contents.damaged and any(h5table.nrows > counts.get(name, 0) for name, h5table in read.items()):
        # Rows skipped inside the journal: its rows are no longer store.h5's first ones, so which of store.h5's
        # rows it lacks is unknown (a torn tail is different: the journal is then a prefix of store.h5).
        raise StorageError(f"{h5} holds rows the damaged journal lost; they cannot be matched up")
    records: list[bytes] = []
    next_id = max((t.codec.table_id for t in contents.tables.values()), default=-1) + 1
    for name in sorted(read):
        h5table = read[name]
        known = contents.tables.get(name)
        if h5table.nrows <= counts.get(name, 0) and known is not None:
            continue
        if known is None:
            codec = RowCodec(next_id, list(h5table.columns), list(h5table.kinds))
            next_id += 1
            records.append(schema_payload(name, codec.table_id, codec.columns, codec.kinds))
        else:
            codec = known.codec
            if list(h5table.columns) != list(codec.columns):
                raise StorageError(
                    f"table {name!r} of {h5} has columns {list(h5table.columns)}, its journal "
                    f"{list(codec.columns)}: its {h5table.nrows - known.nrows} extra row(s) cannot be taken"
                )
        rows = (
            zip(*h5table.values, strict=True) if h5table.columns else ([] for _ in range(len(h5table.values)))
        )
        try:
            records.extend(codec.pack(list(row)) for row in rows)
        except (TypeError, ValueError, OverflowError) as exc:
            raise StorageError(f"rows of table {name!r} of {h5} do not fit its schema ({exc})") from exc
    return records
