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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitrack.errors import CorruptStoreError
from unitrack.store.schema import ColumnKind

__all__ = [
    "CHUNK_BYTES",
    "MAGIC",
    "Damage",
    "JournalContents",
    "JournalReader",
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

    def unpack(self, payload: bytes | memoryview, raw_text: bool = False) -> tuple[Any, ...]:
        """Return the values of one row payload (text as UTF-8 bytes when ``raw_text``).

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
            raw = bytes(payload[pos:end])
            values[i] = raw if raw_text else raw.decode("utf-8")
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

    def _decode_single_text(self, payloads: list[bytes | memoryview], raw_text: bool = False) -> list[Any]:
        """Decode rows with one text column: fixed-width fields vectorized, each text decoded once per value."""
        fixed, at = self.fixed_size, self.single_text
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        if (lengths < fixed).any():
            raise ValueError("a row is shorter than its fixed-width columns")
        heads = np.frombuffer(b"".join([p[:fixed] for p in payloads]), dtype=self.numpy_dtype())
        if (lengths != fixed + heads[f"c{at}"].astype(np.int64)).any():
            raise ValueError("a row's length does not match its text's")
        if raw_text:
            raws = [bytes(p[fixed:]) for p in payloads]
            return [raws if i == at else heads[f"c{i}"].copy() for i in range(len(self.kinds))]
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

    def decode(
        self, payloads: Iterable[bytes | memoryview] | bytes | bytearray, raw_text: bool = False
    ) -> list[Any]:
        """Decode many row payloads into one list or array per column.

        Args:
            payloads: For a fixed-width table, the concatenated payloads (bytes) or an iterable of them;
                otherwise an iterable of payloads.
            raw_text: Leave text as its UTF-8 bytes (for store.h5, which stores the bytes).

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
            return self._decode_single_text(
                payloads if isinstance(payloads, list) else list(payloads), raw_text=raw_text
            )
        rows = [self.unpack(p, raw_text) for p in payloads]
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


#: Bytes of a journal read at a time: a reader (and the store.h5 build) holds about this much of it at once,
#: however long the journal is.
CHUNK_BYTES = 1 << 20

_SKIP_ADVICE = (
    "Nothing was changed. Store(..., skip_damaged=True) reads every intact row around it (and a writer opened "
    "so appends after it); repair_journal() rewrites the journal without it, keeping the damaged file aside"
)


@dataclass(frozen=True)
class Damage:
    """A stretch of a journal that is not what was written, skipped by a reader with ``skip_damaged=True``."""

    offset: int
    nbytes: int
    reason: str


@dataclass
class JournalTable:
    """One table as read from a journal: its schema, its row count and (when kept) its rows' payloads."""

    name: str
    codec: RowCodec
    payloads: list[bytes] = field(default_factory=list)
    nrows: int = 0
    #: The longest UTF-8 text, in bytes, of each column (0 for numeric columns).
    widths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.widths:
            self.widths = [0] * len(self.codec.kinds)

    def take(self, payloads: list[bytes], *, keep: bool = True) -> None:
        """Count rows read from the journal (and keep their payloads when ``keep``)."""
        if not payloads:
            return
        self.nrows += len(payloads)
        if keep:
            self.payloads.extend(payloads)
        update_widths(self.codec, self.widths, payloads)


def update_widths(codec: RowCodec, widths: list[int], payloads: list[bytes]) -> None:
    """Raise ``widths`` (the longest text of each column, in bytes) to cover ``payloads``."""
    if codec.is_fixed or not payloads:
        return
    at = codec.single_text
    if at is not None:
        longest = max(map(len, payloads)) - codec.fixed_size
        if longest > widths[at]:
            widths[at] = longest
        return
    unpack, positions = codec.struct.unpack_from, codec.text_positions
    for payload in payloads:
        head = unpack(payload, 0)
        for i in positions:
            if head[i + 2] > widths[i]:
                widths[i] = head[i + 2]


@dataclass
class JournalContents:
    """Everything valid in a journal."""

    tables: dict[str, JournalTable]
    #: Byte offset just past the last valid frame.
    valid_end: int
    #: Offset of a dropped torn tail, or None.
    torn_at: int | None = None
    #: Damaged stretches skipped (only with ``skip_damaged=True``; otherwise the first raises).
    damaged: list[Damage] = field(default_factory=list)
    #: Offsets of frames whose damaged length field was restored from their checksum (no value was lost).
    recovered: list[int] = field(default_factory=list)


class _Source:
    """Random access to a journal's bytes: a file read with ``os.pread``, or bytes already read."""

    def __init__(self, path: str, data: bytes | None) -> None:
        self._data = data
        self._fd = -1
        if data is None:
            self._fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self._fd).st_size
        else:
            self.size = len(data)

    def read(self, offset: int, nbytes: int) -> bytes:
        nbytes = max(min(nbytes, self.size - offset), 0)
        if self._data is not None:
            return self._data[offset : offset + nbytes]
        parts = []
        while nbytes > 0:
            part = os.pread(self._fd, nbytes, offset)
            if not part:  # pragma: no cover - the file shrank under us
                break
            parts.append(part)
            offset += len(part)
            nbytes -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def crc(self, offset: int, nbytes: int, chunk_bytes: int) -> int:
        """The CRC32 of ``nbytes`` from ``offset``, read ``chunk_bytes`` at a time."""
        value = 0
        while nbytes > 0:
            part = self.read(offset, min(nbytes, chunk_bytes))
            if not part:  # pragma: no cover
                break
            value = zlib.crc32(part, value)
            offset += len(part)
            nbytes -= len(part)
        return value

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Bad(Exception):
    """A frame that is not what was written (internal: handled by :meth:`JournalReader._bad`)."""

    def __init__(self, offset: int, reason: str, framed: int | None = None) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        #: The frame's end when its framing (length and checksum) is intact and only its content is wrong.
        self.framed = framed


