"""The in-memory database behind the ephemeral, file and pickled backends.

It holds mutable records (so appending a metric point is O(1)) and hands out frozen snapshots. It does no
locking and no I/O: the backends wrap it with their own. Every operation is a method taking and returning
plain data or model objects, and the ``apply`` method replays the journal records the file backend writes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

from unitrack.errors import NotFoundError, SchemaError, UnitrackError
from unitrack.persistence.aggregators import aggregator_from_json
from unitrack.persistence.query import Query, compile_query
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest, downsample
from unitrack.persistence.structure import (
    MAX_METRIC_INT,
    GroupUpdate,
    Metric,
    Project,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_metric_name,
)

__all__ = ["Database", "Rejected"]

logger = logging.getLogger(__name__)

#: What reading a record or an entry can raise when its data is not acceptable (a SchemaError from the model's
#: checks, or a malformed shape met by the decoders).
_UNREADABLE = (UnitrackError, TypeError, ValueError, KeyError, AttributeError, IndexError)


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A record or entry a reader could not accept: where it was, why, and the record itself (kept, so a file
    rewritten afterwards still holds it for a person to look at)."""

    source: str
    position: str
    reason: str
    record: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "position": self.position,
            "reason": self.reason,
            "record": self.record,
        }

    @classmethod
    def from_json(cls, data: Any) -> Rejected:
        if not isinstance(data, dict):
            return cls("", "", "unreadable rejected entry", data)
        return cls(
            str(data.get("source", "")),
            str(data.get("position", "")),
            str(data.get("reason", "")),
            data.get("record"),
        )

    def report(self) -> None:
        """Log the rejection as a warning naming the file, the position and the reason."""
        logger.warning(
            "%s: skipped the record at %s: %s (kept aside, not applied)",
            self.source,
            self.position,
            self.reason,
        )


