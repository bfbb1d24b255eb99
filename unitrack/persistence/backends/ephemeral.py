"""``ephemeral://``: a backend in memory, for tests and scratch work. Nothing outlives the object.

Example:
    >>> from unitrack.persistence.registry import get_protocol
    >>> p = get_protocol("ephemeral://")
    >>> p.fetch_trials(None)
    []
"""

from __future__ import annotations

import threading
from typing import Any

from unitrack.persistence.memory import Database
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri

__all__ = ["EphemeralProtocol"]


class EphemeralProtocol(Protocol):
    """Every call works on one in-memory database guarded by a lock (safe across threads).

    Args:
        uri: ``ephemeral://`` (anything after the scheme is ignored).
        strict: check that a trial's project and group exist.
    """

    def __init__(self, uri: str | ParsedURI = "ephemeral://", strict: bool = True) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        self.strict = strict
        self._db = Database(strict)
        self._lock = threading.RLock()

    def insert_project(self, project: Project) -> Project | None:
        with self._lock:
            return self._db.insert_project(project)

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        with self._lock:
            return self._db.insert_group(group)

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        with self._lock:
            return self._db.insert_trial(trial, auto_increment)

    def find_projects(self, query: Query) -> list[Project]:
        with self._lock:
            return self._db.find_projects(query)

    def find_groups(self, query: Query) -> list[TrialGroup]:
        with self._lock:
            return self._db.find_groups(query)

    def find_trials(self, query: Query) -> list[Trial]:
        with self._lock:
            return self._db.find_trials(query)

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        with self._lock:
            return self._db.find_trial_summaries(query)

    def find_series(self, request: SeriesRequest) -> list[Series]:
        with self._lock:
            return self._db.find_series(request)

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        with self._lock:
            self._db.update_trial(uid, update)

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        with self._lock:
            self._db.update_group(uid, update)

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        with self._lock:
            rec = self._db.first_trial(query)
            if rec is None:
                return None
            rec.apply(update)
            return rec.snapshot()

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        with self._lock:
            rec = self._db.first_group(query)
            if rec is None:
                return None
            self._db.update_group(rec.uid, update)
            return self._db.find_groups({"uid": rec.uid})[0]

    def commit(self, **kwargs: Any) -> None:
        """Nothing to persist."""
