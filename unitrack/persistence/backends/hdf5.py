"""``hdf5://DIR`` (alias ``cox://DIR``): the embedded default — one cox Store folder per trial.

``DIR`` is a folder of trials, laid out so that cox's tools, xmen's and track's all see the same runs::

    DIR/
      .unitrack/index.json       projects and groups (small; rewritten atomically under .unitrack/index.lock)
      .unitrack/trials.jnl       where each trial's folder is (appended under the lock; rebuilt from the
                                 folders when missing or damaged)
      <trial name>/              a cox Store (unitrack.store.Store) and a trial
        store.journal, store.h5  tables: metadata (one row of parameters), metrics (step, name, value, time),
                                 trial_log (every other change to the trial, one JSON row per call)
        trial.json               the trial's summary: every field but the metric points, with each metric's
                                 latest value; what queries read, so a query never opens an HDF5 file
        .series/                 each metric's points in a file of its own (derived from the journal, for
                                 charts: ``find_series`` reads one metric without decoding the others; see
                                 :mod:`.hdf5_series`)

One source of truth per trial: the store's journal (metrics and trial_log rows) — durable when a call returns,
replayed on open, and what this backend and ``CollectionReader`` read. A writer keeps none of its rows in memory
(``Store(keep_rows=False)``), so a run of any length logs in constant memory. ``store.h5``, the same tables for
pandas and cox's tools, is rebuilt atomically when the writer commits or closes the trial (never inside a step).
``trial.json`` is a summary written atomically when the trial is created, when its status changes, at most once
per ``summary_interval_s`` otherwise, and at ``commit()``/``close()``; a full read of a trial replays the rows
written after its summary, so results are always complete. A query run in another
process while a trial is being written filters on a summary at most ``summary_interval_s`` old (status
changes are never late).

A trial's store is created when it logs its first point or first gets a status of track's running, error or
finished groups (``Running``, ``Completed``, ``Exception``...): every trial that ran is a cox store, even one that
never logged a metric. Until then (registered, e.g. with xmen's ``CustomStatus('registered', 1)``) a trial is
its folder and ``trial.json`` alone, so registering a sweep of a thousand trials writes no store.

Every file this backend writes for itself detects damage (:mod:`unitrack.persistence.integrity`): ``trial.json``
and ``index.json`` carry a SHA-256 on their first line, ``trials.jnl`` a checksum per frame, and a summary must
agree with its store (the store holds at least the rows the summary counts). A trial whose files cannot be read is
listed with status ``damaged`` (:data:`~unitrack.persistence.lifecycle.DAMAGED`) and ``metadata["damage"]``
naming the file and the reason, with a warning, while every other trial is read as usual; writing to it raises
:class:`~unitrack.errors.CorruptStoreError` naming the file. Older unsealed summaries are read as they are.

A trial has one writer at a time (the Store's lock): a second process writing the same trial gets
``StoreLockedError`` naming the holder. Metric values are stored as float64 (as TensorBoard does) and steps as
float64 with NaN for "no step"; integral steps come back as ints.

Example:
    >>> import tempfile
    >>> from unitrack.persistence.structure import Trial
    >>> from unitrack.store.readers import CollectionReader
    >>> root = tempfile.mkdtemp()
    >>> with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
    ...     trial = db.new_trial(Trial(name="run-1", parameters={"lr": 0.1}))
    ...     db.log_trial_metrics(trial, step=1, loss=0.5)
    >>> CollectionReader(root).df("metrics")[["step", "name", "value", "exp_id"]].values.tolist()
    [[1.0, 'loss', 0.5, 'run-1']]
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import filelock

from unitrack.errors import (
    ConcurrentWrite,
    CorruptStoreError,
    InvalidNameError,
    NotFoundError,
    SchemaError,
    StorageError,
    StoreLockedError,
)
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.backends.hdf5_series import FRAME_BYTES, PACK_BYTES, SeriesIndexWriter, read_series
from unitrack.persistence.integrity import atomic_write, frame, read_frames, seal, unseal
from unitrack.persistence.lifecycle import DAMAGED
from unitrack.persistence.memory import Database, _MetricRecord, _TrialRecord
from unitrack.persistence.protocol import Protocol, trial_uid
from unitrack.persistence.query import Query, compile_query
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import (
    MAX_METRIC_INT,
    GroupUpdate,
    Project,
    Status,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_mapping,
    check_metric_name,
    check_number,
    check_step,
    split_uid,
    status_to_json,
)
from unitrack.persistence.uri import ParsedURI, as_uri, option_flag, option_float
from unitrack.store import Store
from unitrack.store.contents import JOURNAL_NAME, is_store_dir
from unitrack.store.names import validate_hdf5_name

__all__ = ["HDF5Protocol"]

logger = logging.getLogger(__name__)

SUMMARY = "trial.json"
SUMMARY_FORMAT = "unitrack.trial/1"
INDEX_DIR = ".unitrack"
INDEX_FORMAT = "unitrack.index/1"
#: .unitrack/trials.jnl: one frame ``{"uid": ..., "folder": ...}`` per trial (see unitrack.persistence.integrity).
TRIALS_INDEX = "trials.jnl"
#: How an older (unsealed) trial.json or index.json starts: read as it is. Anything else must be sealed, and no
#: single flipped bit turns a sealed file into one of these.
_LEGACY_SUMMARY = re.compile(rb'\s*\{"dtype": "trial"')
_LEGACY_INDEX = re.compile(rb'\s*\{\s*"format"\s*:\s*"unitrack\.db/1"')
METRICS = "metrics"
PARAMETERS = "metadata"
LOG = "trial_log"
METRICS_SCHEMA = {"step": float, "name": str, "value": float, "time": float}
LOG_SCHEMA = {"update": str}
#: Threads reading the trials of one find_series call.
SERIES_THREADS = min(8, os.cpu_count() or 1)


def _plain_json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default output, for plain data already checked (no cycles possible).

    ``json.dumps`` builds CPython's C encoder anew for every call, which costs as much as encoding a message's
    log row; this builds it once (``json.encoder.c_make_encoder``, the accelerator json itself uses), and falls
    back to ``JSONEncoder.encode`` where that is missing or behaves differently.
    """
    encoder = json.JSONEncoder(allow_nan=True, check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    try:
        iterencode = make(
            None, encoder.default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        sample = {"a": [1.5, -0.0, float("nan"), None, True, 2**70, 'é\n"x'], "b": {}}
        if "".join(iterencode(sample, 0)) != json.dumps(sample):
            return encoder.encode  # pragma: no cover - a different C encoder
    except (TypeError, ValueError):  # pragma: no cover - another signature
        return encoder.encode

    def encode(obj: Any) -> str:
        return "".join(iterencode(obj, 0))

    return encode


#: json.dumps for the per-message log row (see _plain_json_encoder).
_ENCODE = _plain_json_encoder()


@dataclass
class _Writing:
    """A trial this object writes: its open Store and its state in memory."""

    folder: str
    store: Store
    record: _TrialRecord
    log_rows: int
    created: int
    #: Latest value of each metric. The points themselves live only in the store's journal (read back when a
    #: snapshot is asked for), so logging costs no memory per point.
    latest: dict[str, float] = field(default_factory=dict)
    #: The step of the last point written for each metric (its value is in ``latest``), to skip writing the same
    #: point twice in a row.
    last_step: dict[str, float] = field(default_factory=dict)
    summary_at: float = 0.0
    dirty: bool = False
    #: Rows in the store's ``metrics`` table: recorded in the summary, so a reader can tell a store that lost
    #: rows (a truncated or emptied journal) from one that holds what was written.
    metric_rows: int = 0
    #: Rows of each metric (``Metric.logged`` in the summary: it changes whenever the series does).
    logged: dict[str, int] = field(default_factory=dict)
    #: Each metric's points in a file of its own, for charts (appended when the summary is written).
    series: SeriesIndexWriter | None = None


def _step_out(value: float) -> Any:
    if math.isnan(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _parameter_row(parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """cox's one-row ``metadata`` table: scalars as they are, anything else as JSON text.

    Keys that cannot be HDF5 column names are left out of the table (they stay in the summary).
    """
    schema: dict[str, Any] = {}
    row: dict[str, Any] = {}
    for key, value in parameters.items():
        try:
            validate_hdf5_name("column", key)
        except (InvalidNameError, SchemaError):
            logger.debug("parameter %r is not a valid column name; kept in trial.json only", key)
            continue
        if isinstance(value, (bool, int, float, str)) and not (
            isinstance(value, int) and abs(value) >= 2**63
        ):
            schema[key], row[key] = type(value), value
        else:
            schema[key], row[key] = str, json.dumps(value, allow_nan=True)
    return schema, row


def _check_summary(path: str, summary: Any) -> Trial:
    """The trial ``summary`` describes; CorruptStoreError unless it is a trial summary a reader can use (issue #12
    item 14: a damaged one gave ``KeyError: 'uid'``)."""
    if not isinstance(summary, dict) or summary.get("dtype") != "trial":
        raise CorruptStoreError(path, 0, "not a trial summary")
    uid = summary.get("uid")
    if not isinstance(uid, str):
        raise CorruptStoreError(path, 0, "its uid is missing")
    try:
        trial = from_json(summary)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # SchemaError is a ValueError
        raise CorruptStoreError(path, 0, f"not a readable trial ({exc})") from exc
    if not isinstance(trial, Trial) or trial.uid != uid:
        raise CorruptStoreError(path, 0, f"its uid {uid!r} is not the uid of the trial it describes")
    return trial


def _opens_store(status: StatusLike | None) -> bool:
    """Whether a trial given this status has run (or was declared done), and so gets its store now.

    Statuses of track's running, error and finished groups (value >= 100: ``Running``, ``Completed``,
    ``Exception``, xmen's ``timeout``/``deleted``...) do; registration-time ones (``CreatedGroup``, xmen's
    ``CustomStatus('registered', 1)``, any custom value below 100) do not, so registering a sweep writes no store.
    """
    return status is not None and status.value >= Status.RunningGroup.value


def _beyond_metrics(update: TrialUpdate) -> bool:
    """Whether an update changes more than metric points (or carries a batch id): it then needs a log row."""
    return bool(
        update.parameters
        or update.metadata
        or update.tags
        or update.chronos
        or update.errors
        or update.status is not None
        or update.project_id is not None
        or update.group_id is not None
        or update.description is not None
        or update.writer is not None
    )


class HDF5Protocol(Protocol):
    """A folder of cox Stores, one per trial, behind the Protocol.

    Args:
        uri: ``hdf5://DIR`` (relative) or ``hdf5:///abs/DIR``; options ``fsync`` (default false),
            ``summary_interval_s`` (default 1), ``lock_timeout_s`` (default 30).
        strict: check that a trial's project and group exist.
        max_open: how many trial Stores one object keeps open for writing (least recently used are closed).

    Raises:
        StorageError: on the first write, when the folder cannot be created (reading creates nothing).
    """

    def __init__(self, uri: str | ParsedURI, strict: bool = True, *, max_open: int = 64) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        if not self.uri.file_path:
            raise StorageError(f"{self.uri} names no folder; use hdf5://runs or hdf5:///abs/runs.")
        self.root = Path(os.path.expanduser(self.uri.file_path))
        self.strict = strict
        self.fsync = option_flag(self.uri, "fsync", False)
        self.summary_interval_s = option_float(self.uri, "summary_interval_s", 1.0)
        lock_timeout_s = option_float(self.uri, "lock_timeout_s", 30.0)
        self.max_open = max_open
        index_dir = self._index_dir = self.root / INDEX_DIR
        self._index_made = False
        self._batch_depth = 0
        self._batch_index: Database | None = None
        self._index_path = index_dir / "index.json"
        self._lock = filelock.FileLock(str(index_dir / "index.lock"), timeout=lock_timeout_s)
        self._lock_timeout_s = lock_timeout_s
        self._mutex = threading.RLock()
        self._writing: OrderedDict[str, _Writing] = OrderedDict()
        self._releasing: set[str] = set()  # trials a commit is letting go of, outside the mutex
        self._released = threading.Condition(self._mutex)
        self._summaries: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        # The trial each summary read since its last view describes, built while checking it: the next view of
        # that folder takes it (nobody else holds it) instead of building it again (a listing reads each once).
        self._unviewed: dict[str, Trial] = {}
        # .unitrack/trials.jnl: one frame per trial, appended under the index lock, so inserts and writes find
        # a trial without scanning every folder.
        self._trials_index = index_dir / TRIALS_INDEX
        self._known: dict[str, str] = {}
        self._known_ino = -1
        self._owners: dict[str, str] = {}  # folder -> the uid of the trial it holds
        self._known_offset = 0
        self._max_revision: dict[str, int] = {}
        self._closed = False

    # -------------------------------------------------------------------------------------------- locks
    def _locked(self) -> filelock.AcquireReturnProxy[filelock.BaseFileLock]:
        # The folder and its index are made by the first write: reading (unitrack view) never creates a file.
        if not self._index_made:
            try:
                self._index_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"Cannot create {self._index_dir}: {exc.strerror or exc}") from exc
            self._index_made = True
        try:
            return self._lock.acquire()
        except filelock.Timeout as exc:
            raise ConcurrentWrite(str(self._lock.lock_file), self._lock_timeout_s) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.uri} is closed; open a new HDF5Protocol to use it again.")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold the index lock across many writes (registering a grid of trials takes it once, not per trial).

        While it is held no other process changes the index, so it is read once for the whole block.
        """
        with self._mutex, self._locked():
            if self._batch_depth == 0:
                self._trusted_index()
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self._batch_index = None

    # -------------------------------------------------------------------------------- projects, groups
    def _index(self) -> Database:
        if self._batch_index is not None:
            return self._batch_index
        if self._batch_depth:
            self._batch_index = self._read_index()
            return self._batch_index
        return self._read_index()

    def _read_index(self) -> Database:
        """Projects and groups, from the sealed ``.unitrack/index.json`` (or an older unsealed one)."""
        try:
            raw = self._index_path.read_bytes()
        except FileNotFoundError:
            return Database(self.strict)
        source = str(self._index_path)
        advice = "Restore it from a backup or remove it (projects and groups cannot be read until then)"
        if _LEGACY_INDEX.match(raw):
            try:
                data, verified = json.loads(raw), False
            except ValueError as exc:
                raise CorruptStoreError(
                    source, getattr(exc, "pos", 0), "not valid JSON", advice=advice
                ) from exc
        else:
            data, _ = unseal(raw, source, (INDEX_FORMAT,), advice=advice)
            verified = True
        try:
            return Database.from_json(data, strict=self.strict, source=source, verified=verified)
        except SchemaError as exc:
            raise CorruptStoreError(source, 0, str(exc), advice=advice) from exc

    def _save_index(self, db: Database) -> None:
        if self._batch_depth:
            self._batch_index = db
        data = db.to_json()
        del data["format"]
        atomic_write(self._index_path, seal(data, INDEX_FORMAT, lines=True), fsync=self.fsync)

    # ----------------------------------------------------------------------------------- trial index
    def _learn(self, uid: str, folder: str) -> None:
        previous = self._owners.get(folder)
        if previous is not None and previous != uid:
            # The folder was deleted and given to a new trial (#12): the old uid must not resolve to it.
            self._known.pop(previous, None)
        self._owners[folder] = uid
        self._known[uid] = folder
        head, _, revision = uid.rpartition("_")
        if revision.isdigit():
            self._max_revision[head] = max(self._max_revision.get(head, -1), int(revision))

    def _read_known(self, *, locked: bool = False) -> bool:
        """Read the frames other processes appended to the trial index since we last looked.

        Returns False when the index is missing or damaged (it is derived data: a scan of the folders finds every
        trial, and :meth:`_trusted_index` rebuilds it). ``locked``: the caller holds the index lock, so no one is
        appending and a cut frame at the end is a killed writer's.
        """
        if self._batch_depth:
            return (
                True  # inside batch(), under the index lock: nobody else appends (read when the batch began)
            )
        path = self._trials_index
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(fd)
            if st.st_ino != self._known_ino:  # rebuilt by another process: read it from the start
                self._known_ino, self._known_offset = st.st_ino, 0
            data = os.pread(fd, max(0, st.st_size - self._known_offset), self._known_offset)
        finally:
            os.close(fd)
        try:
            frames, used = read_frames(str(path), data, self._known_offset, settled=locked)
            entries = [json.loads(payload) for _, payload in frames]
            for entry in entries:
                if not isinstance(entry.get("uid"), str) or not isinstance(entry.get("folder"), str):
                    raise CorruptStoreError(
                        str(path), self._known_offset, f"an entry is not a uid and a folder: {entry!r}"
                    )
        except (CorruptStoreError, ValueError, AttributeError) as exc:
            logger.warning(
                "%s cannot be read (%s); finding trials by scanning %s instead", path, exc, self.root
            )
            return False
        for entry in entries:
            self._learn(entry["uid"], entry["folder"])
        self._known_offset += used
        return True

    def _trusted_index(self) -> None:
        """Make the trial index complete (caller holds the index lock): read it, or rebuild it from a scan of the
        folders when it is missing (a root made by an older version) or damaged."""
        if self._read_known(locked=True):
            return
        for uid, (folder, _) in self._scan().items():
            self._learn(uid, folder)
        data = b"".join(
            frame(_ENCODE({"uid": uid, "folder": folder}).encode("ascii"))
            for uid, folder in self._known.items()
        )
        atomic_write(self._trials_index, data, fsync=self.fsync)
        self._known_ino, self._known_offset = os.stat(self._trials_index).st_ino, len(data)

    def _record_known(self, uid: str, folder: str) -> None:
        """Append a trial to the index (caller holds the index lock and has read the index to its end)."""
        data = frame(_ENCODE({"uid": uid, "folder": folder}).encode("ascii"))
        fd = os.open(self._trials_index, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._known_offset += len(data)
        self._learn(uid, folder)

    def _folder_of(self, uid: str) -> str:
        """The folder of trial ``uid``; a full scan only for trials the index does not list (copied in).

        Raises:
            NotFoundError: when there is no such trial.
        """
        if uid not in self._known:
            self._read_known()
        if uid not in self._known:
            for found, (found_folder, _) in self._scan().items():
                self._known.setdefault(found, found_folder)
        known = self._known.get(uid)
        if known is None:
            raise NotFoundError(f"No trial with uid {uid!r} in {self.root}; create it with new_trial first.")
        return known

    def artifact_dir(self, uid: str) -> Path:
        """Where trial ``uid`` keeps its artifacts: ``<trial folder>/artifacts`` (see ``persistence.artifacts``)."""
        return self.root / self._folder_of(uid) / "artifacts"

    def _read_summary(self, folder: str) -> dict[str, Any]:
        """A trial's summary, checked: its seal (an older unsealed one is read as it is) and its shape.

        Raises:
            NotFoundError: when the folder has no summary.
            CorruptStoreError: naming the file when it is damaged or not a trial summary.
        """
        path = os.path.join(self.root, folder, SUMMARY)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise NotFoundError(f"Trial folder {path} has no summary; was it deleted?") from exc
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._summaries.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, "rb") as fh:
            raw = fh.read()
        if _LEGACY_SUMMARY.match(raw):
            try:
                summary: Any = json.loads(raw)
            except ValueError as exc:
                raise CorruptStoreError(path, getattr(exc, "pos", 0), "summary is not valid JSON") from exc
        else:
            summary, _ = unseal(raw, path, (SUMMARY_FORMAT,))
        self._unviewed[folder] = _check_summary(path, summary)
        self._summaries[folder] = (key, summary)
        return cast(dict[str, Any], summary)  # checked by _check_summary

    # --------------------------------------------------------------------------------------- summaries
    @staticmethod
    def _summary_data(
        record: _TrialRecord,
        latest: dict[str, float],
        log_rows: int,
        created: int,
        metric_rows: int = 0,
        logged: Mapping[str, int | None] | None = None,
    ) -> dict[str, Any]:
        data = record.to_json()
        data["metrics"] = {name: {"steps": [], "values": [], "latest": v} for name, v in latest.items()}
        for name, count in (logged or {}).items():
            if name in data["metrics"] and count is not None:
                data["metrics"][name]["logged"] = count
        data["log_rows"] = log_rows
        data["metric_rows"] = metric_rows
        data["created"] = created
        return data

    def _write_summary_file(self, folder: str, data: dict[str, Any]) -> None:
        atomic_write(self.root / folder / SUMMARY, seal(data, SUMMARY_FORMAT), fsync=self.fsync)

    def _write_summary(self, writing: _Writing) -> None:
        data = self._summary_data(
            writing.record,
            writing.latest,
            writing.log_rows,
            writing.created,
            writing.metric_rows,
            writing.logged,
        )
        if writing.series is not None:
            writing.series.flush()  # before the summary: a reader of the summary finds the points indexed
        self._write_summary_file(writing.folder, data)
        writing.summary_at = time.monotonic()
        writing.dirty = False

    def _flush_summaries(self) -> None:
        for writing in self._writing.values():
            if writing.dirty:
                self._write_summary(writing)

    def _scan(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every trial under the root: uid -> (folder, summary), in creation order. Unchanged files are cached."""
        self._flush_summaries()
        found: list[tuple[int, str, str, dict[str, Any]]] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if not os.path.exists(os.path.join(entry.path, SUMMARY)):
                continue  # a cox store or any other folder: not a trial
            try:
                summary = self._read_summary(entry.name)
            except CorruptStoreError as exc:
                summary = self._damaged(entry.name, str(exc.fields["path"]), str(exc.fields["reason"]))
            except NotFoundError:
                continue  # deleted since it was listed
            except OSError as exc:
                summary = self._damaged(
                    entry.name, os.path.join(entry.path, SUMMARY), exc.strerror or str(exc)
                )
            found.append((int(summary.get("created", 0)), entry.name, str(summary["uid"]), summary))
        found.sort()
        return {uid: (folder, summary) for _, folder, uid, summary in found}

    def _damaged(self, folder: str, path: str, reason: str) -> dict[str, Any]:
        """The summary of a trial whose files cannot be read (INTERFACES seam 2): its folder's name, its uid when
        the trial index knows it, status ``damaged`` and ``metadata["damage"]`` naming the file and the reason."""
        logger.warning("trial %s is damaged: %s: %s (other trials are read as usual)", folder, path, reason)
        uid = self._owners.get(folder)
        if uid is None:
            self._read_known()
            uid = self._owners.get(folder)
        try:
            trial = (
                Trial(name=folder)
                if uid is None
                else Trial(_hash=split_uid(uid)[0], revision=split_uid(uid)[1], name=folder)
            )
        except SchemaError:
            trial = Trial()
        data = to_json(trial)
        data.update(
            status=status_to_json(DAMAGED),
            metadata={"damage": {"file": path, "reason": reason}},
            damaged=True,
        )
        return data

    @staticmethod
    def _view(summary: dict[str, Any]) -> Trial:
        """The trial as its summary describes it (metrics carry only their latest value)."""
        trial = from_json(summary)
        assert isinstance(trial, Trial)  # the summary's dtype is 'trial' (checked when read)
        return trial

    def _view_of(self, folder: str, summary: dict[str, Any]) -> Trial:
        """:meth:`_view` of ``folder``'s summary from :meth:`_scan`, taking the trial built when it was read."""
        trial = self._unviewed.pop(folder, None)
        return trial if trial is not None and not summary.get("damaged") else self._view(summary)

    # ------------------------------------------------------------------------------------ full reads
    @staticmethod
    def _metric_records(store: Store) -> dict[str, _MetricRecord]:
        """Every metric series of a trial, from its store's ``metrics`` rows (a later point at a step wins)."""
        metrics: dict[str, _MetricRecord] = {}
        if METRICS in store.tables:
            for step, name, value, _ in store[METRICS].iter_rows():
                rec = metrics.get(name)
                if rec is None:
                    rec = metrics[name] = _MetricRecord()
                rec.add(_step_out(step), value)
        return metrics

    def _load(self, summary: dict[str, Any], store: Store) -> tuple[_TrialRecord, int]:
        """Rebuild a trial (without its metric points) from its summary plus the log rows written after it."""
        record = _TrialRecord.from_json({**summary, "metrics": {}})
        log_rows = 0
        if LOG in store.tables:
            table = store[LOG]
            seen = int(summary.get("log_rows", 0))
            for index, (text,) in enumerate(table.iter_rows()):
                if index >= seen:
                    try:
                        update = from_json(json.loads(text))
                        if not isinstance(update, TrialUpdate):
                            raise SchemaError(f"expected a trial_update, found {type(update).__name__}")
                    except (ValueError, TypeError, AttributeError) as exc:  # SchemaError is a ValueError
                        logger.warning(
                            "%s: skipped row %d of table %s: %s (kept in the store, not applied)",
                            store.path,
                            index,
                            LOG,
                            exc,
                        )
                        continue
                    record.apply(update)
            log_rows = table.nrows
        return record, log_rows

    def _check_rows(self, summary: dict[str, Any], store: Store, folder: str) -> None:
        """Raise CorruptStoreError when the store holds fewer rows than the summary says were written (rows are
        durable before the summary that counts them is written, so fewer means a truncated or emptied journal)."""
        have = {name: store[name].nrows if name in store.tables else 0 for name in (METRICS, LOG)}
        want = {METRICS: int(summary.get("metric_rows", 0)), LOG: int(summary.get("log_rows", 0))}
        missing = [name for name in (METRICS, LOG) if have[name] < want[name]]
        if not missing and not want[METRICS] and summary.get("metrics") and not have[METRICS]:
            missing = [METRICS]  # a summary from before metric_rows was recorded: it names metrics, no rows
        if missing:
            path = os.path.join(self.root, folder, JOURNAL_NAME)
            counts = ", ".join(f"{name}: {have[name]} of {want[name]}" for name in missing)
            raise CorruptStoreError(path, 0, f"it holds fewer rows than {SUMMARY} records ({counts})")

    def _full(self, record: _TrialRecord, store: Store) -> Trial:
        trial = record.snapshot()
        metrics = self._metric_records(store)
        return replace(trial, metrics={name: rec.snapshot(name) for name, rec in metrics.items()})

    def _snapshot(self, uid: str, folder: str, summary: dict[str, Any]) -> Trial:
        if summary.get("damaged"):
            return self._view(summary)
        self._wait_released(uid)
        writing = self._writing.get(uid)
        if writing is not None:
            return self._full(writing.record, writing.store)
        try:
            with Store(self.root, folder, mode="r") as store:
                self._check_rows(summary, store, folder)
                record, _ = self._load(summary, store)
                return self._full(record, store)
        except StorageError as exc:  # a damaged store: this trial is listed as damaged, the others as usual
            path = getattr(exc, "path", None) or os.path.join(self.root, folder)
            return self._view(
                {**summary, **self._damaged(folder, str(path), getattr(exc, "reason", str(exc)))}
            )

    # ---------------------------------------------------------------------------------------- writing
    def _writer(self, uid: str) -> _Writing:
        self._wait_released(uid)
        writing = self._writing.get(uid)
        if writing is not None:
            self._writing.move_to_end(uid)
            return writing
        folder = self._folder_of(uid)
        with self._locked():  # a first write creates the store: not while another process edits the summary
            summary = self._read_summary(folder)
            # store.h5 is rebuilt at commit/close only: this backend and CollectionReader read the journal, and
            # rebuilding a long run's file from inside a training step would stall it (about 1 s per 1M rows).
            # No rows are kept in memory either: a run of any length logs in constant memory.
            store = Store(
                self.root, folder, fsync=self.fsync, h5_every_rows=None, keep_rows=False, quiet=True
            )
        try:
            record, log_rows = self._load(summary, store)
            self._ensure_tables(store, record)
            records = self._metric_records(store)
            latest = {name: rec.latest for name, rec in records.items()}
            self._check_rows(summary, store, folder)
        except BaseException:
            store.close()
            raise
        writing = _Writing(
            folder,
            store,
            record,
            log_rows,
            int(summary.get("created", 0)),
            latest,
            summary_at=time.monotonic(),
            metric_rows=store[METRICS].nrows,
            logged={name: rec.logged for name, rec in records.items()},
        )
        writing.series = SeriesIndexWriter(str(self.root / folder), store._codecs)
        writing.series.open()
        self._writing[uid] = writing
        while len(self._writing) > self.max_open:
            _, oldest = self._writing.popitem(last=False)
            self._release(oldest)
        return writing

    def _release(self, writing: _Writing) -> None:
        try:
            if writing.dirty:
                self._write_summary(writing)
        finally:
            writing.store.close()

    def _folder_for(self, trial: Trial, taken: set[str]) -> str:
        """The trial's folder: its name, or ``name_1``, ``name_2``... when that is another trial or store.

        A folder that exists but holds no store (an xmen experiment folder with its ``params.yml``, made before
        the trial) is used as it is: the experiment and the trial share ``{root}/{name}``. So is the folder of a
        trial that was deleted (it holds no summary any more), which an experiment registered again under that
        name has already claimed (#12); the deleted trial's uid then no longer resolves to it (``_learn``).
        """
        base = trial.name if trial.name is not None else f"{trial.hash[:16]}_{trial.revision}"
        folder, n = base, 0
        del taken  # a known trial's folder holds its summary (written before it is known), checked below
        while is_store_dir(str(self.root / folder)) or (self.root / folder / SUMMARY).exists():
            n += 1
            folder = f"{base}_{n}"
        return folder

    # ------------------------------------------------------------------------------------- primitives
    def insert_project(self, project: Project) -> Project | None:
        with self._mutex, self._locked():
            self._check_open()
            db = self._index()
            if db.insert_project(project) is None:
                return None
            self._save_index(db)
        return self.find_projects({"uid": project.uid})[0]

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        with self._mutex, self._locked():
            self._check_open()
            db = self._index()
            if db.insert_group(group) is None:
                return None
            self._save_index(db)
        return self.find_groups({"uid": group.uid})[0]

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        with self._mutex, self._locked():
            self._check_open()
            index = self._index()  # projects and groups, for the strictness checks
            self._trusted_index()
            if trial.uid in self._known:
                if not auto_increment:
                    return None
                trial = replace(trial, revision=self._max_revision.get(trial.hash, trial.revision) + 1)
            stored = index.prepare_trial(trial, False)
            assert stored is not None  # the index holds no trials, so nothing collides there
            folder = self._folder_for(stored, set(self._known.values()))
            record = _TrialRecord(replace(stored, metrics={}))
            latest = {name: float(m.latest) for name, m in stored.metrics.items() if m.latest is not None}
            # A trial arriving with points (a copy) or already running or finished: its store is needed now.
            if stored.metrics or _opens_store(stored.status):
                store = Store(self.root, folder, fsync=self.fsync, quiet=True)
                try:
                    self._ensure_tables(store, record)
                    for name, metric in stored.metrics.items():
                        store[METRICS].append_tuples(
                            [(math.nan if s is None else float(s), name, float(v), 0.0) for s, v in metric]
                        )
                finally:
                    store.close(
                        rebuild_h5=False
                    )  # the journal holds the rows; store.h5 follows at its writer's close
            else:
                # The Store is created by the trial's first point or its first status of the running, error or
                # finished groups (_writer): registering a sweep of a thousand trials writes a folder and a
                # summary each, and the store gets the parameters as merged by then.
                try:
                    if not (self.root / folder).is_dir():  # an xmen experiment folder made before its trial
                        (self.root / folder).mkdir(exist_ok=True)
                except OSError as exc:
                    raise StorageError(f"Cannot create {self.root / folder}: {exc.strerror or exc}") from exc
            rows = sum(len(m) for m in stored.metrics.values())
            logged = {name: len(m) for name, m in stored.metrics.items()}
            data = self._summary_data(record, latest, 0, time.time_ns(), rows, logged)
            self._write_summary_file(folder, data)
            self._record_known(stored.uid, folder)
            return stored

    @staticmethod
    def _ensure_tables(store: Store, record: _TrialRecord) -> None:
        """Give a trial's store its tables; the one-row ``metadata`` table holds the parameters as they are now."""
        if PARAMETERS not in store.tables:
            schema, row = _parameter_row(dict(record.parameters))
            store.add_table(PARAMETERS, schema).append_row(row)
        store.add_table(METRICS, METRICS_SCHEMA)
        store.add_table(LOG, LOG_SCHEMA)

    def find_projects(self, query: Query) -> list[Project]:
        match = compile_query(query)
        with self._mutex:
            self._check_open()
            index = self._index()
            members: dict[str, set[str]] = {}
            for uid, (_, summary) in self._scan().items():
                if summary.get("project_id") is not None:
                    members.setdefault(summary["project_id"], set()).add(uid)
            out = []
            for project in index.find_projects(None):
                full = replace(project, trials=frozenset(members.get(project.uid, ())))
                if match(full):
                    out.append(full)
            return out

    def _groups(self, query: Query) -> list[TrialGroup]:
        match = compile_query(query)
        members: dict[str, set[str]] = {}
        for uid, (_, summary) in self._scan().items():
            if summary.get("group_id") is not None:
                members.setdefault(summary["group_id"], set()).add(uid)
        out = []
        for group in self._index().find_groups(None):
            full = replace(group, trials=frozenset(members.get(group.uid, ())))
            if match(full):
                out.append(full)
        return out

    def find_groups(self, query: Query) -> list[TrialGroup]:
        with self._mutex:
            self._check_open()
            return self._groups(query)

    def _matching(self, query: Query) -> Iterator[tuple[str, str, dict[str, Any]]]:
        match = compile_query(query)
        for uid, (folder, summary) in self._scan().items():
            if match(self._view_of(folder, summary)):
                yield uid, folder, summary

    def find_trials(self, query: Query) -> list[Trial]:
        with self._mutex:
            self._check_open()
            return [self._snapshot(uid, folder, summary) for uid, folder, summary in self._matching(query)]

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        """The trials as their ``trial.json`` summaries describe them: no store is opened, no point read.

        Summaries of the trials this object writes are brought up to date first; one written by another process
        is at most ``summary_interval_s`` old (status changes are never late).
        """
        match = compile_query(query)
        with self._mutex:
            self._check_open()
            views = (self._view_of(folder, summary) for folder, summary in self._scan().values())
            return [view for view in views if match(view)]

    def find_series(self, request: SeriesRequest) -> list[Series]:
        """Read only the asked metrics' rows of the asked trials' stores (see :mod:`.hdf5_series`).

        Trials are read by a few threads at once: reading, checksumming and downsampling a series run mostly
        outside the GIL, so a chart of 100 runs uses every core.
        """
        folders: list[tuple[str, str]] = []
        with self._mutex:
            self._check_open()
            for uid in request.uids:
                try:
                    folders.append((uid, str(self.root / self._folder_of(uid))))
                except NotFoundError:
                    continue

        def read(item: tuple[str, str]) -> list[Series]:
            uid, folder = item
            try:
                return read_series(folder, uid, request)
            except CorruptStoreError as exc:
                # One damaged run never hides the others' series: it has none, and the log says why.
                logger.warning("trial %s: no series, its store is damaged: %s", uid, exc)
                return []

        if len(folders) < 4:
            found = [read(item) for item in folders]
        else:
            with ThreadPoolExecutor(min(SERIES_THREADS, len(folders)), "unitrack-series") as pool:
                found = list(pool.map(read, folders))
        return [series for part in found for series in part]

    def trial_folder(self, uid: str) -> Path:
        """The folder of trial ``uid`` (where an experiment keeps ``run.log`` and checkpoints).

        Raises:
            NotFoundError: when there is no such trial.
        """
        with self._mutex:
            self._check_open()
            return self.root / self._folder_of(uid)

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        with self._mutex:
            self._check_open()
            if uid in self._writing or update.metrics or not self._summary_only(uid, update):
                self._apply(self._writer(uid), update)

    def _summary_only(self, uid: str, update: TrialUpdate) -> bool:
        """Apply a change without points to a trial that has no store yet (registered, never run), in its
        summary: registering a sweep writes no store. False when the trial has a store (the caller then writes
        the update through it).

        An update setting a status of the running, error or finished groups (see :func:`_opens_store`) then
        creates the trial's store, so a trial that runs without ever logging a point is still a cox store that
        ``CollectionReader`` and ``Store`` see; its ``metadata`` table holds the parameters as merged by this
        update, which is why the update goes to the summary first.

        Under the index lock, as is the creation of a trial's store, so the two never race.
        """
        folder = self._folder_of(uid)
        with self._locked():
            if is_store_dir(str(self.root / folder)):
                return False
            summary = self._read_summary(folder)
            record = _TrialRecord.from_json({**summary, "metrics": {}})
            if record.apply(update):
                metrics = summary.get("metrics") or {}
                latest = {k: v["latest"] for k, v in metrics.items()}
                logged = {k: v.get("logged") for k, v in metrics.items()}
                data = self._summary_data(record, latest, 0, int(summary.get("created", 0)), 0, logged)
                self._write_summary_file(folder, data)
            if _opens_store(update.status):
                self._writer(uid)  # reads the summary just written: the store starts from it
        return True

    def _write(self, writing: _Writing, rows: list[tuple[float, str, float, float]], log: str | None) -> None:
        """Write metric ``(step, name, value, time)`` rows and a ``trial_log`` row with one journal write, and
        remember each metric's latest value.

        A point equal to the last one written for its metric (same step, same value: e.g. a Monitor that logs a
        variable both as a summary and as a message) changes nothing in the series, so it adds no row to the
        cox table either.
        """
        steps, latest = writing.last_step, writing.latest
        if steps:  # a NaN step (no step) is never equal to anything, so step-less points are all written
            rows = [r for r in rows if steps.get(r[1]) != r[0] or latest[r[1]] != r[2]]
        if not rows and log is None:
            return
        # The rows are (float, str, float, float) with the name checked, and the log row is text: every value has
        # exactly its column's type, so the store packs them without converting.
        # Store._append_exact's work, keeping the bytes of the metrics rows' frames for the series index.
        store = writing.store
        table = store.tables[METRICS]
        packed = [(table, table._pack_exact(rows))]
        tail = 0  # bytes of the log row's frame, written after the metrics rows'
        if log is not None:
            log_table = store.tables[LOG]
            payloads = log_table._pack_exact(((log,),))
            packed.append((log_table, payloads))
            tail = FRAME_BYTES + len(payloads[0])
        data = store._write_packed(packed)
        writing.metric_rows += len(rows)
        series = writing.series
        if series is not None and series.pending is not None and rows:
            # SeriesIndexWriter.add, inline (a call costs more than the append): the rows' frames, as written.
            pending = series.pending
            pending += data[: len(data) - tail] if tail else data
            if len(pending) >= PACK_BYTES:
                series.pack()
        if log is not None:
            writing.log_rows += 1
        logged = writing.logged
        for step, name, value, _ in rows:
            latest[name] = value
            steps[name] = step
            logged[name] = logged.get(name, 0) + 1

    def _touched(self, writing: _Writing, status_changed: bool = False) -> None:
        writing.dirty = True
        if status_changed or time.monotonic() - writing.summary_at >= self.summary_interval_s:
            self._write_summary(writing)

    def log_trial_metrics(
        self,
        trial: Trial | str,
        step: Any = None,
        aggregator: Callable[[], Aggregator] | None = None,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Protocol.log_trial_metrics`, with the rows going straight to the trial's ``metrics`` table
        (the per-step path of a training loop)."""
        self.log_trial_step(trial, step, kwargs)

    def log_trial_step(
        self,
        trial: Trial | str,
        step: Any,
        metrics: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """As :meth:`Protocol.log_trial_step`: the rows go straight to the trial's tables in one journal write,
        with no :class:`TrialUpdate` built (the per-message path of an Experiment)."""
        if type(step) is int and -MAX_METRIC_INT <= step <= MAX_METRIC_INT:  # the usual case, checked inline
            step_value = float(step)
        else:
            checked = check_step(step)
            step_value = math.nan if checked is None else float(checked)
        now = time.time()
        rows = [
            (
                step_value,
                check_metric_name(name),
                value
                if type(value) is float
                else float(value)
                if type(value) is int and -MAX_METRIC_INT <= value <= MAX_METRIC_INT
                else float(check_number(f"metric {name!r}", value)),
                now,
            )
            for name, value in metrics.items()
        ]
        merged = check_mapping("metadata", metadata) if metadata else None
        # The log row is what TrialUpdate(metadata=...) serializes to, so replaying it needs nothing new.
        log = None if merged is None else _ENCODE({"dtype": "trial_update", "metadata": merged})
        with self._mutex:
            self._check_open()
            writing = self._writer(trial_uid(trial))
            self._write(writing, rows, log)
            if merged is not None:
                writing.record.metadata.update(merged)  # check_mapping made a copy the caller cannot change
            self._touched(writing)

    def _apply(self, writing: _Writing, update: TrialUpdate) -> None:
        record = writing.record
        if (
            update.writer is not None
            and update.seq is not None
            and update.seq <= record.writers.get(update.writer, -1)
        ):
            return  # a replayed batch
        rows: list[tuple[float, str, float, float]] = []
        if update.metrics:
            now = time.time()
            nan = math.nan
            rows = [
                (nan if p.step is None else float(p.step), p.name, float(p.value), now)
                for p in update.metrics
            ]
        log = None
        if _beyond_metrics(update):
            rest = to_json(update)
            rest.pop("metrics", None)  # the points are in the metrics table
            log = json.dumps(rest, allow_nan=True)
        # One journal write: the points and the rest of the update are durable together, or not at all.
        self._write(writing, rows, log)
        if log is not None:
            record.apply(update, with_metrics=False)
        self._touched(writing, status_changed=update.status is not None)

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        with self._mutex, self._locked():
            self._check_open()
            db = self._index()
            db.update_group(uid, update)
            self._save_index(db)

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        with self._mutex, self._locked():
            self._check_open()
            for uid, folder, _ in self._matching(query):
                if uid not in self._writing and not update.metrics and self._summary_only(uid, update):
                    return self._snapshot(uid, folder, self._read_summary(folder))
                try:
                    writing = self._writer(uid)
                except StoreLockedError:
                    continue  # another process is writing this trial: not ours to take
                self._apply(writing, update)
                self._write_summary(writing)
                return self._full(writing.record, writing.store)
            return None

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        with self._mutex, self._locked():
            self._check_open()
            found = self._groups(query)
            if not found:
                return None
            db = self._index()
            db.update_group(found[0].uid, update)
            self._save_index(db)
            return self._groups({"uid": found[0].uid})[0]

    def commit(self, **kwargs: Any) -> None:
        """Bring the trials this object writes up to date on disk and let go of them.

        Summaries are written and the trials' Stores closed (rebuilding their ``store.h5``), so another process
        may write them now; this object reopens a Store on its next write to it. ``trials=`` (uids) limits this to
        those trials. The rebuilds run outside this object's lock: other trials are written meanwhile, and a write
        or read of a trial being let go waits for it.
        """
        trials = kwargs.get("trials")
        with self._mutex:
            self._check_open()
            chosen = list(self._writing) if trials is None else [u for u in trials if u in self._writing]
            taken = [self._writing.pop(uid) for uid in chosen]
            self._releasing.update(chosen)
        errors: list[BaseException] = []
        try:
            for writing in taken:
                try:
                    self._release(writing)
                except (OSError, StorageError) as exc:
                    errors.append(exc)
        finally:
            with self._mutex:
                self._releasing.difference_update(chosen)
                self._released.notify_all()
        if errors:
            raise errors[0]

    def _wait_released(self, uid: str | None = None) -> None:
        """Wait (lock held) until trial ``uid`` (None: every trial) is no longer being let go by a commit."""
        while (uid in self._releasing) if uid is not None else self._releasing:
            self._released.wait()

    def close(self) -> None:
        """Write summaries and close every Store (which rewrites its ``store.h5``)."""
        with self._mutex:
            if self._closed:
                return
            self._wait_released()
            self._closed = True
            errors: list[BaseException] = []
            while self._writing:
                _, writing = self._writing.popitem(last=False)
                try:
                    self._release(writing)
                except (OSError, StorageError) as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
