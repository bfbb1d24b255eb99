"""``ProtocolMultiplexer``: one Protocol that fans every write out to several backends.

For example a local copy and a server: ``ProtocolMultiplexer(get_protocol('hdf5://runs'),
get_protocol('socket://...'))``. Reads come from the first backend still in use.

Failure policy: a backend that fails while a project, group or trial is being created (the start of a run)
stops the run with its error, since going on would log to a trial that does not exist there. A backend that
fails later is set aside: logged once as a warning, named again at ``close()``, and the others carry on. Only
when every backend has failed does the error reach the caller.

Example:
    >>> from unitrack.persistence.backends.ephemeral import EphemeralProtocol
    >>> from unitrack.persistence.structure import Trial
    >>> a, b = EphemeralProtocol(strict=False), EphemeralProtocol(strict=False)
    >>> both = ProtocolMultiplexer(a, b)
    >>> t = both.new_trial(Trial(name="run"))
    >>> both.log_trial_metrics(t, step=0, loss=1.0)
    >>> b.fetch_trials(None)[0].metrics["loss"].latest
    1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from unitrack.errors import ConfigError, UnitrackError
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate

__all__ = ["ProtocolMultiplexer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ProtocolMultiplexer(Protocol):
    """Fan every call out to ``backends``, in order.

    Args:
        *backends: the Protocols to write to; the first healthy one answers reads.

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
    def active(self) -> list[Protocol]:
        """The backends still in use."""
        return [b for i, b in enumerate(self.backends) if i not in self.failed]

    def _set_aside(self, index: int, exc: BaseException) -> None:
        self.failed[index] = exc
        logger.warning(
            "backend %d (%s) failed and is set aside; the others carry on: %s",
            index,
            type(self.backends[index]).__name__,
            exc,
        )

    def _all_strict(self, call: Callable[[Protocol], T]) -> T:
        """Creation: every active backend must succeed; the first backend's answer is returned."""
        results = [call(b) for b in self.active]
        return results[0]

    def _all_tolerant(self, call: Callable[[Protocol], T]) -> T | None:
        """Later writes: a failing backend is set aside unless it is the last one standing."""
        result: T | None = None
        have_result = False
        for index, backend in enumerate(self.backends):
            if index in self.failed:
                continue
            try:
                value = call(backend)
            except (UnitrackError, OSError) as exc:
                if len(self.active) == 1:
                    raise
                self._set_aside(index, exc)
                continue
            if not have_result:
                result, have_result = value, True
        return result

    def _read(self, call: Callable[[Protocol], T]) -> T:
        for index, backend in enumerate(self.backends):
            if index in self.failed:
                continue
            try:
                return call(backend)
            except (UnitrackError, OSError) as exc:
                if len(self.active) == 1:
                    raise
                self._set_aside(index, exc)
        raise AssertionError("unreachable: the last active backend re-raises")

    # ------------------------------------------------------------------------------------------ primitives
    def insert_project(self, project: Project) -> Project | None:
        return self._all_strict(lambda b: b.insert_project(project))

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        return self._all_strict(lambda b: b.insert_group(group))

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        return self._all_strict(lambda b: b.insert_trial(trial, auto_increment))

    def find_projects(self, query: Query) -> list[Project]:
        return self._read(lambda b: b.find_projects(query))

    def find_groups(self, query: Query) -> list[TrialGroup]:
        return self._read(lambda b: b.find_groups(query))

    def find_trials(self, query: Query) -> list[Trial]:
        return self._read(lambda b: b.find_trials(query))

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        return self._read(lambda b: b.find_trial_summaries(query))

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        self._all_tolerant(lambda b: b.update_trial(uid, update))

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        self._all_tolerant(lambda b: b.update_group(uid, update))

    def _mirror(self, call: Callable[[Protocol], object]) -> None:
        """Apply to every active backend but the first (which answered) a change it already made."""
        primary = self.active[0]
        for index, backend in enumerate(self.backends):
            if index in self.failed or backend is primary:
                continue
            try:
                call(backend)
            except (UnitrackError, OSError) as exc:
                self._set_aside(index, exc)

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        # The first backend decides which trial is taken; the others get the same update by uid.
        taken = self._read(lambda b: b.find_and_update_trial(query, update))
        if taken is not None:
            self._mirror(lambda b: b.update_trial(taken.uid, update))
        return taken

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        taken = self._read(lambda b: b.find_and_update_group(query, update))
        if taken is not None:
            self._mirror(lambda b: b.update_group(taken.uid, update))
        return taken

    def commit(self, **kwargs: Any) -> None:
        self._all_tolerant(lambda b: b.commit(**kwargs))

    def close(self) -> None:
        """Close every backend and name again those that were set aside."""
        for index, backend in enumerate(self.backends):
            try:
                backend.close()
            except (UnitrackError, OSError) as exc:
                if index not in self.failed:
                    self._set_aside(index, exc)
        for index, failure in self.failed.items():
            logger.warning(
                "backend %d (%s) was set aside during this run and missed writes after: %s",
                index,
                type(self.backends[index]).__name__,
                failure,
            )
