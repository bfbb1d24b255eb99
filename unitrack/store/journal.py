"""The per-store append-only journal: the durable record of every schema and row.

File layout (little-endian)::

    magic  b"UTJ1\\0\\0\\0\\0"                          8 bytes, once
    frame  <u32 payload length> <u32 crc32(payload)> payload    repeated
    payload b"\\x01" + JSON {"table", "id", "columns": [[name, kind], ...]}      a table's schema
            b"\\x02" + <u16 table id> + the row packed with the table's struct   a row

A row's fixed-width values (float ``d``, int ``q``, bool ``?``, and a ``u32`` byte length for each text value)
are packed by one precompiled :class:`struct.Struct`; the UTF-8 text follows. Each frame is written with a
single ``os.write`` on an ``O_APPEND`` descriptor, so once ``flush_row`` returns the row survives SIGKILL (and,
with ``fsync=True``, power loss).

Reading checks every frame's CRC. A frame cut short at the end of the file (a torn tail, from a crash or a
truncated copy) is dropped with a warning naming the file and offset; a bad frame followed by more data is
corruption and raises :class:`~unitrack.errors.CorruptStoreError`. A wrong value is never returned.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitrack.errors import CorruptStoreError
from unitrack.store.schema import ColumnKind

__all__ = [
    "MAGIC",
    "JournalContents",
    "JournalTable",
    "JournalWriter",
    "RowCodec",
    "read_journal",
    "schema_payload",
]

logger = logging.getLogger(__name__)

MAGIC = b"UTJ1\x00\x00\x00\x00"
FRAME = struct.Struct("<II")
REC_SCHEMA = 1
REC_ROW = 2
#: Frames larger than this are taken as corruption of the length field rather than data.
MAX_FRAME_BYTES = 1 << 30

_FIXED_CODES = {ColumnKind.FLOAT: "d", ColumnKind.INT: "q", ColumnKind.BOOL: "?"}
_NUMPY_CODES = {ColumnKind.FLOAT: "<f8", ColumnKind.INT: "<i8", ColumnKind.BOOL: "?"}


class RowCodec:
    """Pack and unpack the rows of one table.

    Args:
        table_id: The table's number in this journal.
        columns: Column names, in schema order.
        kinds: The kind of each column.
    """

    def __init__(self, table_id: int, columns: list[str], kinds: list[ColumnKind]) -> None:
        self.table_id = table_id
        self.columns = columns
        self.kinds = kinds
        self.text_positions = [i for i, kind in enumerate(kinds) if kind not in _FIXED_CODES]
        self.is_fixed = not self.text_positions
        #: The position of the only text column, when there is exactly one (packed and decoded faster).
        self.single_text = self.text_positions[0] if len(self.text_positions) == 1 else None
        self.struct = struct.Struct("<BH" + "".join(_FIXED_CODES.get(kind, "I") for kind in kinds))
        self.fixed_size = self.struct.size

    def pack(self, values: list[Any]) -> bytes:
        """Return the row payload for ``values`` (already converted, in column order)."""
        if self.is_fixed:
            return self.struct.pack(REC_ROW, self.table_id, *values)
        head = list(values)
        texts = []
        for i in self.text_positions:
            encoded = values[i].encode("utf-8")
            texts.append(encoded)
            head[i] = len(encoded)
        return self.struct.pack(REC_ROW, self.table_id, *head) + b"".join(texts)

    def unpack(self, payload: bytes | memoryview) -> tuple[Any, ...]:
        """Return the values of one row payload.

        Raises:
            ValueError: The payload does not have the table's layout.
        """
        head = self.struct.unpack_from(payload, 0)
        values = list(head[2:])
        pos = self.fixed_size
        for i in self.text_positions:
            end = pos + values[i]
            if end > len(payload):
                raise ValueError("text runs past the end of the row")
            values[i] = bytes(payload[pos:end]).decode("utf-8")
            pos = end
        if pos != len(payload):
            raise ValueError("row is longer than its columns")
        return tuple(values)

    def numpy_dtype(self) -> np.dtype[Any]:
        """The structured dtype of a payload's fixed-width part (all of it for tables without text columns; a
        text column's field holds its byte length)."""
        fields = [("_rec", "u1"), ("_tid", "<u2")]
        fields += [(f"c{i}", _NUMPY_CODES.get(kind, "<u4")) for i, kind in enumerate(self.kinds)]
        return np.dtype(fields)

    def _decode_single_text(self, payloads: list[bytes | memoryview]) -> list[Any]:
        """Decode rows with one text column: fixed-width fields vectorized, each text decoded once per value."""
        fixed, at = self.fixed_size, self.single_text
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        if (lengths < fixed).any():
            raise ValueError("a row is shorter than its fixed-width columns")
        heads = np.frombuffer(b"".join([p[:fixed] for p in payloads]), dtype=self.numpy_dtype())
        if (lengths != fixed + heads[f"c{at}"].astype(np.int64)).any():
            raise ValueError("a row's length does not match its text's")
        seen: dict[bytes, str] = {}  # names repeat (metric names, categories): decode and keep each once
        texts: list[str] = []
        for payload in payloads:
            raw = payload[fixed:]
            if type(raw) is not bytes:  # a memoryview
                raw = bytes(raw)
            if len(raw) > 64:
                texts.append(raw.decode("utf-8"))
                continue
            text = seen.get(raw)
            if text is None:
                text = seen[raw] = sys.intern(raw.decode("utf-8"))
            texts.append(text)
        return [texts if i == at else heads[f"c{i}"].copy() for i in range(len(self.kinds))]

    def decode(self, payloads: Iterable[bytes | memoryview] | bytes | bytearray) -> list[Any]:
        """Decode many row payloads into one list or array per column.

        Args:
            payloads: For a fixed-width table, the concatenated payloads (bytes) or an iterable of them;
                otherwise an iterable of payloads.

        Returns:
            One numpy array (numeric and bool columns) or list (text columns) per column.
        """
        if self.is_fixed:
            raw = payloads if isinstance(payloads, (bytes, bytearray)) else b"".join(payloads)
            arr = np.frombuffer(raw, dtype=self.numpy_dtype())
            return [arr[f"c{i}"].copy() for i in range(len(self.kinds))]
        if isinstance(payloads, (bytes, bytearray)):
            raise ValueError("text tables decode a list of payloads, not concatenated bytes")
        if self.single_text is not None:
            return self._decode_single_text(payloads if isinstance(payloads, list) else list(payloads))
        rows = [self.unpack(p) for p in payloads]
        out: list[Any] = []
        for i, kind in enumerate(self.kinds):
            col = [row[i] for row in rows]
            out.append(np.array(col, dtype=_NUMPY_CODES[kind]) if kind in _NUMPY_CODES else col)
        return out


