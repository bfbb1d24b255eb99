"""``file://PATH.json``: one human-readable JSON database, safe for many processes on one machine.

track rewrote the whole JSON file on every call (quadratic: 83 values/s with 16 writers). The first unitrack
version gave each process its own journal and replayed them in file-name order, which is not the order the
calls happened in: an update met before the insert of its trial was dropped (issue #12). Here there is **one
order**, the order of one shared journal:

- ``PATH.json.jnl`` is the **journal**: one checksummed line per call (``<length> <crc32> <json>``, see
  :mod:`unitrack.persistence.integrity`), appended with one ``write`` while holding the exclusive lock on
  ``PATH.json.lock``. A call that saw a trial (and so may update it) ran after the line inserting it was
  written, so its own line lands after that one: replaying the journal from the start follows every cause
  before its effect. When a call returns its line is in the OS and survives SIGKILL (``?fsync=true`` also
  survives power loss). A line cut short by a writer killed inside ``write()`` (that call never returned) is
  removed by the next writer before it appends; any other damage is a :class:`CorruptStoreError`.
- ``PATH.json`` is the **database**: sealed JSON (format ``unitrack.db/2`` and a SHA-256 on its first line),
  rewritten atomically under the lock on ``commit()``, ``close()`` and when the journal outgrows
  ``max(journal_mb, size of the JSON)``. Folding writes the JSON and then deletes the journal; the next write
  starts a new one. The database carries a random id and the number of the last journal folded into it, and
  each journal's first line names the database and its own number, so a journal is only ever replayed into the
  database it was started against (delete ``db.json`` and the database is empty, whatever a killed writer left).
- Readers take the lock shared, read the journal lines they have not seen, and apply them in order. Inserts and
  ``find_and_update_*`` hold the lock exclusively from reading to writing, so "does it exist?" and "reserve the
  first match" have one answer across processes.
- A record that passes its checksum but cannot be accepted (a malformed update, an update of a trial the
  database does not hold) is reported with its file, byte offset and reason, kept under ``"rejected"`` in the
  database (never silently dropped), and the replay goes on.

Older files still open: a ``unitrack.db/1`` database (and the per-process journals of that version, replayed
once with inserts first) and track's own JSON (a list of projects); the first write turns them into
``unitrack.db/2``. The lock file is never deleted (deleting a lock another process holds breaks mutual
exclusion, as track's ``LockFileRemover`` did).

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

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from unitrack.errors import ConcurrentWrite, CorruptStoreError, SchemaError, StorageError
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.integrity import (
    FRAME_HEADER_BYTES,
    atomic_write,
    frame,
    read_frames,
    seal,
    unseal,
)
from unitrack.persistence.memory import Database, _MetricRecord
from unitrack.persistence.protocol import Protocol, TrialRef, trial_uid
from unitrack.persistence.query import Query
from unitrack.persistence.serialization import compact_json_encoder, from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import (
    GroupUpdate,
    Project,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_mapping,
    check_metric_name,
    check_number,
    check_step,
)
from unitrack.persistence.uri import ParsedURI, as_uri, option_flag, option_float

__all__ = ["FileProtocol", "atomic_write"]

logger = logging.getLogger(__name__)

FORMAT = "unitrack.db/2"
#: The start of an older database: unitrack.db/1, or track's list of projects. Anything else must be sealed, so
#: a damaged seal is never read as an older, unchecked format (no single flipped bit turns one into the other).
_LEGACY = re.compile(rb'\s*(\[|\{\s*"format"\s*:\s*"unitrack\.db/1")')
#: What a damaged database file or journal means and what to do (with others_affected=True: it holds every run).
_ADVICE = "Restore it from a backup, or move it aside to start a new database"


#: json.dumps(record, separators=(",", ":")) with its encoder built once (records are plain, checked data).
_dumps = compact_json_encoder()


_PID = [-1]


def _forked() -> None:
    _PID[0] = os.getpid()


def _pid() -> int:
    """This process's id, without a system call per use (a fork hook keeps it right in children)."""
    if _PID[0] < 0:
        os.register_at_fork(after_in_child=_forked)
        _PID[0] = os.getpid()
    return _PID[0]


