"""``file://PATH.json``: one human-readable JSON database, safe for many processes (track's FileProtocol).

track rewrote the whole JSON file on every call, which made logging quadratic (1,000 values/s for one writer,
83 values/s with 16). Here each call costs O(1):

- Every process writes its own **journal** in ``PATH.json.journal/<writer>.jnl``: one line per call, ``<crc32>
  <json>\\n``, appended with a single ``os.write`` on an ``O_APPEND`` descriptor. When the call returns, the
  line is in the OS (it survives SIGKILL); ``?fsync=true`` also makes it survive power loss. A writer holds an
  ``flock`` on its own journal for as long as it lives, which is how others tell a live journal from a dead one.
- The JSON file is the **database**: journals are folded into it under the lock ``PATH.json.lock`` on
  ``commit()``, on ``close()`` and when a journal grows past ``max(journal_mb, size of the JSON)`` (so the cost
  of rewriting the JSON is amortised over at least as many bytes of journal). The JSON is rewritten atomically
  (temporary file in the same folder, fsync, rename) and records how far it folded each journal, so a reader
  never applies a line twice. Folded journals of dead writers are deleted; a torn last line of a dead journal
  (a crash mid-write) is dropped with a warning naming the file and offset; a bad line anywhere else is a
  :class:`~unitrack.errors.CorruptStoreError`.
- Inserts and ``find_and_update_*`` take the lock and read the others' journals first, so "does it exist?" and
  "reserve the first match" have one answer across processes. Reads do the same when ``eager`` (the default).

The lock file is never deleted (deleting a lock another process holds breaks mutual exclusion, as track's
``LockFileRemover`` did).

Example:
    >>> import tempfile, os
    >>> from unitrack.persistence.structure import Trial
    >>> folder = tempfile.mkdtemp()
    >>> with FileProtocol(f"file://{folder}/db.json", strict=False) as db:
    ...     trial = db.new_trial(Trial(name="run", parameters={"lr": 0.1}))
    ...     db.log_trial_metrics(trial, step=1, loss=0.5)
    >>> FileProtocol(f"file://{folder}/db.json").fetch_trials({})[0].metrics["loss"].latest
    0.5
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from unitrack.errors import ConcurrentWrite, CorruptStoreError, StorageError
from unitrack.persistence.memory import Database
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.serialization import to_json
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri, option_flag, option_float

__all__ = ["FileProtocol", "atomic_write"]

logger = logging.getLogger(__name__)

_JOURNAL_SUFFIX = ".jnl"


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file beside it, fsync, rename, fsync the folder.

    Raises:
        StorageError: when the disk is full or the folder is not writable (the old file is left intact).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"Could not write {path}: {exc.strerror or exc}. The previous file is unchanged."
        ) from exc


def _encode_line(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), allow_nan=True).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _decode_lines(path: Path, data: bytes, base: int, *, is_dead: bool) -> tuple[list[dict[str, Any]], int]:
    """Decode complete lines of a journal chunk starting at file offset ``base``.

    Returns the records and the number of bytes consumed (complete lines only; for a dead journal a torn
    last line is consumed and dropped with a warning).
    """
    records: list[dict[str, Any]] = []
    pos = 0
    end = len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0:
            if is_dead:
                warnings.warn(
                    f"{path}: dropped a torn last record at byte {base + pos} ({end - pos} bytes; the writer "
                    "died while writing it, so its call never returned)",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return records, end
            return records, pos
        line = data[pos:nl]
        ok = len(line) > 9 and line[8:9] == b" "
        record: Any = None
        if ok:
            payload = line[9:]
            try:
                ok = int(line[:8], 16) == zlib.crc32(payload)
                record = json.loads(payload) if ok else None
            except ValueError:
                ok = False
        if not ok or not isinstance(record, dict):
            if is_dead and nl == end - 1:
                warnings.warn(
                    f"{path}: dropped a torn last record at byte {base + pos} (checksum mismatch)",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return records, end
            raise CorruptStoreError(str(path), base + pos, "journal record fails its checksum")
        records.append(record)
        pos = nl + 1
    return records, pos


class _Journal:
    """This process's own journal: created on first write, flock-held until closed."""

    def __init__(self, folder: Path, fsync: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{uuid.uuid4().hex}{_JOURNAL_SUFFIX}"
        self.path = folder / self.name
        tmp = folder / f".{self.name}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        # Lock before the file gets its journal name, so no folder ever sees it unlocked (and deletes it).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, self.path)
        self.fd = fd
        self.size = 0
        self.fsync = fsync
        self.pid = os.getpid()

    def append(self, line: bytes) -> None:
        view = memoryview(line)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self.fd)
        except OSError as exc:
            raise StorageError(
                f"Could not append to {self.path}: {exc.strerror or exc}. The call was not recorded."
            ) from exc
        self.size += len(line)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock: the journal is now "dead" and will be folded
            self.fd = -1