def schema_payload(table: str, table_id: int, columns: list[str], kinds: list[ColumnKind]) -> bytes:
    """Return the payload of a schema record."""
    body = {
        "table": table,
        "id": table_id,
        "columns": [[c, k.value] for c, k in zip(columns, kinds, strict=True)],
    }
    return bytes([REC_SCHEMA]) + json.dumps(body, separators=(",", ":")).encode("utf-8")


def frame(payload: bytes) -> bytes:
    """Return ``payload`` with its length and CRC prefix."""
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class JournalTable:
    """One table as read from a journal: its schema and its rows' payloads."""

    name: str
    codec: RowCodec
    payloads: list[bytes] = field(default_factory=list)


@dataclass
class JournalContents:
    """Everything valid in a journal."""

    tables: dict[str, JournalTable]
    #: Byte offset just past the last valid frame.
    valid_end: int
    #: Offset of a dropped torn tail, or None.
    torn_at: int | None = None


def read_journal(path: str, data: bytes | None = None, *, writer_alive: bool = False) -> JournalContents:
    """Read and check a journal.

    Args:
        path: The journal file.
        data: The file's bytes, if already read.
        writer_alive: A writer holds the store, so an incomplete last frame is a write in progress, not
            damage: it is left out without a warning.

    Returns:
        The tables with their row payloads, and where the valid data ends.

    Raises:
        CorruptStoreError: The file is not a journal, or a frame in the middle of it is damaged.
    """
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read()
    size = len(data)
    tables: dict[str, JournalTable] = {}
    by_id: dict[int, JournalTable] = {}
    if size < len(MAGIC):
        if MAGIC.startswith(data):
            torn = 0 if size else None
            if torn is not None:
                _warn_torn(path, 0, size, writer_alive)
            return JournalContents(tables, 0, torn)
        raise CorruptStoreError(path, 0, "not a unitrack journal (bad magic)")
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptStoreError(path, 0, "not a unitrack journal (bad magic)")
    pos = len(MAGIC)
    view = memoryview(data)
    unpack_frame = FRAME.unpack_from
    crc32 = zlib.crc32
    torn_at: int | None = None
    while pos < size:
        if pos + 8 > size:
            torn_at = pos
            break
        length, crc = unpack_frame(data, pos)
        end = pos + 8 + length
        if length == 0 or length > MAX_FRAME_BYTES:
            raise CorruptStoreError(path, pos, f"impossible frame length {length}")
        if end > size:
            torn_at = pos
            break
        payload = view[pos + 8 : end]
        if crc32(payload) != crc:
            if end == size:
                torn_at = pos
                break
            raise CorruptStoreError(path, pos, "frame checksum mismatch")
        kind = payload[0]
        if kind == REC_ROW:
            if length < 3:
                raise CorruptStoreError(path, pos, "row frame too short")
            tid = payload[1] | (payload[2] << 8)
            table = by_id.get(tid)
            if table is None:
                raise CorruptStoreError(path, pos, f"row for unknown table id {tid}")
            codec = table.codec
            if codec.is_fixed and length != codec.fixed_size:
                raise CorruptStoreError(path, pos, f"row of {length} bytes in table {table.name!r}")
            table.payloads.append(payload.tobytes())
        elif kind == REC_SCHEMA:
            try:
                body = json.loads(payload[1:].tobytes().decode("utf-8"))
                columns = [str(c) for c, _ in body["columns"]]
                kinds = [ColumnKind(k) for _, k in body["columns"]]
                name, tid = str(body["table"]), int(body["id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptStoreError(path, pos, f"unreadable schema record ({exc})") from exc
            table = JournalTable(name, RowCodec(tid, columns, kinds))
            tables[name] = table
            by_id[tid] = table
        else:
            raise CorruptStoreError(path, pos, f"unknown record type {kind}")
        pos = end
    if torn_at is not None:
        _warn_torn(path, torn_at, size - torn_at, writer_alive)
        return JournalContents(tables, torn_at, torn_at)
    return JournalContents(tables, pos, None)


def _warn_torn(path: str, offset: int, nbytes: int, writer_alive: bool = False) -> None:
    if writer_alive:
        logger.debug("%s: %d bytes at byte %d are still being written; left out", path, nbytes, offset)
        return
    message = (
        f"{path}: dropped a torn tail of {nbytes} bytes at byte {offset} (an interrupted write); "
        "every row before it is intact."
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class JournalWriter:
    """Append frames to a journal with one ``os.write`` each.

    Args:
        path: The journal file; created with its magic when missing or empty.
        valid_end: Bytes of valid data already in the file; anything after (a torn tail) is cut off first,
            so new frames never follow garbage.
        fsync: Call ``os.fsync`` after every write, for durability against power loss (SIGKILL needs none).
    """

    def __init__(self, path: str, valid_end: int, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        if size != valid_end:
            os.ftruncate(self.fd, valid_end)
        if valid_end < len(MAGIC):
            os.ftruncate(self.fd, 0)
            self._write(MAGIC)
            if fsync:
                # A new file's name must reach the disk too, or a power loss can drop the whole journal.
                dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(self.fd)

    def append(self, payload: bytes) -> None:
        """Append one record."""
        data = FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        written = os.write(self.fd, data)
        if written != len(data):  # pragma: no cover - short writes on regular files are rare
            self._write(data[written:])
        elif self.fsync:
            os.fsync(self.fd)

    def append_many(self, payloads: Iterable[bytes]) -> None:
        """Append several records with one write."""
        pack, crc = FRAME.pack, zlib.crc32
        chunks = []
        for payload in payloads:
            chunks.append(pack(len(payload), crc(payload)))
            chunks.append(payload)
        data = b"".join(chunks)
        written = os.write(self.fd, data)
        if written != len(data):  # pragma: no cover - short writes on regular files are rare
            self._write(data[written:])
        elif self.fsync:
            os.fsync(self.fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
