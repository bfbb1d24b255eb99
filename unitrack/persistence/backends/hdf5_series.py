"""The ``hdf5://`` backend's series index: each metric's points in a file of its own, for charts.

A trial's store journal holds every metric's rows interleaved, with a checksum per row: the durable record,
but reading one metric of a long run from it means decoding every row of every metric in Python. The writer
therefore also keeps, next to the journal, a derived copy of the points by metric::

    {trial}/.series/index.json     {"version", "journal": [inode, bytes covered], "tables": [...schemas],
                                    "metrics": {name: {"file": "3.bin", "count": n, "crc": crc32}}}
    {trial}/.series/3.bin          n points as little-endian float64 triples (step or NaN, value, time)

The files are appended at most once per ``summary_interval_s`` (when the trial's summary is written). The
writer takes each write's metrics rows as the bytes it just wrote to the journal (one object per logging call,
no Python work per row), and turns them into each metric's points a thousand calls at a time with numpy: a
loop's repeating rows (``loss, acc, lr, loss, acc, lr, ...``) are read as one fixed-width table, and only rows
that break the pattern are read one by one. ``index.json`` is replaced atomically after the data files are
appended, and names how many points of each file (and how many bytes of the journal) it covers: a writer
killed in between leaves points the index does not name, which a reader ignores and the next writer cuts off.

A reader (any process, no lock) reads the covered points of the asked metric only, checks their CRC, and
decodes the journal's rows written after the covered bytes (at most ``summary_interval_s`` of logging). When
the index is missing, stale (another journal, a journal shorter than it says) or damaged, the reader falls
back to decoding the whole journal, so results are always the journal's; the index only makes them fast.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import CorruptStoreError
from unitrack.persistence.series import Series, SeriesRequest, select_points
from unitrack.store.contents import JOURNAL_NAME, load_contents, writer_alive
from unitrack.store.journal import FRAME, MAGIC, RowCodec, frame, read_journal, schema_payload
from unitrack.store.schema import ColumnKind

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["FRAME_BYTES", "SeriesIndexWriter", "read_series"]

logger = logging.getLogger(__name__)

INDEX_DIR = ".series"
INDEX_FILE = "index.json"
INDEX_VERSION = 1
METRICS = "metrics"
#: Bytes of one point in a data file: step, value, time as float64.
POINT_BYTES = 24
_LENGTH = struct.Struct("<I")
#: Bytes of a journal frame's header (payload length, CRC) before its payload.
FRAME_BYTES = FRAME.size
#: Bytes of metrics rows a writer keeps before turning them into points, when a second is not over yet (see
#: :meth:`SeriesIndexWriter.add`): about 100,000 rows, a few MB of memory at most.
PACK_BYTES = 4 << 20
#: The longest repeating group of rows :meth:`SeriesIndexWriter._pack` looks for (metrics logged per step).
MAX_PERIOD = 64


# ------------------------------------------------------------------------------------------------ reading
def _points(rows: Any) -> npt.NDArray[np.float64]:
    """A metric's (step, value, time) rows in journal order as one series: a later point at a step replaces
    the earlier one in place, as every backend does (NaN steps: points logged without one)."""
    import numpy as np

    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    steps = arr[:, 0]
    stepped = steps[~np.isnan(steps)]
    if len(stepped) < 2 or bool(np.all(stepped[1:] > stepped[:-1])):
        return arr  # the usual case: each step once, in order
    out: list[list[float]] = []
    at: dict[float, int] = {}
    for step, value, when in arr.tolist():
        if step == step:  # not NaN
            where = at.get(step)
            if where is not None:
                out[where][1:] = [value, when]
                continue
            at[step] = len(out)
        out.append([step, value, when])
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def _step_out(x: float) -> int | float:
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _rows_by_metric(codec: RowCodec, payloads: list[bytes], wanted: set[str]) -> dict[str, list[Any]]:
    """The (step, value, time) rows of the wanted metrics from metrics-table payloads."""
    if not payloads:
        return {}
    steps, names, values, times = codec.decode(payloads)
    out: dict[str, list[Any]] = {}
    for i, name in enumerate(names):
        if name in wanted:
            out.setdefault(name, []).append((steps[i], values[i], times[i]))
    return out


def _metric_codec(tables: Any) -> RowCodec | None:
    table = tables.get(METRICS)
    if table is None or table.codec.columns[:4] != ["step", "name", "value", "time"]:
        return None
    codec: RowCodec = table.codec
    return codec


def _read_full(folder: str, wanted: set[str]) -> dict[str, list[Any]]:
    """Every wanted metric's rows, decoded from the whole journal (the slow, always-right path)."""
    contents = load_contents(folder)
    table = contents.tables.get(METRICS)
    codec = _metric_codec(contents.tables)
    if table is None or codec is None:
        return {}
    return _rows_by_metric(codec, table.payloads, wanted)


