"""``ProtocolMultiplexer``: one Protocol that fans every call out to several backends.

For example a server and a local copy: ``ProtocolMultiplexer(get_protocol('socket://...'),
get_protocol('hdf5://runs'))``.

The rule is track's (seed 004): every backend is called in order; **the last backend is the authority** — its
answer is returned (writes and reads alike) and its failure reaches the caller; the backends before it are
mirrors — a mirror that fails is logged and skipped. One refinement: a failed mirror is set aside for the rest
of the run (logged once, named again at ``close()``) instead of being called again, so it never holds a run with
holes in the middle; ``unitrack sync LAST MIRROR`` copies what it missed afterwards. Put the backend that must
not lose data last (the local ``hdf5://`` store of a cluster job), and the ones that may be away (a server)
before it.

Example:
    >>> from unitrack.persistence.backends.ephemeral import EphemeralProtocol
    >>> from unitrack.persistence.structure import Trial
    >>> a, b = EphemeralProtocol(strict=False), EphemeralProtocol(strict=False)
    >>> both = ProtocolMultiplexer(a, b)
    >>> t = both.new_trial(Trial(name="run"))
    >>> both.log_trial_metrics(t, step=0, loss=1.0)
    >>> a.fetch_trials(None)[0].metrics["loss"].latest
    1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from unitrack.errors import ConfigError, UnitrackError
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate

__all__ = ["ProtocolMultiplexer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ProtocolMultiplexer(Protocol):
    """Fan every call out to ``backends``, in order; the last one is the authority (see the module docstring).

    Args:
        *backends: the Protocols to write to; the last one's answers are returned.

    Raises:
        ConfigError: when no backend is given.
    """

    def __init__(self, *backends: Protocol) -> None:
        super().__init__()
        if not backends:
            raise ConfigError("ProtocolMultiplexer needs at least one backend.")
        for backend in backends:
            if not isinstance(backend, Protocol):
                raise ConfigError(f"ProtocolMultiplexer takes Protocols, not {type(backend).__name__}.")
        self.backends: tuple[Protocol, ...] = backends
        self.failed: dict[int, BaseException] = {}
        # The multiplexer checks nothing itself: each backend applies its own strictness.
        self.strict = False

    @property
    def authority(self) -> Protocol:
        """The last backend: its answers are returned and its failures raised."""
        return self.backends[-1]

    @property
    def active(self) -> list[Protocol]:
        """The backends still in use (the authority always is)."""
        return [b for i, b in enumerate(self.backends) if i not in self.failed]

    def _set_aside(self, index: int, exc: BaseException) -> None:
        self.failed[index] = exc
        logger.warning(
            "backend %d (%s) failed and is set aside for this run; the others carry on "
            "(copy what it missed with 'unitrack sync'): %s",
            index,
            type(self.backends[index]).__name__,
            exc,
        )

    def _mirrors(self, call: Callable[[Protocol], object], skip: Protocol | None = None) -> None:
        """Call every mirror still in use; one that fails is logged and set aside."""
        last = len(self.backends) - 1
        for index, backend in enumerate(self.backends[:last]):
            if index in self.failed or backend is skip:
                continue
            try:
                call(backend)
            except (UnitrackError, OSError) as exc:
                self._set_aside(index, exc)

    def _all(self, call: Callable[[Protocol], T]) -> T:
        """Every backend in order; the authority's answer is returned and its failure raised."""
        self._mirrors(call)
        return call(self.authority)

    def _read(self, call: Callable[[Protocol], T]) -> T:
        return call(self.authority)

    # ------------------------------------------------------------------------------------------ primitives
    def insert_project(self, project: Project) -> Project | None:
        return self._all(lambda b: b.insert_project(project))

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        return self._all(lambda b: b.insert_group(group))

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        return self._all(lambda b: b.insert_trial(trial, auto_increment))

    def find_projects(self, query: Query) -> list[Project]:
        return self._read(lambda b: b.find_projects(query))

    def find_groups(self, query: Query) -> list[TrialGroup]:
        return self._read(lambda b: b.find_groups(query))

    def find_trials(self, query: Query) -> list[Trial]:
        return self._read(lambda b: b.find_trials(query))

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        return self._read(lambda b: b.find_trial_summaries(query))

    def find_series(self, request: SeriesRequest) -> list[Series]:
        return self._read(lambda b: b.find_series(request))

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        self._all(lambda b: b.update_trial(uid, update))

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        self._all(lambda b: b.update_group(uid, update))

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        # The authority decides which trial is taken (an exclusive reservation); the mirrors get the same
        # update by uid.
        taken = self._read(lambda b: b.find_and_update_trial(query, update))
        if taken is not None:
            self._mirrors(lambda b: b.update_trial(taken.uid, update))
        return taken

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        taken = self._read(lambda b: b.find_and_update_group(query, update))
        if taken is not None:
            self._mirrors(lambda b: b.update_group(taken.uid, update))
        return taken

    def commit(self, **kwargs: Any) -> None:
        self._all(lambda b: b.commit(**kwargs))

    def close(self) -> None:
        """Close every backend (the authority's failure to close is raised) and name those set aside."""
        last = len(self.backends) - 1
        for index, backend in enumerate(self.backends[:last]):
            try:
                backend.close()
            except (UnitrackError, OSError) as exc:
                if index not in self.failed:
                    self._set_aside(index, exc)
        try:
            self.authority.close()
        finally:
            self._name_set_aside()

    def _name_set_aside(self) -> None:
        for index, failure in self.failed.items():
            logger.warning(
                "backend %d (%s) was set aside during this run and missed writes after: %s",
                index,
                type(self.backends[index]).__name__,
                failure,
            )
