"""The persistence ``Protocol``: what every backend provides (track's API, with one meaning everywhere).

A backend implements a small set of storage primitives (the ``@abstractmethod`` s below: insert, find,
update, find-and-update, commit). Every method of track's Protocol is concrete here and goes through them, so
all backends share one meaning, checked by one contract suite:

- parameters, metadata and tags **merge** key by key;
- metrics **append** ``(step, value)`` points (a step is optional, mixed series are allowed, a point at a step
  that already has a value replaces it) and keep the latest value;
- chronos **aggregate** timings (``StatAggregator`` by default);
- ``fetch_*`` return objects, never dicts; ``get_trial`` of a missing trial returns ``[]``;
- ``new_trial`` of an existing trial returns ``None`` unless ``auto_increment=True`` (a new revision).

The primitives are also exactly what a server exposes (:data:`PRIMITIVES`).

Example:
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Project, Trial
    >>> p = get_protocol("ephemeral://")
    >>> project = p.new_project(Project(name="demo"))
    >>> trial = p.new_trial(Trial(name="run", project_id="demo", parameters={"lr": 0.1}))
    >>> p.log_trial_metrics(trial, step=1, loss=0.5)
    >>> p.log_trial_metrics(trial, step=2, loss=0.25)
    >>> [t.metrics["loss"].latest for t in p.fetch_trials({"parameters.lr": {"$lt": 1}})]
    [0.25]
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from unitrack.errors import ItemNotFound, NotFoundError, SchemaError
from unitrack.persistence.aggregators import Aggregator, StatAggregator
from unitrack.persistence.query import Query, normalize_query
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import (
    ChronoObservation,
    CustomStatus,
    GroupUpdate,
    Metric,
    MetricPoint,
    Project,
    Status,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_step,
    status,
    status_from_json,
)

__all__ = ["PRIMITIVES", "Protocol", "Query", "TrialRef", "summary_of", "trial_uid"]

logger = logging.getLogger(__name__)

TrialRef = Trial | str
GroupRef = TrialGroup | str
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]

#: Default accumulator of ``log_trial_chrono_start``: statistics after skipping the first (warm-up) timing.
CHRONO_AGGREGATOR: Callable[[], Aggregator] = StatAggregator.lazy(1)

#: The update methods ``fetch_and_update_trial`` may name (track let a client name any method).
TRIAL_UPDATERS = frozenset(
    {"set_trial_status", "log_trial_metadata", "log_trial_arguments", "add_trial_tags", "log_trial_metrics"}
)
GROUP_UPDATERS = frozenset({"set_group_metadata"})


def trial_uid(trial: TrialRef) -> str:
    """The uid of a Trial, or the uid string itself."""
    if isinstance(trial, Trial):
        return trial.uid
    if isinstance(trial, str) and trial:
        return trial
    raise SchemaError(f"Expected a Trial or a trial uid, not {trial!r}")


def summary_of(trial: Trial) -> Trial:
    """``trial`` with each metric reduced to its latest value (no points), as ``find_trial_summaries`` returns."""
    if not any(m.values for m in trial.metrics.values()):
        return trial
    metrics = {k: Metric(k, (), (), m.latest, m.logged) for k, m in trial.metrics.items()}
    return replace(trial, metrics=metrics)


def _group_uid(group: GroupRef) -> str:
    if isinstance(group, TrialGroup):
        return group.uid
    if isinstance(group, str) and group:
        return group
    raise SchemaError(f"Expected a TrialGroup or a group uid, not {group!r}")


def _merged(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Merge dicts passed positionally and keywords (``set_group_metadata(group, {'a': 1}, b=2)``)."""
    values: dict[str, Any] = {}
    for arg in args:
        if not isinstance(arg, Mapping):
            raise SchemaError(f"set_group_metadata takes dicts or keywords, not {arg!r}")
        values.update(arg)
    values.update(kwargs)
    return values


def _as_status(value: Any) -> StatusLike:
    if isinstance(value, (Status, CustomStatus)):
        return value
    if isinstance(value, str):
        return status(value)
    return status_from_json(value)


def _describe_exception(exc_type: Any, exc_val: Any, exc_tb: Any) -> str:
    return "".join(traceback.format_exception(exc_type, exc_val, exc_tb)).rstrip()