def _plain_copy(value: Any) -> Any:
    """Deep copy of plain data (dicts, lists, scalars): faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_copy(v) for v in value]
    return value


class _MetricRecord:
    __slots__ = ("index", "latest", "logged", "steps", "values")

    def __init__(self) -> None:
        self.steps: list[Any] = []
        self.values: list[Any] = []
        self.index: dict[Any, int] = {}
        self.latest: Any = None
        self.logged = 0  # points ever added, replaced ones included (Metric.logged)

    def add(self, step: Any, value: Any) -> None:
        self.logged += 1
        if step is not None:
            at = self.index.get(step)
            if at is not None:
                self.values[at] = value
                self.latest = value
                return
            self.index[step] = len(self.values)
        self.steps.append(step)
        self.values.append(value)
        self.latest = value

    def snapshot(self, name: str) -> Metric:
        return Metric(name, tuple(self.steps), tuple(self.values), self.latest, self.logged)

    def summary(self, name: str) -> Metric:
        """The latest value and the count of points logged, no points."""
        return Metric(name, (), (), self.latest, self.logged)

    @classmethod
    def from_metric(cls, metric: Metric) -> _MetricRecord:
        rec = cls()
        for step, value in metric:
            rec.add(step, value)
        rec.latest = metric.latest
        if metric.logged is not None and metric.logged > rec.logged:
            rec.logged = metric.logged
        return rec


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    return kind is int and -MAX_METRIC_INT <= value <= MAX_METRIC_INT


def _apply_points(rec: _TrialRecord, points: list[Any]) -> bool:
    """Apply ``[name, step, value]`` points read from a journal when every one is well-formed (as
    :class:`MetricPoint` would check it); False, changing nothing, when one is not (the caller then takes the
    general path, which reports it)."""
    for point in points:
        if (
            type(point) is not list
            or len(point) != 3
            or type(point[0]) is not str
            or not _is_number(point[2])
        ):
            return False
        step = point[1]
        if step is not None and not (_is_number(step) and (type(step) is int or math.isfinite(step))):
            return False
        try:
            check_metric_name(point[0])
        except SchemaError:
            return False
    metrics = rec.metrics
    for name, step, value in points:
        metric = metrics.get(name)
        if metric is None:
            metric = metrics[name] = _MetricRecord()
        metric.add(step, value)
    return True


class _TrialRecord:
    __slots__ = (
        "chronos",
        "description",
        "errors",
        "group_id",
        "hash",
        "metadata",
        "metrics",
        "name",
        "parameters",
        "project_id",
        "revision",
        "status",
        "tags",
        "version",
        "writers",
    )

    def __init__(self, trial: Trial) -> None:
        self.hash = trial.hash
        self.revision = trial.revision
        self.name = trial.name
        self.description = trial.description
        self.version = trial.version
        self.group_id = trial.group_id
        self.project_id = trial.project_id
        self.tags: dict[str, Any] = _plain_copy(dict(trial.tags))
        self.parameters: dict[str, Any] = _plain_copy(dict(trial.parameters))
        self.metadata: dict[str, Any] = _plain_copy(dict(trial.metadata))
        self.metrics: dict[str, _MetricRecord] = {
            k: _MetricRecord.from_metric(m) for k, m in trial.metrics.items()
        }
        self.chronos: dict[str, Any] = _plain_copy(dict(trial.chronos))
        self.status = trial.status
        self.errors: list[str] = list(trial.errors)
        self.writers: dict[str, int] = {}

    @property
    def uid(self) -> str:
        return f"{self.hash}_{self.revision}"

    def snapshot(self) -> Trial:
        return self._trial({k: m.snapshot(k) for k, m in self.metrics.items()})

    def summary(self) -> Trial:
        """The snapshot with each metric's latest value only (no points copied)."""
        return self._trial({k: m.summary(k) for k, m in self.metrics.items()})

    def _trial(self, metrics: dict[str, Metric]) -> Trial:
        return Trial(
            _hash=self.hash,
            revision=self.revision,
            name=self.name,
            description=self.description,
            tags=_plain_copy(self.tags),
            version=self.version,
            group_id=self.group_id,
            project_id=self.project_id,
            parameters=self.parameters,  # Trial checks and copies parameters
            metadata=_plain_copy(self.metadata),
            metrics=metrics,
            chronos=_plain_copy(self.chronos),
            status=self.status,
            errors=tuple(self.errors),
        )

    def apply(self, update: TrialUpdate, with_metrics: bool = True) -> bool:
        """Apply an update; False when it is a replayed (writer, seq) batch and was skipped.

        ``with_metrics=False`` leaves the metric points out (a backend that keeps them elsewhere).
        """
        if update.writer is not None and update.seq is not None:
            if update.seq <= self.writers.get(update.writer, -1):
                return False
            self.writers[update.writer] = update.seq
        if update.parameters:
            self.parameters.update(_plain_copy(dict(update.parameters)))
        if update.metadata:
            self.metadata.update(_plain_copy(dict(update.metadata)))
        if update.tags:
            self.tags.update(_plain_copy(dict(update.tags)))
        metrics = self.metrics
        for point in update.metrics if with_metrics else ():
            rec = metrics.get(point.name)
            if rec is None:
                rec = metrics[point.name] = _MetricRecord()
            rec.add(point.step, point.value)
        for obs in update.chronos:
            state = self.chronos.get(obs.name)
            agg = aggregator_from_json(
                dict(state) if isinstance(state, dict) and "kind" in state else dict(obs.aggregator)
            )
            agg.append(obs.seconds)
            self.chronos[obs.name] = agg.to_json()
        if update.status is not None:
            self.status = update.status
        if update.errors:
            self.errors.extend(update.errors)
        if update.project_id is not None:
            self.project_id = update.project_id
        if update.group_id is not None:
            self.group_id = update.group_id
        if update.description is not None:
            self.description = update.description
        return True

    def to_json(self) -> dict[str, Any]:
        data = to_json(self.snapshot())
        data["writers"] = dict(self.writers)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _TrialRecord:
        trial = from_json(data)
        if not isinstance(trial, Trial):
            raise SchemaError(f"expected a trial, found dtype {data.get('dtype')!r}")
        rec = cls(trial)
        writers = data.get("writers") or {}
        rec.writers = {str(k): int(v) for k, v in writers.items()}
        return rec


class _GroupRecord:
    __slots__ = ("description", "metadata", "name", "project_id", "uid")

    def __init__(self, group: TrialGroup) -> None:
        self.uid = group.uid
        self.name = group.name
        self.description = group.description
        self.project_id = group.project_id
        self.metadata: dict[str, Any] = _plain_copy(dict(group.metadata))

    def snapshot(self, trials: frozenset[str]) -> TrialGroup:
        return TrialGroup(
            _uid=self.uid,
            name=self.name,
            description=self.description,
            metadata=_plain_copy(self.metadata),
            trials=trials,
            project_id=self.project_id,
        )


