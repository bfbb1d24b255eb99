"""``pickled://PATH``: track's pickled database, kept for compatibility only. Prefer ``file://`` or ``hdf5://``.

track loaded this file with ``pickle.loads``, so anyone able to write it could run code in every process that
opened it (its default lived in world-writable ``/tmp``). Here the file holds only plain data (dicts, lists,
strings, numbers) and is read with an unpickler that refuses every class or function reference, and a file or
folder that other users can write is refused outright. Each call rewrites the whole file under a lock, like
track's, so it is slow for long runs.

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

import io
import os
import pickle  # noqa: S403 - plain data only, read with _PlainUnpickler (no globals)
import stat
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import filelock

from unitrack.errors import ConcurrentWrite, CorruptStoreError, StorageError
from unitrack.persistence.backends.file import atomic_write
from unitrack.persistence.memory import Database
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri

__all__ = ["PickledProtocol"]

T = TypeVar("T")


class _PlainUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; only plain data is accepted")


def _loads_plain(data: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


def _check_permissions(path: Path) -> None:
    for target, what in ((path, "file"), (path.parent, "folder")):
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            continue
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StorageError(
                f"Refusing pickled database {path}: its {what} {target} is writable by other users, who could "
                f"make every reader run their code. Use a private folder (chmod go-w {target})."
            )


class PickledProtocol(Protocol):
    """One pickle file of plain data, rewritten under a lock on every write.

    Args:
        uri: ``pickled://PATH`` (relative) or ``pickled:///abs/PATH``.
        strict: check that a trial's project and group exist.
        lock_timeout_s: how long to wait for the file lock.

    Raises:
        StorageError: when the file or its folder is writable by other users.
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
        _check_permissions(self.path)
        self.lock_timeout_s = lock_timeout_s
        self._filelock = filelock.FileLock(str(self.path) + ".lock", timeout=lock_timeout_s)
        self._mutex = threading.RLock()

    def _load(self) -> Database:
        _check_permissions(self.path)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Database(self.strict)
        try:
            data = _loads_plain(raw)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise CorruptStoreError(str(self.path), 0, f"not a readable pickle ({exc})") from exc
        return Database.from_json(data, strict=self.strict)

    def _run(self, fn: Callable[[Database], T], write: bool) -> T:
        with self._mutex:
            try:
                with self._filelock:
                    db = self._load()
                    result = fn(db)
                    if write:
                        atomic_write(self.path, pickle.dumps(db.to_json(), protocol=4), fsync=False)
                        os.chmod(self.path, 0o600)
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
