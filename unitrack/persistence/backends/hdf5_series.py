"""The ``hdf5://`` backend's series index: each metric's points in a file of its own, for charts.

A trial's store journal holds every metric's rows interleaved, with a checksum per row: the durable record,
but reading one metric of a long run from it means decoding every row of every metric in Python. The writer
therefore also keeps, next to the journal, a derived copy of the points by metric::

    {trial}/.series/index.json     {"version", "journal": [inode, bytes covered], "tables": [...schemas],
                                    "metrics": {name: {"file": "3.bin", "count": n, "crc": crc32}}}
    {trial}/.series/3.bin          n points as little-endian float64 triples (step or NaN, value, time)

The files are appended at most once per ``summary_interval_s`` (when the trial's summary is written), so the
per-step path gains only a list append. ``index.json`` is replaced atomically after the data files are
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
import zlib
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import CorruptStoreError
from unitrack.persistence.series import Series, SeriesRequest, select_points
from unitrack.store.contents import JOURNAL_NAME, load_contents, writer_alive
from unitrack.store.journal import MAGIC, RowCodec, frame, read_journal, schema_payload
from unitrack.store.schema import ColumnKind

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["SeriesIndexWriter", "read_series"]

logger = logging.getLogger(__name__)

INDEX_DIR = ".series"
INDEX_FILE = "index.json"
INDEX_VERSION = 1
METRICS = "metrics"
#: Bytes of one point in a data file: step, value, time as float64.
POINT_BYTES = 24
#: A metrics row (step, name, value, time) -> its metric name, and each column of its point.
_NAME = itemgetter(1)
_COLUMNS = (itemgetter(0), itemgetter(2), itemgetter(3))


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
        codecs: The store's table codecs (name -> RowCodec), to record the tables' layouts.
    """

    def __init__(self, folder: str, codecs: dict[str, RowCodec]) -> None:
        self.folder = folder
        self.dir = os.path.join(folder, INDEX_DIR)
        self.codecs = codecs
        # The rows written since the last flush, in one flat list: the per-step cost is one list.extend. (The row
        # tuples hold only floats and text, which the garbage collector stops tracking; a list per call kept
        # alive would make it scan them all, over and over.)
        self.pending: list[tuple[float, str, float, float]] = []
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
        self.pending = []

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
        self._write_index(contents.valid_end)

    def add(self, rows: Sequence[tuple[float, str, float, float]]) -> None:
        """Remember rows just written to the journal (no work per row here: that is done once a second)."""
        if self._valid:
            self.pending.extend(rows)

    def _append(self, name: str, data: bytes) -> None:
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
        if self.pending:
            import numpy as np

            # Every per-row step runs in C (map, itemgetter, fromiter): about 0.2 microsecond per point, once a
            # second, off the training loop's per-step path.
            rows = self.pending
            n = len(rows)
            names = list(map(_NAME, rows))
            codes = {name: code for code, name in enumerate(dict.fromkeys(names))}
            block = np.empty((n, 3), dtype="<f8")
            for column, pick in enumerate(_COLUMNS):
                block[:, column] = np.fromiter(map(pick, rows), dtype=np.float64, count=n)
            os.makedirs(self.dir, exist_ok=True)
            if len(codes) == 1:
                self._append(names[0], block.tobytes())
            else:
                code = np.fromiter(map(codes.__getitem__, names), dtype=np.int64, count=n)
                for name, number in codes.items():
                    self._append(name, block[code == number].tobytes())
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