class Database:
    """Projects, groups and trials in memory, with the semantics of the Protocol's primitives."""

    def __init__(self, strict: bool = True) -> None:
        #: Whether inserts check that the project and group they name exist.
        self.strict = strict
        self.projects: dict[str, Project] = {}
        self.groups: dict[str, _GroupRecord] = {}
        self.trials: dict[str, _TrialRecord] = {}
        self._revisions: dict[str, int] = {}  # hash -> highest revision stored
        #: Records and entries a reader met but could not accept (issue #12 item 8): reported once when met,
        #: written back by :meth:`to_json` so rewriting the file never destroys them.
        self.rejected: list[Rejected] = []

    # ---------------------------------------------------------------------------------------- reads
    def _group_trials(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for uid, rec in self.trials.items():
            if rec.group_id is not None:
                out.setdefault(rec.group_id, set()).add(uid)
        return out

    def find_projects(self, query: Query) -> list[Project]:
        match = compile_query(query)
        groups: dict[str, set[str]] = {}
        trials: dict[str, set[str]] = {}
        for g in self.groups.values():
            if g.project_id is not None:
                groups.setdefault(g.project_id, set()).add(g.uid)
        for uid, rec in self.trials.items():
            if rec.project_id is not None:
                trials.setdefault(rec.project_id, set()).add(uid)
        out = []
        for p in self.projects.values():
            full = Project(
                _uid=p.uid,
                name=p.name,
                description=p.description,
                metadata=_plain_copy(dict(p.metadata)),
                groups=frozenset(groups.get(p.uid, ())),
                trials=frozenset(trials.get(p.uid, ())),
            )
            if match(full):
                out.append(full)
        return out

    def find_groups(self, query: Query) -> list[TrialGroup]:
        match = compile_query(query)
        members = self._group_trials()
        out = []
        for g in self.groups.values():
            snap = g.snapshot(frozenset(members.get(g.uid, ())))
            if match(snap):
                out.append(snap)
        return out

    def iter_trials(self, query: Query) -> Iterator[_TrialRecord]:
        match = compile_query(query)
        for rec in self.trials.values():
            # Matching runs on the snapshot, so every field a query may name is there.
            if match(_QueryView(rec)):
                yield rec

    def find_trials(self, query: Query) -> list[Trial]:
        return [rec.snapshot() for rec in self.iter_trials(query)]

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        return [rec.summary() for rec in self.iter_trials(query)]

    # --------------------------------------------------------------------------------------- writes
    def insert_project(self, project: Project) -> Project | None:
        if project.uid in self.projects:
            return None
        self.projects[project.uid] = Project(
            _uid=project.uid, name=project.name, description=project.description, metadata=project.metadata
        )
        return self.find_projects({"uid": project.uid})[0]

    def check_group(self, group: TrialGroup) -> None:
        """Raise NotFoundError when strict and the group's project is missing."""
        if self.strict and group.project_id is not None and group.project_id not in self.projects:
            raise NotFoundError(
                f"Project {group.project_id!r} of group {group.name!r} does not exist; create it first (new_project)."
            )

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        if group.uid in self.groups:
            return None
        self.check_group(group)
        self.groups[group.uid] = _GroupRecord(group)
        return self.groups[group.uid].snapshot(frozenset())

    def prepare_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        """Return the trial as it would be stored (next revision when auto-incrementing), or None.

        Raises:
            NotFoundError: when strict and the trial's project or group is missing.
        """
        if self.strict:
            if trial.project_id is not None and trial.project_id not in self.projects:
                raise NotFoundError(
                    f"Project {trial.project_id!r} of trial {trial.name!r} does not exist; create it first."
                )
            if trial.group_id is not None and trial.group_id not in self.groups:
                raise NotFoundError(
                    f"Group {trial.group_id!r} of trial {trial.name!r} does not exist; create it first."
                )
        if trial.uid not in self.trials:
            return trial
        if not auto_increment:
            return None
        return dataclasses.replace(trial, revision=self._revisions.get(trial.hash, trial.revision) + 1)

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        stored = self.prepare_trial(trial, auto_increment)
        if stored is None:
            return None
        self._add_trial(_TrialRecord(stored))
        return self.trials[stored.uid].snapshot()

    def _add_trial(self, rec: _TrialRecord) -> None:
        self.trials[rec.uid] = rec
        self._revisions[rec.hash] = max(self._revisions.get(rec.hash, -1), rec.revision)

    def trial(self, uid: str) -> _TrialRecord:
        rec = self.trials.get(uid)
        if rec is None:
            raise NotFoundError(f"No trial with uid {uid!r}; create it with new_trial first.")
        return rec

    def group(self, uid: str) -> _GroupRecord:
        rec = self.groups.get(uid)
        if rec is None:
            raise NotFoundError(f"No group with uid {uid!r}; create it with new_trial_group first.")
        return rec

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        self.trial(uid).apply(update)

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        self.group(uid).metadata.update(_plain_copy(dict(update.metadata)))

    def find_series(self, request: SeriesRequest) -> list[Series]:
        """The series a request names, read from the records (no trial is copied)."""
        out = []
        for uid in request.uids:
            rec = self.trials.get(uid)
            if rec is None:
                continue
            for name in request.metrics:
                metric = rec.metrics.get(name)
                if metric is not None and metric.values:
                    steps, values, _, total = downsample(metric.steps, metric.values, None, request)
                    if total:  # no point in the step range: no series, as in every backend
                        out.append(Series(uid, name, tuple(steps), tuple(values), None, total))
        return out

    def first_trial(self, query: Query) -> _TrialRecord | None:
        return next(self.iter_trials(query), None)

    def first_group(self, query: Query) -> _GroupRecord | None:
        match = compile_query(query)
        members = self._group_trials()
        for g in self.groups.values():
            if match(g.snapshot(frozenset(members.get(g.uid, ())))):
                return g
        return None

    # ---------------------------------------------------------------------------- journal records
    def apply(self, record: Any) -> str | None:
        """Replay one journal record (written by the file backend) onto this database.

        Returns None when applied, else why it could not be (an unknown operation, a malformed record, an
        update to a trial or group this database does not hold): the caller reports it and keeps it aside, so a
        record is never dropped silently.
        """
        if not isinstance(record, dict):
            return f"expected a JSON object, found {type(record).__name__}"
        op = record.get("op")
        try:
            if op == "update_trial":
                raw = record["update"]
                if type(raw) is dict and len(raw) == 2 and type(raw.get("metrics")) is list:
                    rec = self.trials.get(record["uid"])
                    if rec is not None and _apply_points(rec, raw["metrics"]):
                        return None  # the per-step record: checked and applied without building objects
                update = from_json(raw)
                if not isinstance(update, TrialUpdate):
                    return f"expected a trial_update, found {type(update).__name__}"
                rec = self.trials.get(record["uid"])
                if rec is None:
                    return f"update of trial {record['uid']!r}, which this database does not hold"
                rec.apply(update)
            elif op == "insert_trial":
                self._add_trial(_TrialRecord.from_json(record["trial"]))
            elif op == "insert_project":
                project = from_json(record["project"])
                if not isinstance(project, Project):
                    return f"expected a project, found {type(project).__name__}"
                self.projects.setdefault(project.uid, project)
            elif op == "insert_group":
                group = from_json(record["group"])
                if not isinstance(group, TrialGroup):
                    return f"expected a trial_group, found {type(group).__name__}"
                self.groups.setdefault(group.uid, _GroupRecord(group))
            elif op == "update_group":
                rec_g = self.groups.get(record["uid"])
                if rec_g is None:
                    return f"update of group {record['uid']!r}, which this database does not hold"
                update_g = GroupUpdate(metadata=record["metadata"])
                rec_g.metadata.update(_plain_copy(dict(update_g.metadata)))
            else:
                return f"unknown journal operation {op!r}"
        except _UNREADABLE as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    # ----------------------------------------------------------------------------------- whole file
    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": "unitrack.db/1",
            "projects": [to_json(p) for p in self.projects.values()],
            "groups": [{**to_json(g.snapshot(frozenset())), "trials": []} for g in self.groups.values()],
            "trials": [rec.to_json() for rec in self.trials.values()],
        }
        if self.rejected:
            data["rejected"] = [r.to_json() for r in self.rejected]
        return data

    def reject(self, source: str, position: str, reason: str, record: Any) -> None:
        """Report a record that cannot be accepted (file, position, reason) and keep it in :attr:`rejected`."""
        rejected = Rejected(source, position, reason, record)
        rejected.report()
        self.rejected.append(rejected)

    @classmethod
    def from_json(
        cls, data: Any, strict: bool = True, *, source: str = "", verified: bool = False
    ) -> Database:
        """Load our own format, or track's (a list of projects with nested groups and trials).

        ``verified`` says the caller checked the format already (sealed files carry it in their seal). An
        entry that cannot be accepted is reported (``source``, its position, the reason) and kept aside in
        :attr:`rejected`; the others load.

        Raises:
            SchemaError: when ``data`` is not a database at all.
        """
        db = cls(strict)
        if isinstance(data, list):
            db._load_track(data, source)
            return db
        if not isinstance(data, dict) or (not verified and data.get("format") != "unitrack.db/1"):
            raise SchemaError("not a unitrack database (missing 'format': 'unitrack.db/1')")
        for key in ("projects", "groups", "trials", "rejected"):
            if not isinstance(data.get(key, []), list):
                raise SchemaError(f"not a unitrack database ({key!r} is not a list)")
        for i, p in enumerate(data.get("projects", [])):
            try:
                project = from_json(p)
                if not isinstance(project, Project):
                    raise SchemaError(f"expected a project, found {type(project).__name__}")
            except _UNREADABLE as exc:
                db.reject(source, f"projects[{i}]", str(exc), p)
                continue
            db.projects[project.uid] = project
        for i, g in enumerate(data.get("groups", [])):
            try:
                group = from_json(g)
                if not isinstance(group, TrialGroup):
                    raise SchemaError(f"expected a trial_group, found {type(group).__name__}")
            except _UNREADABLE as exc:
                db.reject(source, f"groups[{i}]", str(exc), g)
                continue
            db.groups[group.uid] = _GroupRecord(group)
        for i, t in enumerate(data.get("trials", [])):
            try:
                db._add_trial(_TrialRecord.from_json(t))
            except _UNREADABLE as exc:
                db.reject(source, f"trials[{i}]", str(exc), t)
        db.rejected.extend(Rejected.from_json(r) for r in data.get("rejected", []))
        return db

    def _load_track(self, projects: list[Any], source: str) -> None:
        for i, p in enumerate(projects):
            if not isinstance(p, dict):
                raise SchemaError("track database entries must be objects")
            try:
                project = Project(
                    _uid=p.get("uid") or p.get("name"),
                    name=p.get("name"),
                    description=p.get("description"),
                    metadata=p.get("metadata") or {},
                )
            except _UNREADABLE as exc:
                self.reject(source, f"[{i}]", str(exc), p)
                continue
            self.projects[project.uid] = project
            for j, g in enumerate(p.get("groups", []) or []):
                try:
                    group = from_json({**g, "dtype": "trial_group"})
                    if not isinstance(group, TrialGroup):
                        raise SchemaError("not a trial group")
                except _UNREADABLE as exc:
                    self.reject(source, f"[{i}].groups[{j}]", str(exc), g)
                    continue
                self.groups[group.uid] = _GroupRecord(group)
            for j, t in enumerate(p.get("trials", []) or []):
                try:
                    data = {
                        **t,
                        "dtype": "trial",
                        "metrics": {k: v for k, v in (t.get("metrics") or {}).items()},
                    }
                    self._add_trial(_TrialRecord.from_json(data))
                except _UNREADABLE as exc:
                    self.reject(source, f"[{i}].trials[{j}]", str(exc), t)


class _QueryView:
    """What a query sees of a trial record, without building a full snapshot (no metric copies)."""

    __slots__ = ("_rec",)

    def __init__(self, rec: _TrialRecord) -> None:
        self._rec = rec

    def __getattr__(self, name: str) -> Any:
        rec = self._rec
        if name == "uid":
            return rec.uid
        if name == "metrics":
            return {k: m.summary(k) for k, m in rec.metrics.items()}
        if name in _TrialRecord.__slots__ and name != "writers":
            return getattr(rec, name)
        raise AttributeError(name)

    #: Field names shown when a query names an unknown one.
    query_fields = tuple(sorted(set(_TrialRecord.__slots__) - {"writers"}))