class _Lock:
    """``flock`` on ``PATH.lock``, shared or exclusive, held by one thread of this object at a time.

    flock waits in the kernel with no timeout, so a busy lock is polled with a short, growing pause (50 µs to
    2 ms) until ``timeout_s``. A forked child opens its own descriptor: a flock belongs to an open file
    description, which a fork would otherwise share with the parent.
    """

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.fd = -1
        self.pid = -1
        self.mode = 0  # 0, LOCK_SH or LOCK_EX
        self.depth = 0
        _pid()  # registers the fork hook before the first use of _PID

    def _descriptor(self) -> int:
        if self.pid != _pid():
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StorageError(f"Cannot open the lock file {self.path}: {exc.strerror or exc}") from exc
            self.pid = _pid()
            self.mode = 0
            self.depth = 0
        return self.fd

    def acquire(self, exclusive: bool) -> None:
        """Take the lock (re-entrant: a nested call only counts; asking for more than is held is a bug)."""
        if self.depth:
            if self.pid == _PID[0]:
                if exclusive and self.mode != fcntl.LOCK_EX:
                    raise RuntimeError("exclusive lock requested while holding it shared")  # pragma: no cover
                self.depth += 1
                return
        fd = self.fd if self.pid == _PID[0] else self._descriptor()
        want = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, want | fcntl.LOCK_NB)
        except OSError:
            self._acquire(fd, want)
        self.mode, self.depth = want, 1

    def release(self) -> None:
        """Undo one :meth:`acquire`; the last one unlocks."""
        self.depth -= 1
        if self.depth <= 0:
            self.depth, self.mode = 0, 0
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        """:meth:`acquire` for a ``with`` block."""
        self.acquire(exclusive)
        try:
            yield
        finally:
            self.release()

    def _acquire(self, fd: int, want: int) -> None:
        pause = 50e-6
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, want | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StorageError(f"Cannot lock {self.path}: {exc.strerror or exc}") from exc
            now = time.monotonic()
            if not deadline:
                deadline = now + self.timeout_s
            elif now > deadline:
                raise ConcurrentWrite(str(self.path), self.timeout_s)
            time.sleep(pause)
            pause = min(pause * 2, 2e-3)

    def close(self) -> None:
        if self.fd >= 0 and self.pid == _pid():
            os.close(self.fd)
        self.fd, self.pid = -1, -1


def _apply_own(db: Database, record: dict[str, Any]) -> bool:
    """Apply a metrics-only update this object just encoded from checked values (no checks needed); False for
    any other record (the caller applies it the general way)."""
    update = record.get("update")
    if update is None or len(update) != 2 or "metrics" not in update:
        return False
    rec = db.trials.get(record["uid"])
    if rec is None:
        return False
    metrics = rec.metrics
    for name, step, value in update["metrics"]:
        metric = metrics.get(name)
        if metric is None:
            metric = metrics[name] = _MetricRecord()
        metric.add(step, value)
    return True