class Protocol(abc.ABC):
    """Base class of every backend: track's methods on top of a few storage primitives.

    Subclasses implement the abstract primitives; a backend missing one fails when it is built, not halfway
    through a run. A Protocol is a context manager; leaving it commits and closes.
    """

    #: Whether the backend checks that a trial's project and group exist (track's ``strict``).
    strict: bool = True

    def __init__(self) -> None:
        self._chrono_starts: dict[
            tuple[str, str], tuple[float, dict[str, Any], Callable[[], Any] | None]
        ] = {}

    # ----------------------------------------------------------------------------------------- primitives
    @abc.abstractmethod
    def insert_project(self, project: Project) -> Project | None:
        """Store a new project; return it, or None when a project with its uid exists."""

    @abc.abstractmethod
    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        """Store a new group; return it, or None when a group with its uid exists.

        Raises:
            NotFoundError: when ``strict`` and its project does not exist (checked atomically with the insert).
        """

    @abc.abstractmethod
    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        """Store a new trial; when its uid exists return None, or with ``auto_increment`` store it as the next
        revision of its hash and return that.

        Raises:
            NotFoundError: when ``strict`` and its project or group does not exist.
        """

    def insert_trials(self, trials: Sequence[Trial]) -> list[bool]:
        """Store many complete trials (fields, metric points, status) at once: what copying runs between
        backends writes (``unitrack sync``).

        Each trial is stored as :meth:`insert_trial` would store it, or not at all when its uid exists. A backend
        may write them all in one transaction (``postgresql://`` does, with a bulk copy of the points), so a
        reader never sees a trial without its points. This default inserts them one at a time.

        Returns:
            For each trial, whether this call stored it. False when its uid existed, or, after a lost
            connection that was retried, possibly because the first attempt stored it: check before relying on
            False.

        Raises:
            NotFoundError: when ``strict`` and a project or group does not exist.
            SchemaError: for a trial the backend cannot store (a backend writing in one transaction then
                stores none of them).
        """
        return [self.insert_trial(trial) is not None for trial in trials]

    def update_trials(self, items: Sequence[tuple[str, TrialUpdate]]) -> None:
        """Apply many updates, in order, as :meth:`update_trial` applies each (a server applies a client's
        batch with one call). A backend may apply them in one transaction, all or none; this default applies
        them one at a time.

        Raises:
            NotFoundError: when a trial does not exist.
        """
        for uid, update in items:
            self.update_trial(uid, update)

    @abc.abstractmethod
    def find_projects(self, query: Query) -> list[Project]:
        """Projects matching ``query``, with their ``groups`` and ``trials`` uid sets filled in."""

    @abc.abstractmethod
    def find_groups(self, query: Query) -> list[TrialGroup]:
        """Groups matching ``query``, with their ``trials`` uid sets filled in."""

    @abc.abstractmethod
    def find_trials(self, query: Query) -> list[Trial]:
        """Trials matching ``query``, in insertion order."""

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        """Trials matching ``query`` without their series: every field, each Metric with only its ``latest``.

        What a listing of runs reads (``unitrack view``, :func:`unitrack.runs`): a backend answers it without
        reading any metric point. This default reads the full trials and drops their points; every built-in
        backend overrides it with a read of its summaries.
        """
        return [summary_of(t) for t in self.find_trials(query)]

    @abc.abstractmethod
    def find_series(self, request: SeriesRequest) -> list[Series]:
        """Points of the metrics ``request.metrics`` of the trials ``request.uids``, in that order: only those
        series are read, only points in the step range are kept, and a series longer than
        ``request.max_points`` is downsampled here, at the source (see :mod:`unitrack.persistence.series`).
        Unknown uids and metrics a trial lacks give no series.
        """

    @abc.abstractmethod
    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        """Apply ``update`` to trial ``uid`` atomically, durably when this returns.

        Raises:
            NotFoundError: when no trial has that uid (nothing is written).
        """

    @abc.abstractmethod
    def update_group(self, uid: str, update: GroupUpdate) -> None:
        """Apply ``update`` to group ``uid``.

        Raises:
            NotFoundError: when no group has that uid.
        """

    @abc.abstractmethod
    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        """Atomically take the first trial matching ``query``, apply ``update`` and return it (or None).

        Two processes calling this with the same query never get the same trial when the update makes it stop
        matching (the multi-worker "reserve a trial" primitive).
        """

    @abc.abstractmethod
    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        """Atomically take the first group matching ``query``, apply ``update`` and return it (or None)."""

    @abc.abstractmethod
    def commit(self, **kwargs: Any) -> None:
        """Make everything written so far part of the backend's main storage (e.g. fold a journal).

        ``trials=`` (a collection of uids), when given, limits the work to those trials where the backend keeps
        trials apart (``hdf5://`` rebuilds only their ``store.h5``); a backend may do more, never less. The
        server passes the trials the calling client wrote, so one client's commit does only its own work.
        """

    def close(self) -> None:
        """Commit and release files, locks and connections. Further calls are an error."""
        self.commit()

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """A block of many writes (e.g. registering a grid of trials): a backend may hold its lock across it.

        Every write inside is as durable when it returns as outside; only the locking is shared.
        """
        return contextlib.nullcontext()

    def __enter__(self) -> Protocol:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ projects
    def new_project(self, project: Project) -> Project:
        """Insert a new project; an existing one with the same name is returned as it is."""
        inserted = self.insert_project(project)
        if inserted is not None:
            return inserted
        logger.debug("project %s exists; returning it", project.uid)
        existing = self.get_project(project)
        if existing is None:  # pragma: no cover - only if another process deleted it in between
            raise NotFoundError(f"Project {project.uid!r} vanished while being created; retry.")
        return existing

    def get_project(self, project: Project | str) -> Project | None:
        """Return the stored project with this name, or None."""
        uid = project.uid if isinstance(project, Project) else project
        found = self.find_projects({"uid": uid})
        return found[0] if found else None

    def fetch_projects(self, query: Query) -> list[Project]:
        """Projects matching ``query`` (see :mod:`unitrack.persistence.query`)."""
        return self.find_projects(query)

    # -------------------------------------------------------------------------------------------- groups
    def new_trial_group(self, group: TrialGroup) -> TrialGroup | None:
        """Insert a new group and attach it to its project; None when it exists.

        Raises:
            NotFoundError: when the backend is ``strict`` and the group's project does not exist.
        """
        return self.insert_group(group)

    def get_trial_group(self, group: GroupRef) -> TrialGroup | None:
        """Return the stored group with this uid, or None."""
        found = self.find_groups({"uid": _group_uid(group)})
        return found[0] if found else None

    def fetch_groups(self, query: Query) -> list[TrialGroup]:
        """Groups matching ``query``."""
        return self.find_groups(query)

    def set_group_metadata(self, group: GroupRef, *args: Any, **kwargs: Any) -> None:
        """Merge ``kwargs`` (and dicts passed positionally) into the group's metadata."""
        self.update_group(_group_uid(group), GroupUpdate(metadata=_merged(args, kwargs)))

    def fetch_and_update_group(self, query: Query, attr: str, *args: Any, **kwargs: Any) -> TrialGroup:
        """Atomically take the first group matching ``query`` and apply ``attr`` (``'set_group_metadata'``).

        Raises:
            SchemaError: when ``attr`` is not an update method.
            ItemNotFound: when no group matches.
        """
        if attr not in GROUP_UPDATERS:
            raise SchemaError(
                f"fetch_and_update_group cannot call {attr!r}; allowed: {', '.join(sorted(GROUP_UPDATERS))}"
            )
        found = self.find_and_update_group(query, GroupUpdate(metadata=_merged(args, kwargs)))
        if found is None:
            raise ItemNotFound("group", repr(query))
        return found

    # -------------------------------------------------------------------------------------------- trials
    def new_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        """Insert a new trial, attached to its project and group by their ids.

        Returns:
            The stored trial; None when its uid exists and ``auto_increment`` is False.

        Raises:
            NotFoundError: when the backend is ``strict`` and the trial's project or group does not exist.
        """
        return self.insert_trial(trial, auto_increment=auto_increment)

    def get_trial(self, trial: Trial) -> list[Trial]:
        """Return every revision sharing ``trial.hash`` when ``trial.uid`` exists, else ``[]``."""
        found = self.find_trials({"hash": trial.hash})
        if not any(t.uid == trial.uid for t in found):
            return []
        return sorted(found, key=lambda t: t.revision)

    def fetch_trials(self, query: Query) -> list[Trial]:
        """Trials matching ``query`` (see :mod:`unitrack.persistence.query`)."""
        return self.find_trials(query)

    def fetch_series(
        self,
        trials: Sequence[TrialRef],
        metrics: Sequence[str],
        *,
        step_min: float | None = None,
        step_max: float | None = None,
        max_points: int | None = None,
        method: str = "minmax",
    ) -> list[Series]:
        """The points of ``metrics`` of ``trials`` (Trials or uids), downsampled at the source to at most
        ``max_points`` per series (see :mod:`unitrack.persistence.series`).

        Raises:
            SchemaError: for a malformed range, method or point count.
        """
        request = SeriesRequest(
            uids=tuple(trial_uid(t) for t in trials),
            metrics=tuple(metrics),
            step_min=step_min,
            step_max=step_max,
            max_points=max_points,
            method=method,
        )
        return self.find_series(request)

    def add_project_trial(self, project: Project | str, trial: TrialRef) -> None:
        """Attach a trial to a project (sets ``trial.project_id``).

        Raises:
            NotFoundError: when the project or the trial does not exist.
        """
        uid = project.uid if isinstance(project, Project) else project
        if self.get_project(uid) is None:
            raise NotFoundError(f"Project {uid!r} does not exist; create it first (new_project).")
        self.update_trial(trial_uid(trial), TrialUpdate(project_id=uid))

    def add_group_trial(self, group: GroupRef, trial: TrialRef) -> None:
        """Attach a trial to a group (sets ``trial.group_id``, and its project when it has none).

        Raises:
            NotFoundError: when the group or the trial does not exist.
        """
        stored = self.get_trial_group(group)
        if stored is None:
            raise NotFoundError(
                f"Group {_group_uid(group)!r} does not exist; create it first (new_trial_group)."
            )
        self.update_trial(trial_uid(trial), TrialUpdate(group_id=stored.uid, project_id=stored.project_id))

    def fetch_and_update_trial(self, query: Query, attr: str, *args: Any, **kwargs: Any) -> Trial:
        """Atomically take the first trial matching ``query`` and apply the update method ``attr`` to it.

        ``attr`` is one of ``set_trial_status``, ``log_trial_metadata``, ``log_trial_arguments``,
        ``add_trial_tags``, ``log_trial_metrics``; e.g. ``fetch_and_update_trial({'status': 'created'},
        'set_trial_status', status=Status.Running)`` reserves one trial for one worker.

        Raises:
            SchemaError: when ``attr`` is not one of those.
            ItemNotFound: when no trial matches.
        """
        if attr not in TRIAL_UPDATERS:
            raise SchemaError(
                f"fetch_and_update_trial cannot call {attr!r}; allowed: {', '.join(sorted(TRIAL_UPDATERS))}"
            )
        normalize_query(query)
        update = self._update_for(attr, *args, **kwargs)
        found = self.find_and_update_trial(query, update)
        if found is None:
            raise ItemNotFound("trial", repr(query))
        return found

    def _update_for(self, attr: str, *args: Any, **kwargs: Any) -> TrialUpdate:
        if attr == "set_trial_status":
            return self._status_update(*args, **kwargs)
        if args:
            raise SchemaError(f"{attr} takes keyword arguments only in fetch_and_update_trial, got {args!r}")
        if attr == "log_trial_metadata":
            kwargs.pop("aggregator", None)
            return TrialUpdate(metadata=kwargs)
        if attr == "log_trial_arguments":
            return TrialUpdate(parameters=kwargs)
        if attr == "add_trial_tags":
            return TrialUpdate(tags=kwargs)
        step = kwargs.pop("step", None)
        kwargs.pop("aggregator", None)
        return TrialUpdate(metrics=tuple(MetricPoint(k, step, v) for k, v in kwargs.items()))

    # ------------------------------------------------------------------------------------ trial updates
    def log_trial_arguments(self, trial: TrialRef, **kwargs: Any) -> None:
        """Merge ``kwargs`` into the trial's parameters (its hash is not recomputed)."""
        self.update_trial(trial_uid(trial), TrialUpdate(parameters=kwargs))

    def log_trial_metadata(
        self, trial: TrialRef, aggregator: Callable[[], Aggregator] | None = None, **kwargs: Any
    ) -> None:
        """Merge ``kwargs`` into the trial's metadata (the latest value of a key wins).

        ``aggregator`` is accepted for track compatibility; metadata always keeps the latest value.
        """
        self.update_trial(trial_uid(trial), TrialUpdate(metadata=kwargs))

    def log_trial_metrics(
        self,
        trial: TrialRef,
        step: Any = None,
        aggregator: Callable[[], Aggregator] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append one point per keyword to the trial's metric series, at ``step`` (optional).

        Metric series keep every point; ``aggregator`` is accepted for track compatibility (any aggregate can
        be computed from the series).

        Raises:
            SchemaError: for a value that is not a number or a step that is not a number or None.
        """
        step = check_step(step)
        points = tuple(MetricPoint.checked(name, step, value) for name, value in kwargs.items())
        self.update_trial(trial_uid(trial), TrialUpdate.of_metrics(points))

    def log_trial_step(
        self,
        trial: TrialRef,
        step: Any,
        metrics: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one point per entry of ``metrics`` at ``step`` and merge ``metadata``, as one atomic write.

        What a training loop's step (or an Experiment's message) needs: its numbers join the metric series and
        its other state lands in the trial's metadata together, so a crash keeps both or neither.

        Raises:
            SchemaError: for a value that is not a number, a step that is not a number or None, or metadata
                that is not plain data.
        """
        step = check_step(step)
        points = tuple(MetricPoint.checked(name, step, value) for name, value in metrics.items())
        self.update_trial(trial_uid(trial), TrialUpdate(metrics=points, metadata=metadata or {}))

    def log_trial_metric_points(self, trial: TrialRef, points: Sequence[MetricPoint]) -> None:
        """Append many points at once (one write; what batching clients call)."""
        self.update_trial(trial_uid(trial), TrialUpdate(metrics=tuple(points)))

    def add_trial_tags(self, trial: TrialRef, **kwargs: Any) -> None:
        """Merge ``kwargs`` into the trial's tags."""
        self.update_trial(trial_uid(trial), TrialUpdate(tags=kwargs))

    def set_trial_status(self, trial: TrialRef, status: Any, error: Any = None) -> None:
        """Set the trial's status; ``error`` (any object) is appended to its errors as text."""
        self.update_trial(trial_uid(trial), self._status_update(status, error))

    @staticmethod
    def _status_update(status: Any, error: Any = None) -> TrialUpdate:
        errors = () if error is None else (error if isinstance(error, str) else repr(error),)
        return TrialUpdate(status=_as_status(status), errors=errors)

    # ------------------------------------------------------------------------------------ lifecycle/time
    def log_trial_start(self, trial: TrialRef) -> None:
        """Mark the trial running and start its ``runtime`` timer."""
        self.log_trial_chrono_start(trial, "runtime", aggregator=StatAggregator.lazy(0))
        self.update_trial(
            trial_uid(trial), TrialUpdate(status=Status.Running, metadata={"start_time": time.time()})
        )

    def log_trial_finish(self, trial: TrialRef, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Stop the ``runtime`` timer and set the final status.

        ``Completed`` without an exception, ``Interrupted`` for KeyboardInterrupt/SystemExit, else
        ``Exception`` with the traceback recorded in ``errors``.
        """
        uid = trial_uid(trial)
        chrono = self._chrono_stop(uid, "runtime")
        if exc_type is None:
            final: StatusLike = Status.Completed
            errors: tuple[str, ...] = ()
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            final, errors = Status.Interrupted, (_describe_exception(exc_type, exc_val, exc_tb),)
        else:
            final, errors = Status.Exception, (_describe_exception(exc_type, exc_val, exc_tb),)
        self.update_trial(
            uid,
            TrialUpdate(
                status=final,
                errors=errors,
                chronos=chrono,
                metadata={"end_time": time.time()},
            ),
        )

    def log_trial_chrono_start(
        self,
        trial: TrialRef,
        name: str,
        aggregator: Callable[[], Aggregator] = CHRONO_AGGREGATOR,
        start_callback: Callable[[], Any] | None = None,
        end_callback: Callable[[], Any] | None = None,
    ) -> None:
        """Start the timer ``name`` for the trial (timing happens in this process)."""
        uid = trial_uid(trial)
        spec = aggregator().spec()
        ChronoObservation(name, 0.0, spec)  # checks the name now, not at finish
        if start_callback is not None:
            start_callback()
        self._chrono_starts[(uid, name)] = (time.perf_counter(), spec, end_callback)

    def log_trial_chrono_finish(
        self, trial: TrialRef, name: str, exc_type: Any, exc_val: Any, exc_tb: Any
    ) -> None:
        """Stop the timer ``name`` and add the elapsed seconds to its aggregate.

        Raises:
            NotFoundError: when the timer was not started.
        """
        uid = trial_uid(trial)
        observations = self._chrono_stop(uid, name)
        if not observations:
            raise NotFoundError(f"Timer {name!r} of trial {uid} was not started (log_trial_chrono_start).")
        self.update_trial(uid, TrialUpdate(chronos=observations))

    def _chrono_stop(self, uid: str, name: str) -> tuple[ChronoObservation, ...]:
        started = self._chrono_starts.pop((uid, name), None)
        if started is None:
            return ()
        t0, spec, end_callback = started
        if end_callback is not None:
            end_callback()  # e.g. a CUDA synchronize, before the clock stops
        return (ChronoObservation(name, time.perf_counter() - t0, spec),)


#: Names of the storage primitives: the only methods a server calls on a backend. ``find_trial_summaries`` and
#: ``insert_trials`` have correct defaults (full reads; one insert at a time), so they are not abstract.
PRIMITIVES: frozenset[str] = frozenset(Protocol.__abstractmethods__) | {
    "find_trial_summaries",
    "insert_trials",
}