class FileProtocol(Protocol):
    """One JSON database shared by any number of processes on one machine.

    Args:
        uri: ``file://PATH.json`` (relative) or ``file:///abs/PATH.json``. Options: ``fsync`` (fsync every
            call, default false), ``lock_timeout_s`` (default 30), ``journal_mb`` (default 8).
        strict: check that a trial's project and group exist.
        eager: read other processes' writes before every read (turn off when this is the only process).
        fsync: override the URI option.
        lock_timeout_s: override the URI option.

    Raises:
        CorruptStoreError: when the JSON file or a journal is damaged.
        StorageError: when the file is not a unitrack database or the folder is not writable.
    """

    def __init__(
        self,
        uri: str | ParsedURI,
        strict: bool = True,
        eager: bool = True,
        *,
        fsync: bool | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        path = self.uri.file_path
        if not path:
            raise StorageError(f"{self.uri} names no file; use file://runs/db.json or file:///abs/db.json.")
        self.path = Path(os.path.expanduser(path))
        self.strict = strict
        self.eager = eager
        self.fsync = option_flag(self.uri, "fsync", False) if fsync is None else fsync
        self.lock_timeout_s = (
            option_float(self.uri, "lock_timeout_s", 30.0) if lock_timeout_s is None else lock_timeout_s
        )
        self.journal_limit_bytes = int(option_float(self.uri, "journal_mb", 8.0) * 1024 * 1024)
        self.journal_dir = self.path.with_name(self.path.name + ".journal")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the folder of {self.path}: {exc.strerror or exc}") from exc
        self._filelock = filelock.FileLock(str(self.path) + ".lock", timeout=self.lock_timeout_s)
        self._mutex = threading.RLock()
        self._journal: _Journal | None = None
        self._db = Database(strict)
        self._db_stat: tuple[int, int, int] | None = None
        self._db_size = 0
        self._offsets: dict[str, int] = {}
        self._closed = False
        with self._locked():
            self._catch_up()

    # ---------------------------------------------------------------------------------------- locking
    def _locked(self) -> filelock.AcquireReturnProxy[filelock.BaseFileLock]:
        try:
            return self._filelock.acquire()
        except filelock.Timeout as exc:
            raise ConcurrentWrite(str(self.path) + ".lock", self.lock_timeout_s) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.uri} is closed; open a new FileProtocol to use it again.")

    # ---------------------------------------------------------------------------------------- reading
    def _stat_db(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load_db(self) -> None:
        """(Re)load the JSON database and the journal offsets it records."""
        stat = self._stat_db()
        if stat is None:
            self._db, self._offsets, self._db_stat, self._db_size = Database(self.strict), {}, None, 0
            return
        raw = self.path.read_bytes()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            pos = getattr(exc, "pos", 0)
            raise CorruptStoreError(str(self.path), int(pos), "not valid JSON") from exc
        try:
            self._db = Database.from_json(data, strict=self.strict)
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"{self.path} is not a unitrack (or track) database: {exc}. Point file:// at a new file."
            ) from exc
        journals = data.get("journals", {}) if isinstance(data, dict) else {}
        self._offsets = {str(k): int(v) for k, v in journals.items()}
        self._db_stat = stat
        self._db_size = len(raw)

    def _journal_files(self) -> Iterator[Path]:
        try:
            names = sorted(os.listdir(self.journal_dir))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(_JOURNAL_SUFFIX) and not name.startswith("."):
                yield self.journal_dir / name

    def _is_dead(self, path: Path) -> int | None:
        """Return a descriptor holding the journal's flock when its writer is gone, else None."""
        if self._journal is not None and path.name == self._journal.name:
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        return fd

    def _read_journal(self, path: Path, *, is_dead: bool) -> None:
        start = self._offsets.get(path.name, 0)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except FileNotFoundError:
            return  # folded and deleted by another process; the database we loaded covers it
        records, used = _decode_lines(path, data, start, is_dead=is_dead)
        for record in records:
            self._db.apply(record)
        self._offsets[path.name] = start + used

    def _catch_up(self, dead: dict[str, int] | None = None) -> None:
        """Bring the in-memory view up to date with the database and every journal (caller holds the lock)."""
        if self._stat_db() != self._db_stat:
            self._load_db()
        for path in self._journal_files():
            self._read_journal(path, is_dead=dead is not None and path.name in dead)

    def _refresh(self) -> None:
        if self.eager:
            with self._locked():
                self._catch_up()

    # ---------------------------------------------------------------------------------------- writing
    def _append(self, record: dict[str, Any], update: TrialUpdate | None = None) -> None:
        """Write one record to this process's journal and apply it to the in-memory view.

        ``update`` is the TrialUpdate the record encodes, applied directly rather than decoded again.
        """
        journal = self._journal
        if journal is None or journal.pid != os.getpid():  # first write, or a forked child: own journal
            journal = self._journal = _Journal(self.journal_dir, self.fsync)
        journal.append(_encode_line(record))
        if update is not None:
            self._db.trials[record["uid"]].apply(update)
        else:
            self._db.apply(record)
        self._offsets[journal.name] = journal.size
        if journal.size > max(self.journal_limit_bytes, self._db_size):
            self._fold(rotate=True)

    def _fold(self, rotate: bool = False) -> None:
        """Fold every journal into the JSON database (caller holds the mutex; takes the file lock)."""
        with self._locked():
            dead: dict[str, int] = {}
            try:
                for path in self._journal_files():
                    fd = self._is_dead(path)
                    if fd is not None:
                        dead[path.name] = fd
                self._catch_up(dead)
                # Folded journals stay listed (with their final offset) until they are gone from disk, so a
                # reader of this database never applies their lines again.
                live = {p.name for p in self._journal_files()}
                payload = self._db.to_json()
                payload["journals"] = {k: v for k, v in self._offsets.items() if k in live}
                data = json.dumps(payload, indent=1, allow_nan=True).encode("utf-8")
                atomic_write(self.path, data, fsync=True)
                self._db_stat = self._stat_db()
                self._db_size = len(data)
                for name in dead:
                    (self.journal_dir / name).unlink(missing_ok=True)
            finally:
                for fd in dead.values():
                    os.close(fd)
            if self.journal_dir.exists():
                for tmp in self.journal_dir.glob(".*.new"):
                    fd = self._is_dead(tmp)  # a writer that died between creating and naming its journal
                    if fd is not None:
                        tmp.unlink(missing_ok=True)
                        os.close(fd)
            if rotate and self._journal is not None:
                old = self._journal
                self._journal = _Journal(self.journal_dir, self.fsync)
                old.close()
                old.path.unlink(missing_ok=True)  # fully folded above, still under the lock

    # --------------------------------------------------------------------------------------- primitives
    def insert_project(self, project: Project) -> Project | None:
        with self._mutex:
            self._check_open()
            with self._locked():
                self._catch_up()
                if project.uid in self._db.projects:
                    return None
                self._append({"op": "insert_project", "project": to_json(project)})
            return self._db.find_projects({"uid": project.uid})[0]

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        with self._mutex:
            self._check_open()
            with self._locked():
                self._catch_up()
                if group.uid in self._db.groups:
                    return None
                self._db.check_group(group)
                self._append({"op": "insert_group", "group": to_json(group)})
            return self._db.find_groups({"uid": group.uid})[0]

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        with self._mutex:
            self._check_open()
            with self._locked():
                self._catch_up()
                stored = self._db.prepare_trial(trial, auto_increment)
                if stored is None:
                    return None
                self._append({"op": "insert_trial", "trial": to_json(stored)})
            return self._db.trials[stored.uid].snapshot()

    def find_projects(self, query: Query) -> list[Project]:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._db.find_projects(query)

    def find_groups(self, query: Query) -> list[TrialGroup]:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._db.find_groups(query)

    def find_trials(self, query: Query) -> list[Trial]:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._db.find_trials(query)

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._db.find_trial_summaries(query)

    def find_series(self, request: SeriesRequest) -> list[Series]:
        with self._mutex:
            self._check_open()
            self._refresh()
            return self._db.find_series(request)

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        with self._mutex:
            self._check_open()
            if uid not in self._db.trials:  # created by another process since we last looked?
                with self._locked():
                    self._catch_up()
                self._db.trial(uid)  # raises NotFoundError before anything is written
            self._append({"op": "update_trial", "uid": uid, "update": to_json(update)}, update)

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        with self._mutex:
            self._check_open()
            if uid not in self._db.groups:
                with self._locked():
                    self._catch_up()
                self._db.group(uid)
            self._append({"op": "update_group", "uid": uid, "metadata": dict(update.metadata)})

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        with self._mutex:
            self._check_open()
            with self._locked():
                self._catch_up()
                rec = self._db.first_trial(query)
                if rec is None:
                    return None
                self._append({"op": "update_trial", "uid": rec.uid, "update": to_json(update)}, update)
                return rec.snapshot()

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        with self._mutex:
            self._check_open()
            with self._locked():
                self._catch_up()
                rec = self._db.first_group(query)
                if rec is None:
                    return None
                self._append({"op": "update_group", "uid": rec.uid, "metadata": dict(update.metadata)})
                return self._db.find_groups({"uid": rec.uid})[0]

    def commit(self, file_name_override: str | None = None, **kwargs: Any) -> None:
        """Fold every journal into the JSON database; with ``file_name_override`` also write a copy there."""
        with self._mutex:
            self._check_open()
            self._fold(rotate=self._journal is not None and self._journal.size > 0)
            if file_name_override is not None:
                payload = self._db.to_json()
                atomic_write(Path(file_name_override), json.dumps(payload, indent=1).encode("utf-8"))

    def artifact_dir(self, uid: str) -> Path:
        """Where trial ``uid`` keeps its artifacts: ``<database>.artifacts/<uid>`` (see ``persistence.artifacts``)."""
        return self.path.with_name(self.path.name + ".artifacts") / uid

    def close(self) -> None:
        """Fold this process's journal into the database (if the lock is free now) and release it.

        When another process holds the lock, the journal is left for the next fold: it is complete and
        durable, and its writer is now visibly gone.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            journal = self._journal
            if journal is None:
                return
            try:
                if journal.size > 0:
                    try:
                        self._filelock.acquire(timeout=0)
                    except filelock.Timeout:
                        logger.debug("lock busy at close; leaving %s for the next fold", journal.path)
                        return
                    try:
                        self._fold(rotate=False)
                        # Folded and recorded in the database; delete it while still holding the lock, so no
                        # reader can be between loading an older database and reading this journal.
                        journal.close()
                        journal.path.unlink(missing_ok=True)
                    finally:
                        self._filelock.release()
            finally:
                self._journal = None
                journal.close()
                if journal.size == 0:
                    journal.path.unlink(missing_ok=True)