def _load_index(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, INDEX_DIR, INDEX_FILE), "rb") as fh:
            index = json.loads(fh.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("series index of %s unreadable (%s); reading the journal instead", folder, exc)
        return None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        return None
    return index


def _read_indexed(folder: str, index: dict[str, Any], wanted: set[str]) -> dict[str, list[Any]] | None:
    """The wanted metrics' rows from the index plus the journal's tail; None when the index cannot be used."""
    import numpy as np

    journal = os.path.join(folder, JOURNAL_NAME)
    try:
        inode, covered = (int(v) for v in index["journal"])
        with open(journal, "rb") as fh:
            if os.fstat(fh.fileno()).st_ino != inode:
                return None  # the journal was started afresh
            fh.seek(covered)
            tail = fh.read()
        metrics = index["metrics"]
        schemas = [
            schema_payload(str(name), int(tid), [str(c) for c, _ in cols], [ColumnKind(k) for _, k in cols])
            for name, tid, cols in index["tables"]
        ]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if os.path.getsize(journal) < covered:
        return None
    out: dict[str, list[Any]] = {}
    for name in wanted:
        entry = metrics.get(name)
        if entry is None:
            continue
        try:
            count, crc = int(entry["count"]), int(entry["crc"])
            path = os.path.join(folder, INDEX_DIR, os.path.basename(str(entry["file"])))
            data = np.fromfile(path, dtype="<f8", count=count * 3)
        except (OSError, KeyError, TypeError, ValueError):
            return None
        if len(data) != count * 3 or zlib.crc32(data.data) != crc:
            logger.warning("series index of %s: %s is damaged; reading the journal instead", folder, name)
            return None
        out[name] = data.reshape(-1, 3)  # type: ignore[assignment]
    if tail:
        try:
            contents = read_journal(
                journal, MAGIC + b"".join(frame(p) for p in schemas) + tail, writer_alive=writer_alive(folder)
            )
        except CorruptStoreError:
            return None
        codec = _metric_codec(contents.tables)
        table = contents.tables.get(METRICS)
        if codec is not None and table is not None and table.payloads:
            for name, rows in _rows_by_metric(codec, table.payloads, wanted).items():
                old = out.get(name)
                new = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
                out[name] = new if old is None else np.concatenate([old, new])  # type: ignore[assignment]
    return out


def read_series(folder: str, uid: str, request: SeriesRequest) -> list[Series]:
    """The series a request asks of one trial's store folder (empty for a trial that has no store yet)."""
    import numpy as np

    if not os.path.exists(os.path.join(folder, JOURNAL_NAME)) and not os.path.exists(
        os.path.join(folder, "store.h5")
    ):
        return []
    wanted = set(request.metrics)
    index = _load_index(folder)
    rows = None if index is None else _read_indexed(folder, index, wanted)
    if rows is None:
        rows = _read_full(folder, wanted)
    out = []
    for name in request.metrics:
        found = rows.get(name)
        if found is None or len(found) == 0:
            continue
        arr = _points(found)
        kept, x, total = select_points(arr[:, 0], arr[:, 1], request)
        if not total:
            continue
        chosen = arr[kept]
        xs = x[kept]
        whole = bool(np.all((xs == np.floor(xs)) & (np.abs(xs) < 2**53)))
        out.append(
            Series(
                uid,
                name,
                tuple(xs.astype(np.int64).tolist() if whole else [_step_out(v) for v in xs.tolist()]),
                tuple(chosen[:, 1].tolist()),
                tuple(chosen[:, 2].tolist()),
                total,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ writing
class SeriesIndexWriter:
    """Keeps a trial's series index up to date; used by the trial's one writer.

    Args:
        folder: The trial's store folder.
        codecs: The store's table codecs (name -> RowCodec), to record the tables' layouts and read the
            metrics rows it is given.
    """

    def __init__(self, folder: str, codecs: dict[str, RowCodec]) -> None:
        self.folder = folder
        self.dir = os.path.join(folder, INDEX_DIR)
        self.codecs = codecs
        # The frames of the metrics rows written since they were last turned into points, as the journal writer
        # wrote them, one after the other: the per-call cost is one bytearray +=, and no object per row or per
        # call stays alive. (Keeping (step, name, value, time) tuples and converting them in Python cost about
        # 120 ns a row, 12% of a bare logging loop's CPU.)
        self.pending: bytearray | None = None  # None: not maintained (see open())
        # The packed rows not yet in the data files: metric name -> arrays of (step, value, time) float64 rows.
        self.packed: dict[str, list[npt.NDArray[np.float64]]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self._valid = False

    def open(self) -> None:
        """Adopt the index when it covers the whole journal, else rebuild it from the journal.

        A failure here (a full disk) never stops the run: the index is left as it was, which readers
        still use correctly (with a longer journal tail), and this writer stops maintaining it.
        """
        try:
            self._open()
        except (OSError, CorruptStoreError) as exc:
            self._disable(exc)

    def _disable(self, exc: BaseException) -> None:
        logger.warning("series index of %s not maintained (%s); charts read the journal", self.folder, exc)
        self._valid = False
        self._clear()

    def _clear(self) -> None:
        self.pending = bytearray() if self._valid else None
        self.packed = {}

    def _open(self) -> None:
        journal = os.path.join(self.folder, JOURNAL_NAME)
        index = _load_index(self.folder)
        try:
            st = os.stat(journal)
        except FileNotFoundError:
            return
        if index is not None and index.get("journal") == [st.st_ino, st.st_size]:
            metrics = index.get("metrics")
            if isinstance(metrics, dict) and self._cut_to(metrics):
                self.metrics = metrics
                self._valid = True
                self._clear()
                return
        self._rebuild()

    def _cut_to(self, metrics: dict[str, Any]) -> bool:
        """Cut each data file to the points the index names (a writer killed mid-flush leaves more)."""
        try:
            for entry in metrics.values():
                path = os.path.join(self.dir, os.path.basename(str(entry["file"])))
                size = int(entry["count"]) * POINT_BYTES
                if os.path.getsize(path) < size:
                    return False
                if os.path.getsize(path) > size:
                    os.truncate(path, size)
        except (OSError, KeyError, TypeError, ValueError):
            return False
        return True

    def _rebuild(self) -> None:
        """Write every metric's points from the journal (a store from before the index, or after a crash)."""
        import numpy as np

        contents = load_contents(self.folder, holds_lock=True)
        table = contents.tables.get(METRICS)
        codec = _metric_codec(contents.tables)
        os.makedirs(self.dir, exist_ok=True)
        for entry in os.listdir(self.dir):
            if entry.endswith(".bin"):
                os.unlink(os.path.join(self.dir, entry))
        self.metrics = {}
        if table is not None and codec is not None and table.payloads:
            steps, names, values, times = codec.decode(table.payloads)
            by_name: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                by_name.setdefault(name, []).append(i)
            for name, rows in by_name.items():
                pick = np.asarray(rows)
                block = np.stack([steps[pick], values[pick], times[pick]], axis=1).astype("<f8")
                self._append(name, block.tobytes())
        self._valid = True
        self._clear()
        self._write_index(contents.valid_end)

    def add(self, frames: bytes) -> None:
        """Remember metrics rows just written to the journal, as the bytes of their frames (no work per row here:
        they become points when the files are appended, once a second, or every :data:`PACK_BYTES`).

        The backend's writing path does this inline; ``pending`` is None while the index is not maintained.
        """
        pending = self.pending
        if pending is not None:
            pending += frames
            if len(pending) >= PACK_BYTES:
                self.pack()

    def pack(self) -> None:
        """Turn the pending rows into points now (keeping at most a repeating group's worth pending); on a
        failure, stop maintaining the index (never raises)."""
        try:
            self._pack(final=False)
        except (OSError, ValueError) as exc:
            self._disable(exc)

    def _codec(self) -> RowCodec:
        codec = self.codecs.get(METRICS)
        if codec is None or codec.single_text != 1 or codec.columns[:4] != ["step", "name", "value", "time"]:
            raise OSError(f"unexpected layout of the metrics table: {codec and codec.columns}")
        return codec

    def _pack(self, final: bool = True) -> None:
        """Turn the pending frames into each metric's (step, value, time) points, in ``self.packed``.

        Without ``final``, the last few rows (less than a repeating group) stay pending, packed with the next.
        """

        stream = self.pending
        if not stream:
            return
        codec = self._codec()
        at, end = 0, len(stream)
        while at < end:
            done = self._pack_periodic(stream, at, codec)
            if not done:  # rows that do not repeat (a metric logged now and then): read one by one
                if not final and end - at < MAX_PERIOD * (FRAME_BYTES + codec.fixed_size):
                    break
                done = self._pack_frames(stream, at, MAX_PERIOD, codec)
            at += done
        del stream[:at]  # (no view of it is left: every point was copied out)

    def _keep(self, name: str, points: npt.NDArray[np.float64]) -> None:
        self.packed.setdefault(name, []).append(points.astype("<f8", copy=False))

    def _frame(self, stream: bytearray, at: int, fixed: int) -> tuple[int, bytes]:
        """(bytes of the frame at ``at``, its metric's name as bytes)."""
        (length,) = _LENGTH.unpack_from(stream, at)
        return FRAME_BYTES + length, bytes(stream[at + FRAME_BYTES + fixed : at + FRAME_BYTES + length])

    def _pack_periodic(self, stream: bytearray, at: int, codec: RowCodec) -> int:
        """Pack the leading repeats of the first group of frames from ``at`` (one row per metric, the same metrics
        in the same order each step: a training loop's rows) as one fixed-width table: numpy views with a
        stride of the group's width, a few operations per metric whatever the number of rows.

        Returns:
            How many bytes it packed: the most whole repeats that hold the first group's frame lengths, tables
            and names (0 when the frames do not start with a group that repeats).
        """
        import numpy as np

        fixed, end = codec.fixed_size, len(stream)
        sizes: list[int] = []
        names: list[bytes] = []
        pos = at
        while len(sizes) < MAX_PERIOD and pos < end:
            size, name = self._frame(stream, pos, fixed)
            if names and name == names[0]:
                break
            sizes.append(size)
            names.append(name)
            pos += size
        width = pos - at
        if pos >= end or len(set(names)) != len(names) or self._frame(stream, pos, fixed)[1] != names[0]:
            return 0
        try:
            texts = [name.decode("utf-8") for name in names]
        except UnicodeDecodeError:
            return 0
        head = codec.numpy_dtype()
        # The bytes every repeat shares with the first: each frame's length (where the next frame starts) and
        # its metric's name (the stream holds only metrics rows, whose payload is the fixed fields then the
        # name), each read as one opaque value per repeat: one comparison each, whatever the number of rows.
        ranges: list[tuple[int, np.dtype[Any], Any]] = []
        offset = 0
        for size in sizes:
            for low, high in ((offset, offset + 4), (offset + FRAME_BYTES + fixed, offset + size)):
                kind = np.dtype(f"V{high - low}")
                ranges.append((low, kind, np.frombuffer(bytes(stream[at + low : at + high]), kind)[0]))
            offset += size

        def holds(repeats: int) -> bool:
            return all(
                bool((np.ndarray((repeats,), kind, stream, at + low, (width,)) == first).all())
                for low, kind, first in ranges
            )

        repeats = (end - at) // width
        if not holds(repeats):  # a frame breaks the pattern: the most whole repeats before it (binary search)
            low, high = 1, repeats - 1  # one repeat holds (it is the template); `repeats` does not
            while low < high:
                middle = (low + high + 1) // 2
                if holds(middle):
                    low = middle
                else:
                    high = middle - 1
            repeats = low
        offset = 0
        for size, text in zip(sizes, texts, strict=True):
            fields = np.ndarray((repeats,), head, stream, at + offset + FRAME_BYTES, (width,))
            points = np.empty((repeats, 3), dtype="<f8")
            points[:, 0], points[:, 1], points[:, 2] = fields["c0"], fields["c2"], fields["c3"]
            self._keep(text, points)
            offset += size
        return repeats * width

    def _pack_frames(self, stream: bytearray, at: int, count: int, codec: RowCodec) -> int:
        """Pack up to ``count`` frames from ``at`` one by one (the general case); returns the bytes packed."""
        import numpy as np

        payloads: list[bytes] = []
        pos, end = at, len(stream)
        while len(payloads) < count and pos < end:
            (length,) = _LENGTH.unpack_from(stream, pos)
            payloads.append(bytes(stream[pos + FRAME_BYTES : pos + FRAME_BYTES + length]))
            pos += FRAME_BYTES + length
        steps, names, values, times = codec.decode(payloads)
        block = np.stack([steps, values, times], axis=1)
        codes = {name: code for code, name in enumerate(dict.fromkeys(names))}
        if len(codes) == 1:
            self._keep(names[0], block)
        else:
            code = np.fromiter(map(codes.__getitem__, names), dtype=np.int64, count=len(names))
            for name, number in codes.items():
                self._keep(name, block[code == number])
        return pos - at

    def _append(self, name: str, data: bytes | memoryview) -> None:
        entry = self.metrics.get(name)
        if entry is None:
            entry = self.metrics[name] = {"file": f"{len(self.metrics)}.bin", "count": 0, "crc": 0}
        fd = os.open(os.path.join(self.dir, entry["file"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        entry["count"] += len(data) // POINT_BYTES
        entry["crc"] = zlib.crc32(data, entry["crc"])

    def flush(self) -> None:
        """Append the pending points to their files, then say so in ``index.json`` (never raises)."""
        if not self._valid:
            self._clear()
            return
        try:
            self._flush()
        except OSError as exc:
            self._disable(exc)

    def _flush(self) -> None:
        journal_end = os.path.getsize(os.path.join(self.folder, JOURNAL_NAME))
        try:
            self._pack()
        except ValueError as exc:  # rows the codec cannot read: never written by this writer
            raise OSError(f"metrics rows unreadable: {exc}") from exc
        if self.packed:
            os.makedirs(self.dir, exist_ok=True)
            import numpy as np

            for name, blocks in self.packed.items():
                block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
                self._append(name, np.ascontiguousarray(block).data.cast("B"))
            self._clear()
        self._write_index(journal_end)

    def _write_index(self, journal_end: int) -> None:
        from unitrack.persistence.backends.file import atomic_write

        journal = os.path.join(self.folder, JOURNAL_NAME)
        try:
            inode = os.stat(journal).st_ino
        except FileNotFoundError:
            return
        tables = [
            [name, codec.table_id, [[c, k.value] for c, k in zip(codec.columns, codec.kinds, strict=True)]]
            for name, codec in self.codecs.items()
        ]
        index = {
            "version": INDEX_VERSION,
            "journal": [inode, journal_end],
            "tables": tables,
            "metrics": self.metrics,
        }
        os.makedirs(self.dir, exist_ok=True)
        atomic_write(Path(self.dir) / INDEX_FILE, json.dumps(index).encode("utf-8"), fsync=False)