class FileProtocol(Protocol):
    """One JSON database shared by any number of processes on one machine.

    Args:
        uri: ``file://PATH.json`` (relative) or ``file:///abs/PATH.json``. Options: ``fsync`` (fsync every
            call, default false), ``lock_timeout_s`` (default 30), ``journal_mb`` (default 8).
        strict: check that a trial's project and group exist.
        eager: kept for track compatibility; reads always see every process's writes (reading the journal
            lines written since the last read costs only those lines).
        fsync: override the URI option.
        lock_timeout_s: override the URI option.

    Raises:
        CorruptStoreError: when the JSON file or the journal is damaged (the message names the file and byte).
        StorageError: when the file is not a unitrack or track database or the folder is not writable.
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
        self.journal_path = self.path.with_name(self.path.name + ".jnl")
        self._legacy_dir = self.path.with_name(self.path.name + ".journal")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Cannot create the folder of {self.path}: {exc.strerror or exc}") from exc
        self._lock = _Lock(self.path.with_name(self.path.name + ".lock"), self.lock_timeout_s)
        self._mutex = threading.RLock()
        # What this object has read: the database file (by stat), its id and last folded journal, and how far
        # into the current journal it has applied lines.
        self._db = Database(strict)
        self._db_key: tuple[int, int, int] | None = None
        self._db_id: str | None = None
        self._db_seq = 0  # the database holds journal number _db_seq up to byte _db_offset
        self._db_offset = 0
        self._db_size = 0
        self._legacy = False
        self._jfd = -1
        self._jpid = -1
        self._jseq = 0  # number of the journal open at _jfd
        self._jsize = 0  # its size when last looked at
        self._jpos = 0  # how far into journal number _jpos_seq this object has applied frames
        self._jpos_seq = -1
        self._wrote_seq: int | None = None  # number of the journal this object last appended to
        self._closed = False
        try:
            self._refresh()
        except BaseException:
            self._release_files()  # a database that cannot be opened keeps no descriptor open
            raise

    def _release_files(self) -> None:
        self._closed = True
        self._close_journal()
        self._lock.close()

    def __del__(self) -> None:
        # An object dropped without close() still gives its descriptors back (never folds: close() does that).
        if not getattr(self, "_closed", True):
            self._release_files()

    # ---------------------------------------------------------------------------------------- reading
    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.uri} is closed; open a new FileProtocol to use it again.")

    def _stat_db(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load_db(self, key: tuple[int, int, int] | None) -> None:
        """(Re)load the database file: sealed ``unitrack.db/2``, or an older unsealed format."""
        self._close_journal()
        self._jpos_seq = -1
        if key is None:
            self._db, self._db_key, self._db_id, self._db_size = Database(self.strict), None, None, 0
            self._db_seq, self._db_offset, self._legacy = 0, 0, False
            return
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:  # replaced between stat and read: the caller's next look sees the new one
            raw = b""
        source = str(self.path)
        if not _LEGACY.match(raw):
            data, _ = unseal(raw, source, (FORMAT,), advice=_ADVICE, others_affected=True)
            db_id, seq, offset = data.get("database"), data.get("journal_seq"), data.get("journal_offset")
            if not isinstance(db_id, str) or type(seq) is not int or type(offset) is not int:
                raise CorruptStoreError(
                    source,
                    0,
                    "its database id or journal position is missing",
                    advice=_ADVICE,
                    others_affected=True,
                )
            try:
                db = Database.from_json(data, strict=self.strict, source=source, verified=True)
            except SchemaError as exc:
                raise CorruptStoreError(source, 0, str(exc), advice=_ADVICE, others_affected=True) from exc
            self._legacy = False
        else:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                raise CorruptStoreError(
                    source,
                    int(getattr(exc, "pos", 0)),
                    "not valid JSON",
                    advice=_ADVICE,
                    others_affected=True,
                ) from exc
            try:
                db = Database.from_json(parsed, strict=self.strict, source=source)
            except SchemaError as exc:
                raise StorageError(
                    f"{self.path} is not a unitrack (or track) database: {exc}. Point file:// at a new file."
                ) from exc
            db_id, seq, offset = None, 0, 0
            self._legacy = True
        self._db, self._db_key, self._db_id, self._db_size = db, key, db_id, len(raw)
        self._db_seq, self._db_offset = seq, offset

    def _close_journal(self) -> None:
        if self._jfd >= 0 and self._jpid == _pid():
            os.close(self._jfd)
        self._jfd, self._jpid = -1, -1

    def _read_header(self, fd: int) -> tuple[Any, Any, int]:
        """The database id and journal number in a journal's first frame, and where that frame ends."""
        data = os.pread(fd, 4096, 0)
        end = data.find(b"\n", 1)
        head = data if end < 0 else data[:end]
        info: Any = None
        try:
            frames, used = read_frames(
                str(self.journal_path), head, 0, settled=True, advice=_ADVICE, others_affected=True
            )
            info = json.loads(frames[0][1]) if frames and used == len(head) else None
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("op") != "journal":
            raise CorruptStoreError(
                str(self.journal_path),
                0,
                "its first frame does not name its database",
                advice=_ADVICE,
                others_affected=True,
            )
        return info.get("database"), info.get("seq"), len(head)

    def _open_journal(self, exclusive: bool, *, append: bool = False) -> bool:
        """Open the journal that belongs to the loaded database (caller holds the lock); False when there is none.

        A reader takes only the journal that follows the database file it loaded. An appender (``append``) also
        takes a later journal of the same database, without reloading the database file for it. With the lock
        held exclusively, a journal of another database (``db.json`` deleted or replaced) or one folded already
        (a fold killed before deleting it) is removed; a shared holder leaves it for the next writer.
        """
        if self._jfd >= 0 and self._jpid == _pid():
            st = os.fstat(self._jfd)
            if st.st_nlink > 0:
                self._jsize = st.st_size
                return True
            self._close_journal()  # folded and deleted by another process since we opened it
        try:
            fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"Cannot open {self.journal_path}: {exc.strerror or exc}") from exc
        try:
            database, seq, header_end = self._read_header(fd)
        except BaseException:
            os.close(fd)
            raise
        ours = database is not None and database == self._db_id and type(seq) is int
        # The journal after the one the database holds is read from its start; the one it holds (a fold killed
        # before deleting it, and appended to since) from where the database stops. An appender takes any
        # journal of its database: whatever it appends to the journal in place is read by someone.
        start = header_end if seq == self._db_seq + 1 else self._db_offset if seq == self._db_seq else -1
        if ours and (start >= header_end or append):
            size = os.fstat(fd).st_size
            if start > size:
                os.close(fd)
                raise CorruptStoreError(
                    str(self.journal_path),
                    size,
                    f"it ends before byte {start}, where {self.path} stops reading it",
                    advice=_ADVICE,
                    others_affected=True,
                )
            self._jfd, self._jpid, self._jseq, self._jsize = fd, _pid(), seq, size
            if start >= header_end and self._jpos_seq != seq:
                self._jpos, self._jpos_seq = start, seq
            return True
        os.close(fd)
        if not exclusive or self._stat_db() != self._db_key:
            return False  # judged only against the database file as it is now (the caller catches up first)
        if self._db_key is None:
            # db.json was deleted: the database is reset, and this journal went with it.
            self.journal_path.unlink(missing_ok=True)
            logger.warning("%s is gone; removed its journal %s (not replayed)", self.path, self.journal_path)
            return False
        # db.json was replaced (by another database, or an older copy of this one): keep the journal's bytes for a
        # person, and unlink it, so a process still appending to it notices (its descriptor loses its last link).
        aside = self.journal_path.with_name(f"{self.journal_path.name}.orphan-{uuid.uuid4().hex[:8]}")
        atomic_write(aside, self.journal_path.read_bytes(), fsync=False)
        self.journal_path.unlink()
        logger.warning(
            "%s belongs to another database than %s; copied it to %s and did not replay it",
            self.journal_path,
            self.path,
            aside,
        )
        return False

    def _catch_up(self, exclusive: bool) -> None:
        """Bring the in-memory database up to date with the file and the journal (caller holds the lock).

        With the lock exclusive no one is appending, so a cut frame at the end is a killed writer's and is passed
        over; with it shared, it may be a frame being written and is read next time.
        """
        key = self._stat_db()
        if key != self._db_key:
            self._load_db(key)
        if exclusive and self._legacy_dir.is_dir():
            self._migrate_legacy_journals()
        if not self._open_journal(exclusive):
            return
        if self._jpos_seq != self._jseq:  # opened to append to, without reading what precedes it: look again
            self._close_journal()
            if not self._open_journal(exclusive) or self._jpos_seq != self._jseq:
                return
        size = self._jsize
        if size <= self._jpos:
            return
        data = os.pread(self._jfd, size - self._jpos, self._jpos)
        source = str(self.journal_path)
        frames, used = read_frames(
            source, data, self._jpos, settled=exclusive, advice=_ADVICE, others_affected=True
        )
        try:  # one parse for all frames (each passed its checksum, so each is one JSON object)
            records = json.loads(b"[%s]" % b",".join(payload for _, payload in frames))
        except ValueError:
            records = None
        for i, (offset, payload) in enumerate(frames):
            if records is not None:
                record = records[i]
            else:
                try:
                    record = json.loads(payload)
                except (
                    ValueError
                ) as exc:  # written so by a writer (it passed its checksum), not damaged since
                    text = payload.decode("utf-8", "replace")
                    self._db.reject(source, f"byte {offset}", f"not valid JSON ({exc})", text)
                    continue
            self._apply(record, source, offset)
        self._jpos += used

    def _refresh(self) -> None:
        """Catch up under the shared lock; take it exclusively when files must be created or cleaned first."""
        with self._lock.hold(exclusive=False):
            self._catch_up(exclusive=False)
            if not self._needs_exclusive():
                return
        with self._lock.hold(exclusive=True):
            self._catch_up(exclusive=True)

    def _needs_exclusive(self) -> bool:
        return (self._jfd < 0 and self.journal_path.exists()) or self._legacy_dir.is_dir()

    # ---------------------------------------------------------------------------------------- writing
    def _new_journal(self) -> None:
        """Start the next journal of the loaded database (caller holds the lock exclusively)."""
        if self._db_key is None or self._legacy:
            self._write_db()  # a journal always follows a sealed database that names it
        self._remove_temporaries()
        seq = self._db_seq + 1
        tmp = self.journal_path.with_name(f".{self.journal_path.name}.{uuid.uuid4().hex}.tmp")
        header = frame(_dumps({"op": "journal", "database": self._db_id, "seq": seq}).encode("utf-8"))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            os.write(fd, header)
            os.replace(tmp, self.journal_path)  # whole, with its header, or not at all
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"Cannot create {self.journal_path}: {exc.strerror or exc}") from exc
        self._jfd, self._jpid, self._jseq, self._jsize = fd, _pid(), seq, len(header)
        self._jpos, self._jpos_seq = len(header), seq

    def _remove_temporaries(self) -> None:
        """Delete temporary files of writers killed while creating a journal or the database (exclusive lock)."""
        for pattern in (f".{self.journal_path.name}.*.tmp", f".{self.path.name}.*.tmp"):
            for tmp in self.path.parent.glob(pattern):
                tmp.unlink(missing_ok=True)

    def _write_db(self) -> None:
        """Write the in-memory database as the sealed JSON file (caller holds the lock exclusively and caught
        up); its journal number is the journal just folded, which the caller deletes next."""
        if self._db_id is None:
            self._db_id = uuid.uuid4().hex
        seq, offset = (self._jseq, self._jpos) if self._jfd >= 0 else (self._db_seq, self._db_offset)
        payload = self._db.to_json()
        del payload["format"]
        head = {"database": self._db_id, "journal_seq": seq, "journal_offset": offset}
        data = seal({**head, **payload}, FORMAT, lines=True)
        atomic_write(self.path, data, fsync=True)
        self._db_key, self._db_size, self._legacy = self._stat_db(), len(data), False
        self._db_seq, self._db_offset = seq, offset

    def _write_frame(self, data: bytes, record: dict[str, Any]) -> None:
        """Append one frame with one ``O_APPEND`` write (caller holds the lock, shared or exclusive).

        When this object had read the journal to its end and the frame landed right there (the file grew by
        exactly the frame), the record is applied here rather than read back later: a lone writer never replays
        its own journal.
        """
        fd = self._jfd
        before = self._jsize
        for _ in range(3):
            try:
                written = os.write(fd, data)
            except OSError as exc:
                raise StorageError(
                    f"Could not append to {self.journal_path}: {exc.strerror or exc}. The call was not recorded."
                ) from exc
            if written == len(data):
                break
            # A short write leaves a cut frame, which readers pass over: write the whole frame again after it.
            before = -1
        else:
            raise StorageError(
                f"Could not append to {self.journal_path}: short writes. The call was not recorded."
            )
        if self.fsync:
            os.fsync(fd)
        self._wrote_seq = self._jseq
        if self._jpos_seq == self._jseq and self._jpos == before:
            after = os.lseek(fd, 0, os.SEEK_CUR)  # where this O_APPEND write ended
            if after == before + len(data):
                if not _apply_own(self._db, record):
                    self._apply(record, str(self.journal_path), before + 1 + FRAME_HEADER_BYTES)
                self._jpos = after
            self._jsize = after
        else:
            self._jsize += len(data)

    def _apply(self, record: Any, source: str, offset: int) -> None:
        reason = self._db.apply(record)
        if reason is not None:
            self._db.reject(source, f"byte {offset}", reason, record)

    def _append(self, record: dict[str, Any]) -> None:
        """Append one record to the journal, in the one order every reader replays (caller holds the mutex).

        Appends share the lock (each frame is one ``O_APPEND`` write, which the kernel never interleaves with
        another), so writers do not wait for each other; only folding and inserting take it exclusively.
        """
        data = frame(_dumps(record).encode("ascii"))
        lock = self._lock
        lock.acquire(exclusive=False)
        try:
            written = self._open_journal(exclusive=False, append=True)
            if written:
                self._write_frame(data, record)
                if self._jsize <= self.journal_limit_bytes or self._jsize <= self._db_size:
                    return
        finally:
            lock.release()
        if not written:
            with self._lock.hold(exclusive=True):
                database = self._db_id
                self._catch_up(exclusive=True)  # a new database file or journal since we looked
                if database is not None and self._db_id != database and "uid" in record:
                    # db.json was deleted or replaced since this update was checked: check it against the new one.
                    self._exists(record["uid"], "trial" if record["op"] == "update_trial" else "group")
                if not self._open_journal(exclusive=True):
                    self._new_journal()
                self._write_frame(data, record)
        self._fold_unless_folding(only_if_large=True)

    def _fold_unless_folding(self, *, only_if_large: bool, wrote_seq: int | None = None) -> None:
        """Fold the current journal, unless another process is folding it (caller holds the mutex only).

        One process folds a journal: the one holding an ``flock`` on the journal file itself (writers never lock
        it). It reads the journal under the shared lock, while the others go on appending, and takes the lock
        exclusively only to read what they appended meanwhile and write the database. ``wrote_seq``: fold only
        if this object's last append is in the current journal (close()).
        """
        with self._lock.hold(exclusive=False):
            if not self._open_journal(exclusive=False, append=True):
                return
            if wrote_seq is not None and self._jseq != wrote_seq:
                return  # what this object wrote was folded already
            if only_if_large and self._jsize <= max(self.journal_limit_bytes, self._db_size):
                return
            try:
                elect = os.open(self.journal_path, os.O_RDONLY)
            except FileNotFoundError:
                return
        try:
            try:
                fcntl.flock(elect, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another process is folding this journal, and will fold what is in it now
            inode = os.fstat(elect).st_ino
            with self._lock.hold(exclusive=False):
                self._catch_up(exclusive=False)
            with self._lock.hold(exclusive=True):
                if self._open_journal(exclusive=True) and os.fstat(self._jfd).st_ino == inode:
                    self._fold(only_if_large=only_if_large)
        finally:
            os.close(elect)

    def _fold(self, *, only_if_large: bool = False) -> None:
        """Fold the journal into the database file and delete it (caller holds the lock exclusively)."""
        self._catch_up(exclusive=True)
        if self._jfd < 0:
            if self._legacy and not only_if_large:
                self._write_db()
            return
        if only_if_large and self._jsize <= max(self.journal_limit_bytes, self._db_size):
            return
        self._write_db()
        self.journal_path.unlink(missing_ok=True)
        self._close_journal()
        self._jpos_seq = -1

    def _exists(self, uid: str, kind: str) -> None:
        """Raise NotFoundError before anything is written when no trial (or group) has ``uid``."""
        table = self._db.trials if kind == "trial" else self._db.groups
        if uid not in table:  # created by another process since we last looked?
            with self._lock.hold(exclusive=False):
                self._catch_up(exclusive=False)
        if kind == "trial":
            self._db.trial(uid)
        else:
            self._db.group(uid)

    @staticmethod
    def _checked(obj: Project | TrialGroup | Trial) -> dict[str, Any]:
        """The record form of ``obj``, refused unless it reads back as the same object (issue #12 item 8:
        nothing reaches the journal that a reader would refuse)."""
        data = to_json(obj)
        try:
            back = from_json(json.loads(_dumps(data)))
        except (ValueError, TypeError) as exc:
            raise SchemaError(
                f"{type(obj).__name__} {getattr(obj, 'name', '')!r} cannot be stored: {exc}"
            ) from exc
        if back.uid != obj.uid:  # type: ignore[union-attr]
            raise SchemaError(f"{type(obj).__name__} {obj.name!r} does not read back as itself; not stored.")
        return data

    # --------------------------------------------------------------------------------------- primitives
    def insert_project(self, project: Project) -> Project | None:
        record = {"op": "insert_project", "project": self._checked(project)}
        with self._mutex:
            self._check_open()
            with self._lock.hold(exclusive=True):
                self._catch_up(exclusive=True)
                if project.uid in self._db.projects:
                    return None
                self._append(record)
                self._catch_up(exclusive=True)
            return self._db.find_projects({"uid": project.uid})[0]

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        record = {"op": "insert_group", "group": self._checked(group)}
        with self._mutex:
            self._check_open()
            with self._lock.hold(exclusive=True):
                self._catch_up(exclusive=True)
                if group.uid in self._db.groups:
                    return None
                self._db.check_group(group)
                self._append(record)
                self._catch_up(exclusive=True)
            return self._db.find_groups({"uid": group.uid})[0]

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        self._checked(trial)
        with self._mutex:
            self._check_open()
            with self._lock.hold(exclusive=True):
                self._catch_up(exclusive=True)
                stored = self._db.prepare_trial(trial, auto_increment)
                if stored is None:
                    return None
                self._append({"op": "insert_trial", "trial": to_json(stored)})
                self._catch_up(exclusive=True)
            return self._db.trial(stored.uid).snapshot()

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
            self._exists(uid, "trial")
            self._append({"op": "update_trial", "uid": uid, "update": to_json(update)})

    def log_trial_metrics(
        self,
        trial: TrialRef,
        step: Any = None,
        aggregator: Callable[[], Aggregator] | None = None,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Protocol.log_trial_metrics` (the per-step path of a training loop: no TrialUpdate built)."""
        self.log_trial_step(trial, step, kwargs)

    def log_trial_step(
        self,
        trial: TrialRef,
        step: Any,
        metrics: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """As :meth:`Protocol.log_trial_step`, encoding the record directly from the checked values (the same
        record ``update_trial`` would write for ``TrialUpdate(metrics=..., metadata=...)``)."""
        step = check_step(step)
        update: dict[str, Any] = {"dtype": "trial_update"}
        if metadata:
            update["metadata"] = check_mapping("metadata", metadata)
        if metrics:
            update["metrics"] = [
                [check_metric_name(name), step, check_number(f"metric {name!r}", value)]
                for name, value in metrics.items()
            ]
        uid = trial_uid(trial)
        with self._mutex:
            self._check_open()
            self._exists(uid, "trial")
            self._append({"op": "update_trial", "uid": uid, "update": update})

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        with self._mutex:
            self._check_open()
            self._exists(uid, "group")
            self._append({"op": "update_group", "uid": uid, "metadata": dict(update.metadata)})

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        record: dict[str, Any] = {"op": "update_trial", "uid": "", "update": to_json(update)}
        with self._mutex:
            self._check_open()
            with self._lock.hold(exclusive=True):
                self._catch_up(exclusive=True)
                rec = self._db.first_trial(query)
                if rec is None:
                    return None
                record["uid"] = rec.uid
                self._append(record)
                self._catch_up(exclusive=True)
                return self._db.trial(record["uid"]).snapshot()

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        with self._mutex:
            self._check_open()
            with self._lock.hold(exclusive=True):
                self._catch_up(exclusive=True)
                rec = self._db.first_group(query)
                if rec is None:
                    return None
                uid = rec.uid
                self._append({"op": "update_group", "uid": uid, "metadata": dict(update.metadata)})
                self._catch_up(exclusive=True)
                return self._db.find_groups({"uid": uid})[0]

    def commit(self, file_name_override: str | None = None, **kwargs: Any) -> None:
        """Fold the journal into the JSON database; with ``file_name_override`` also write a copy there (a
        database of its own: sealed, with a new id)."""
        with self._mutex:
            self._check_open()
            self._refresh()  # read the journal while others may still append; the fold then reads the rest
            with self._lock.hold(exclusive=True):
                self._fold()
                if file_name_override is not None:
                    payload = self._db.to_json()
                    del payload["format"]
                    copy = {"database": uuid.uuid4().hex, "journal_seq": 0, "journal_offset": 0, **payload}
                    atomic_write(Path(file_name_override), seal(copy, FORMAT, lines=True))

    def artifact_dir(self, uid: str) -> Path:
        """Where trial ``uid`` keeps its artifacts: ``<database>.artifacts/<uid>`` (see ``persistence.artifacts``)."""
        return self.path.with_name(self.path.name + ".artifacts") / uid

    def close(self) -> None:
        """Fold what this object wrote into the JSON file, unless a fold took it already, and release the files.

        Everything written is already in the journal, so when the lock cannot be had in ``lock_timeout_s`` the
        fold is left to the next commit or close.
        """
        with self._mutex:
            if self._closed:
                return
            try:
                if self._wrote_seq is not None:
                    self._fold_unless_folding(only_if_large=False, wrote_seq=self._wrote_seq)
            except ConcurrentWrite:
                logger.info("%s: lock busy at close; the journal is folded by the next commit", self.path)
            finally:
                self._release_files()

    # ------------------------------------------------------------------------------- older versions
    def _migrate_legacy_journals(self) -> None:
        """Replay the per-process journals of ``unitrack.db/1`` once, then fold and remove them (exclusive).

        That version could not tell the order of lines in different journals, so every insert is applied
        first, then the other lines journal by journal; whatever still cannot be applied is reported and kept.
        """
        folder = self._legacy_dir
        if not self._legacy:
            aside = folder.with_name(f"{folder.name}.orphan-{uuid.uuid4().hex[:8]}")
            os.replace(folder, aside)
            logger.warning("%s is newer than the journals in %s; moved them to %s", self.path, folder, aside)
            return
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jnl") and not n.startswith("."))
        try:
            raw_db = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raw_db = {}
        offsets = raw_db.get("journals", {}) if isinstance(raw_db, dict) else {}
        records: list[tuple[str, int, Any]] = []
        for name in names:
            path = folder / name
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    raise StorageError(
                        f"{path} is being written by a process of an older unitrack version; let it finish "
                        "before opening this database."
                    ) from exc
                data = os.pread(fd, os.fstat(fd).st_size, 0)
            finally:
                os.close(fd)
            pos = int(offsets.get(name, 0))
            for line in data[pos:].split(b"\n"):
                start, pos = pos, pos + len(line) + 1
                if not line:
                    continue
                ok = len(line) > 9 and line[8:9] == b" "
                try:
                    ok = ok and int(line[:8], 16) == zlib.crc32(line[9:])
                except ValueError:
                    ok = False
                if not ok:
                    if pos >= len(data):
                        continue  # a torn last line: its call never returned
                    raise CorruptStoreError(
                        str(path),
                        start,
                        "a journal line fails its checksum",
                        advice=_ADVICE,
                        others_affected=True,
                    )
                try:
                    records.append((str(path), start, json.loads(line[9:])))
                except ValueError as exc:
                    self._db.reject(str(path), f"byte {start}", f"not valid JSON ({exc})", line[9:].decode())
        db = self._db
        for ordered in (True, False):
            for source, offset, record in records:
                is_insert = isinstance(record, dict) and str(record.get("op", "")).startswith("insert")
                if is_insert != ordered:
                    continue
                reason = db.apply(record)
                if reason is not None:
                    db.reject(source, f"byte {offset}", reason, record)
        self._write_db()
        for name in os.listdir(folder):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()
        logger.info("%s: replayed and removed %d journals of unitrack.db/1", self.path, len(names))
