"""``pickled://PATH``: track's pickled database, kept for compatibility only. Prefer ``file://`` or ``hdf5://``.

track loaded this file with ``pickle.loads``, so anyone able to write it could run code in every process that
opened it (its default lived in world-writable ``/tmp``). Here the file holds only plain data (dicts, lists,
strings, numbers) and is read with an unpickler that refuses every class or function reference; a file owned
by another user, or a file or folder that other users can write, is refused outright (checked on the open file,
so it cannot be swapped in between). The data carries a SHA-256 (format ``unitrack.pickled/2``), so a damaged
file is an error naming it, never other values; a file of the first unitrack version (unsealed) still opens.
Each call rewrites the whole file under a lock, like track's, so it is slow for long runs.

Example:
    >>> import tempfile, warnings
    >>> folder = tempfile.mkdtemp()
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     p = PickledProtocol(f"pickled://{folder}/db.pkl")
    >>> p.fetch_trials(None)
    []
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle  # noqa: S403 - plain data only, read with _PlainUnpickler (no globals)
import pwd
import stat
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import filelock

from unitrack.errors import ConcurrentWrite, CorruptStoreError, SchemaError, StorageError
from unitrack.persistence.integrity import atomic_write
from unitrack.persistence.memory import Database
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri

__all__ = ["PickledProtocol"]

T = TypeVar("T")

_ADVICE = "Restore it from a backup, or move it aside to start a new database"

FORMAT = "unitrack.pickled/2"
_LEGACY_FORMAT = "unitrack.db/1"


class _PlainUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only plain data is accepted")


def _loads_plain(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


#: What unpickling damaged bytes can raise (no code runs: every class reference is refused).
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def _seal(db: Database) -> bytes:
    payload = pickle.dumps(db.to_json(), protocol=4)
    return pickle.dumps(
        {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}, protocol=4
    )


def _unseal(path: Path, raw: bytes) -> Any:
    """The database's plain data, after checking the seal (or an unsealed file of the first version).

    Raises:
        CorruptStoreError: naming the file when it is not a readable pickle of plain data or fails its seal.
    """
    try:
        outer = _loads_plain(raw)
        if isinstance(outer, dict) and outer.get("format") == _LEGACY_FORMAT:
            return outer
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise CorruptStoreError(
                str(path), 0, "not a unitrack pickled database", advice=_ADVICE, others_affected=True
            )
        payload = outer.get("payload")
        if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
            raise CorruptStoreError(
                str(path), 0, "its data does not match its sha256", advice=_ADVICE, others_affected=True
            )
        return _loads_plain(payload)
    except _UNPICKLE_ERRORS as exc:
        raise CorruptStoreError(
            str(path), 0, f"not a readable pickle ({exc})", advice=_ADVICE, others_affected=True
        ) from exc


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_permissions(path: Path, st: os.stat_result | None = None) -> None:
    """Refuse a file another user owns or can write, and a folder another user can write or owns.

    ``st`` is the ``fstat`` of the open file, so what is checked is what is read.
    """
    me = os.geteuid()
    folder = path.parent
    try:
        folder_st = os.stat(folder)
    except FileNotFoundError:
        folder_st = None
    if folder_st is not None:
        if folder_st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StorageError(
                f"Refusing pickled database {path}: its folder {folder} is writable by other users, who could make "
                f"every reader run their code. Use a private folder (chmod go-w {folder})."
            )
        if folder_st.st_uid not in (me, 0):
            raise StorageError(
                f"Refusing pickled database {path}: its folder {folder} belongs to {_owner(folder_st.st_uid)}, "
                "who could replace the file with one that runs their code in your process. Copy the file into a "
                "folder you own, or use file:// for data several people share."
            )
    if st is None:
        return
    if st.st_uid != me:
        raise StorageError(
            f"Refusing pickled database {path}: it belongs to {_owner(st.st_uid)}, not to you, and a pickle can "
            "run its author's code in every process that reads it. Copy it into a folder you own after checking "
            "where it came from (cp it, then chmod 600 the copy), or use file:// for data several people share."
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StorageError(
            f"Refusing pickled database {path}: the file is writable by other users, who could make every reader "
            f"run their code. Make it private (chmod go-w {path})."
        )


class PickledProtocol(Protocol):
    """One pickle file of plain data, rewritten under a lock on every write.

    Args:
        uri: ``pickled://PATH`` (relative) or ``pickled:///abs/PATH``.
        strict: check that a trial's project and group exist.
        lock_timeout_s: how long to wait for the file lock.

    Raises:
        StorageError: when the file belongs to another user, or the file or its folder is writable by other
            users (or the folder belongs to another user).
        CorruptStoreError: when the file is damaged or holds anything but plain data.
    """

    def __init__(self, uri: str | ParsedURI, strict: bool = True, lock_timeout_s: float = 60.0) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        if not self.uri.file_path:
            raise StorageError(f"{self.uri} names no file; use pickled://runs/db.pkl.")
        self.path = Path(os.path.expanduser(self.uri.file_path))
        self.strict = strict
        warnings.warn(
            "pickled:// exists for track compatibility only and rewrites the whole file on every call; "
            "use file:// or hdf5:// instead",
            UserWarning,
            stacklevel=2,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()  # refuses a file another user owns or can write, and a damaged one, before any use
        self.lock_timeout_s = lock_timeout_s
        self._filelock = filelock.FileLock(str(self.path) + ".lock", timeout=lock_timeout_s)
        self._mutex = threading.RLock()

    def _load(self) -> Database:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            _check_permissions(self.path)
            return Database(self.strict)
        except OSError as exc:
            raise StorageError(f"Cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            _check_permissions(self.path, os.fstat(fd))
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = fh.read()
        finally:
            os.close(fd)
        data = _unseal(self.path, raw)
        try:
            return Database.from_json(data, strict=self.strict, source=str(self.path))
        except SchemaError as exc:
            raise CorruptStoreError(
                str(self.path), 0, str(exc), advice=_ADVICE, others_affected=True
            ) from exc

    def _run(self, fn: Callable[[Database], T], write: bool) -> T:
        with self._mutex:
            try:
                with self._filelock:
                    db = self._load()
                    result = fn(db)
                    if write:
                        atomic_write(self.path, _seal(db), fsync=False, mode=0o600)
                    return result
            except filelock.Timeout as exc:
                raise ConcurrentWrite(str(self.path) + ".lock", self.lock_timeout_s) from exc

    def insert_project(self, project: Project) -> Project | None:
        return self._run(lambda db: db.insert_project(project), write=True)

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        return self._run(lambda db: db.insert_group(group), write=True)

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        return self._run(lambda db: db.insert_trial(trial, auto_increment), write=True)

    def find_projects(self, query: Query) -> list[Project]:
        return self._run(lambda db: db.find_projects(query), write=False)

    def find_groups(self, query: Query) -> list[TrialGroup]:
        return self._run(lambda db: db.find_groups(query), write=False)

    def find_trials(self, query: Query) -> list[Trial]:
        return self._run(lambda db: db.find_trials(query), write=False)

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        return self._run(lambda db: db.find_trial_summaries(query), write=False)

    def find_series(self, request: SeriesRequest) -> list[Series]:
        return self._run(lambda db: db.find_series(request), write=False)

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        self._run(lambda db: db.update_trial(uid, update), write=True)

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        self._run(lambda db: db.update_group(uid, update), write=True)

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        def take(db: Database) -> Trial | None:
            rec = db.first_trial(query)
            if rec is None:
                return None
            rec.apply(update)
            return rec.snapshot()

        return self._run(take, write=True)

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        def take(db: Database) -> TrialGroup | None:
            rec = db.first_group(query)
            if rec is None:
                return None
            db.update_group(rec.uid, update)
            return db.find_groups({"uid": rec.uid})[0]

        return self._run(take, write=True)

    def commit(self, **kwargs: Any) -> None:
        """Every call already wrote the file."""

    def artifact_dir(self, uid: str) -> Path:
        """Where trial ``uid`` keeps its artifacts: ``<database>.artifacts/<uid>`` (see ``persistence.artifacts``)."""
        return self.path.with_name(self.path.name + ".artifacts") / uid