class JournalReader:
    """Read a journal front to back, ``chunk_bytes`` at a time, checking every frame's checksum.

    What it does with bytes that are not what was written:

    - an incomplete or unreadable frame with no intact frame after it is a **torn tail** (a write cut short by
      a crash): it is left out with a warning (silently while ``writer_alive``), and ``valid_end`` stops before
      it, so a writer cuts it off before appending;
    - a frame whose **length field** is damaged but whose payload, up to the next intact frame (or the end),
      matches its checksum is read as written, with a warning: no value is lost;
    - any other damaged frame with intact frames after it raises :class:`~unitrack.errors.CorruptStoreError`
      naming the file, the offset and where the intact data resumes; nothing is returned and nothing is changed.
      With ``skip_damaged=True`` the reader instead skips exactly the damaged bytes (resynchronising on the
      next frame whose checksum holds), reports them in ``damaged`` and with a warning, and reads on; a writer
      opened so appends after the last intact frame and never cuts one off.

    Args:
        path: The journal file.
        data: The file's bytes, if already read (tests); otherwise the file is read in chunks.
        writer_alive: A writer holds the store, so an incomplete last frame is a write in progress.
        skip_damaged: Skip damaged frames in the middle instead of raising.
        chunk_bytes: How much of the file to read at a time (default :data:`CHUNK_BYTES`).
    """

    def __init__(
        self,
        path: str,
        data: bytes | None = None,
        *,
        writer_alive: bool = False,
        skip_damaged: bool = False,
        chunk_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.writer_alive = writer_alive
        self.skip_damaged = skip_damaged
        self.chunk_bytes = max(int(CHUNK_BYTES if chunk_bytes is None else chunk_bytes), 64)
        self._data = data
        self.tables: dict[str, JournalTable] = {}
        self.by_id: dict[int, JournalTable] = {}
        self._fixed: dict[int, int] = {}  # table id -> payload size of its rows (-1: rows with text)
        self.valid_end = 0
        self.torn_at: int | None = None
        self.damaged: list[Damage] = []
        self.recovered: list[int] = []
        #: Chunks read so far and the largest one, in bytes (what a reader holds of the file at once).
        self.reads = 0
        self.largest_read = 0

    def contents(self, *, keep_payloads: bool = True) -> JournalContents:
        """Read the whole journal; the tables keep their payloads when ``keep_payloads``."""
        for batch in self.batches():
            for table, payloads in batch:
                table.take(payloads, keep=keep_payloads)
            batch.clear()  # not held while the next chunk is read
        return JournalContents(self.tables, self.valid_end, self.torn_at, self.damaged, self.recovered)

    def batches(self) -> Iterator[list[tuple[JournalTable, list[bytes]]]]:
        """Yield the rows of the journal in order, a chunk at a time, as ``[(table, payloads), ...]``.

        Raises:
            CorruptStoreError: The file is not a journal, or a frame in the middle of it is damaged (unless
                ``skip_damaged``).
        """
        source = _Source(self.path, self._data)
        try:
            yield from self._batches(source)
        finally:
            source.close()

    # ------------------------------------------------------------------------------------------ reading
    def _batches(self, source: _Source) -> Iterator[list[tuple[JournalTable, list[bytes]]]]:
        size = source.size
        head = source.read(0, len(MAGIC))
        if size < len(MAGIC):
            if MAGIC.startswith(head):
                if size:
                    self._torn(0, size)
                return
            raise CorruptStoreError(self.path, 0, "not a unitrack journal (bad magic)")
        if head != MAGIC:
            if not self.skip_damaged or self._next_frame(source, len(MAGIC) - 1) != len(MAGIC):
                raise CorruptStoreError(self.path, 0, "not a unitrack journal (bad magic)")
            self._skip(0, len(MAGIC), "bad magic")
        pos = len(MAGIC)
        need = self.chunk_bytes
        while pos < size:
            batch: dict[int, list[bytes]] = {}  # the last chunk's rows are let go before the next is read
            buf = source.read(pos, max(need, self.chunk_bytes))
            self.reads += 1
            self.largest_read = max(self.largest_read, len(buf))
            need = self.chunk_bytes
            try:
                used = self._window(buf, pos, batch)
            except _Bad as bad:
                if batch:
                    yield self._batch(batch)
                pos, rows = self._bad(source, bad)
                if rows:
                    yield rows
                continue
            if batch:
                yield self._batch(batch)
            if used < 0:  # a schema record: read on after it with the new table known
                pos += -used
                continue
            if used == 0:  # the frame at pos is larger than a chunk, or runs past the end of the file
                length = FRAME.unpack(buf[:8])[0] if len(buf) >= 8 else 0
                if pos + 8 > size or pos + 8 + length > size:
                    reason = (
                        "incomplete frame" if pos + 8 > size else f"frame length {length} runs past the end"
                    )
                    pos, rows = self._bad(source, _Bad(pos, reason))
                    if rows:
                        yield rows
                    continue
                need = 8 + length
            pos += used
        self.valid_end = pos if self.torn_at is None else self.torn_at
        self._report()

    def _window(self, buf: bytes, base: int, batch: dict[int, list[bytes]]) -> int:
        """Read the whole frames of ``buf`` (the file from ``base``) into ``batch``; return the bytes used (the
        negated count after a schema record, which ends the window), 0 when the first frame does not fit.

        Raises:
            _Bad: A frame is damaged.
        """
        n = len(buf)
        p: int = 0
        unpack_frame = FRAME.unpack_from
        crc32 = zlib.crc32
        fixed = self._fixed
        while p + 8 <= n:
            length, crc = unpack_frame(buf, p)
            if length == 0 or length > MAX_FRAME_BYTES:
                raise _Bad(base + p, f"impossible frame length {length}")
            end: int = p + 8 + length
            if end > n:
                break
            payload = buf[p + 8 : end]
            if crc32(payload) != crc:
                raise _Bad(base + p, "frame checksum mismatch")
            if payload[0] == REC_ROW and length >= 3:
                tid = payload[1] | (payload[2] << 8)
                rows = batch.get(tid)
                if rows is None:
                    if tid not in fixed:
                        raise _Bad(base + p, f"row for unknown table id {tid}", base + end)
                    rows = batch[tid] = []
                size = fixed[tid]
                if size >= 0 and length != size:
                    raise _Bad(
                        base + p, f"row of {length} bytes in table {self.by_id[tid].name!r}", base + end
                    )
                rows.append(payload)
            else:
                self._record(payload, base + p, base + end)
                return -end
            p = end
        return p

    def _record(self, payload: bytes, offset: int, end: int) -> None:
        """Take a frame other than a row of a known table (a schema record).

        Raises:
            _Bad: It is not a record of this format.
        """
        kind = payload[0]
        if kind == REC_ROW:
            raise _Bad(offset, "row frame too short", end)
        if kind != REC_SCHEMA:
            raise _Bad(offset, f"unknown record type {kind}", end)
        try:
            body = json.loads(payload[1:].decode("utf-8"))
            columns = [str(c) for c, _ in body["columns"]]
            kinds = [ColumnKind(k) for _, k in body["columns"]]
            name, tid = str(body["table"]), int(body["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise _Bad(offset, f"unreadable schema record ({exc})", end) from exc
        table = JournalTable(name, RowCodec(tid, columns, kinds))
        self.tables[name] = table
        self.by_id[tid] = table
        self._fixed[tid] = table.codec.fixed_size if table.codec.is_fixed else -1

    def _take_one(self, payload: bytes, offset: int, end: int) -> list[tuple[JournalTable, list[bytes]]]:
        """A frame read outside a window (its length field restored): as :meth:`_window` would take it."""
        batch: dict[int, list[bytes]] = {}
        if payload[0] == REC_ROW and len(payload) >= 3:
            tid = payload[1] | (payload[2] << 8)
            size = self._fixed.get(tid)
            if size is None:
                raise _Bad(offset, f"row for unknown table id {tid}", end)
            if size >= 0 and len(payload) != size:
                raise _Bad(offset, f"row of {len(payload)} bytes in table {self.by_id[tid].name!r}", end)
            batch[tid] = [payload]
        else:
            self._record(payload, offset, end)
        return self._batch(batch)

    def _batch(self, batch: dict[int, list[bytes]]) -> list[tuple[JournalTable, list[bytes]]]:
        by_id = self.by_id
        return [(by_id[tid], rows) for tid, rows in batch.items()]

    # ------------------------------------------------------------------------------------------ damage
    def _bad(self, source: _Source, bad: _Bad) -> tuple[int, list[tuple[JournalTable, list[bytes]]]]:
        """Handle a frame that is not what was written.

        Returns:
            Where reading goes on (the file's size: stop), and the rows of a frame restored by its checksum.

        Raises:
            CorruptStoreError: Damage in the middle, without ``skip_damaged``.
        """
        size = source.size
        offset = bad.offset
        if bad.framed is not None:  # framing intact, content wrong: exactly this frame is damaged
            return self._middle(offset, bad.framed, size, bad.reason, framed=True), []
        resume = self._next_frame(source, offset)
        end = size if resume is None else resume
        if offset + 9 <= end:
            length, crc = FRAME.unpack(source.read(offset, 8))
            nbytes = end - offset - 8
            if (
                nbytes != length
                and nbytes <= MAX_FRAME_BYTES
                and source.read(offset + 8, 1) in (b"\x01", b"\x02")
                and source.crc(offset + 8, nbytes, self.chunk_bytes) == crc
            ):
                # Only the length field is wrong: the payload up to the next intact frame is the one written.
                try:
                    rows = self._take_one(source.read(offset + 8, nbytes), offset, end)
                except _Bad as inner:
                    return self._middle(offset, end, size, inner.reason), []
                self.recovered.append(offset)
                _warn(
                    f"{self.path}: the length field of the frame at byte {offset} is damaged (it says {length} "
                    f"bytes; the frame has {nbytes}); the frame was read by its checksum and nothing was lost. "
                    "repair_journal() rewrites the file without the damage."
                )
                return end, rows
        if resume is None:
            self._torn(offset, size - offset)
            return size, []
        return self._middle(offset, resume, size, bad.reason), []

    def _middle(self, offset: int, resume: int, size: int, reason: str, *, framed: bool = False) -> int:
        """Damage from ``offset`` to ``resume``: raise, or skip it.

        ``framed``: the frame's checksum holds (its bytes are as written, but cannot be read: e.g. its table's
        schema record is the damaged one), so it is never taken for a torn tail, even at the end.
        """
        if resume >= size and not framed:  # nothing intact after it: a torn tail after all
            self._torn(offset, size - offset)
            return size
        if not self.skip_damaged:
            where = (
                "its checksum holds, so it is kept"
                if framed
                else f"the next intact frame at byte {resume} starts the last {size - resume} bytes of the file"
            )
            raise CorruptStoreError(self.path, offset, f"{reason}; {where}", _SKIP_ADVICE)
        self._skip(offset, resume - offset, reason)
        return resume

    def _skip(self, offset: int, nbytes: int, reason: str) -> None:
        """Record damaged bytes, joined with the stretch just before (reported once reading ends)."""
        last = self.damaged[-1] if self.damaged else None
        if last is not None and last.offset + last.nbytes == offset:
            self.damaged[-1] = Damage(last.offset, last.nbytes + nbytes, last.reason)
        else:
            self.damaged.append(Damage(offset, nbytes, reason))

    def _report(self) -> None:
        for damage in self.damaged:
            _warn(
                f"{self.path}: skipped {damage.nbytes} damaged bytes at byte {damage.offset} ({damage.reason}); "
                "every intact frame before and after them was read."
            )

    def _torn(self, offset: int, nbytes: int) -> None:
        self.torn_at = offset
        self.valid_end = offset
        if self.writer_alive:
            logger.debug(
                "%s: %d bytes at byte %d are still being written; left out", self.path, nbytes, offset
            )
            return
        _warn(
            f"{self.path}: dropped a torn tail of {nbytes} bytes at byte {offset} (an interrupted write); "
            "every row before it is intact."
        )

    def _next_frame(self, source: _Source, after: int) -> int | None:
        """The first offset past ``after`` where an intact frame starts (its checksum holds), or None.

        Candidates are found with numpy (a plausible length and record type), then checked by their checksum.
        """
        size = source.size
        start = after + 1
        while start + 9 <= size:
            window = source.read(start, self.chunk_bytes + 8)
            count = len(window) - 8  # offsets whose header and record type are in the window
            if count <= 0:
                break
            raw = np.frombuffer(window, dtype=np.uint8)
            lengths = (
                raw[0:count].astype(np.uint64)
                | (raw[1 : count + 1].astype(np.uint64) << 8)
                | (raw[2 : count + 2].astype(np.uint64) << 16)
                | (raw[3 : count + 3].astype(np.uint64) << 24)
            )
            kinds = raw[8 : count + 8]
            room = size - start - 8 - np.arange(count, dtype=np.int64)
            plausible = (
                (lengths >= 1)
                & (lengths <= MAX_FRAME_BYTES)
                & (lengths.astype(np.int64) <= room)
                & ((kinds == REC_ROW) | (kinds == REC_SCHEMA))
            )
            candidates: list[int] = np.flatnonzero(plausible).tolist()
            for i in candidates:
                length, crc = FRAME.unpack_from(window, i)
                if source.crc(start + i + 8, length, self.chunk_bytes) == crc:
                    return start + i
            start += count
        return None


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def read_journal(
    path: str,
    data: bytes | None = None,
    *,
    writer_alive: bool = False,
    skip_damaged: bool = False,
    keep_payloads: bool = True,
) -> JournalContents:
    """Read and check a journal (see :class:`JournalReader` for what happens to damaged bytes).

    Args:
        path: The journal file.
        data: The file's bytes, if already read.
        writer_alive: A writer holds the store, so an incomplete last frame is a write in progress, not
            damage: it is left out without a warning.
        skip_damaged: Skip damaged frames in the middle (reported in ``damaged`` and with a warning) instead of
            raising.
        keep_payloads: Keep every row's payload (otherwise only counts and text widths: constant memory).

    Returns:
        The tables with their row payloads, and where the valid data ends.

    Raises:
        CorruptStoreError: The file is not a journal, or a frame in the middle of it is damaged (unless
            ``skip_damaged``).
    """
    reader = JournalReader(path, data, writer_alive=writer_alive, skip_damaged=skip_damaged)
    return reader.contents(keep_payloads=keep_payloads)


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

    def append_many(self, payloads: Iterable[bytes]) -> bytes:
        """Append several records with one write; returns the bytes written (their frames, in order)."""
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
        return data

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
