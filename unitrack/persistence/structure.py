"""The one data model every backend stores: Project → TrialGroup → Trial (track's names).

The objects are frozen dataclasses: a backend hands out snapshots, never its own storage, so a caller cannot
change stored data by mutating what it read. Changes travel as :class:`TrialUpdate` / :class:`GroupUpdate`
values through a :class:`~unitrack.persistence.protocol.Protocol`.

Example:
    >>> t = Trial(name="lr-sweep", parameters={"lr": 0.1, "layers": [64, 64]})
    >>> t.uid == f"{t.hash}_0"
    True
    >>> Trial(name="lr-sweep", parameters={"lr": True}).hash == Trial(name="lr-sweep", parameters={"lr": 1}).hash
    False
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from unitrack.errors import InvalidNameError, SchemaError

__all__ = [
    "ChronoObservation",
    "CustomStatus",
    "GroupUpdate",
    "MAX_METRIC_INT",
    "Metric",
    "MetricPoint",
    "Project",
    "Status",
    "StatusLike",
    "Trial",
    "TrialGroup",
    "TrialUpdate",
    "check_metric_name",
    "check_name",
    "check_number",
    "check_plain",
    "check_step",
    "compute_hash",
    "status",
]

#: Longest name accepted for projects, groups, trials and metrics (a file name limit on most systems).
MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------------------------------------------- status
class Status(enum.Enum):
    """Lifecycle of a trial, with track's names and values (hundreds are groups)."""

    CreatedGroup = 0
    RunningGroup = 100
    Running = 101
    ErrorGroup = 200
    Interrupted = 201
    Exception = 202
    Broken = 203
    FinishedGroup = 300
    Suspended = 301
    Completed = 302

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def is_finished(self) -> bool:
        """True for the finished and error groups (the trial will not log more)."""
        return self.value >= 200


@dataclass(frozen=True)
class CustomStatus:
    """A status outside track's enum, such as xmen's ``registered``.

    Equal to another CustomStatus with the same name and value, to its name as a string, and to a dict
    ``{'name': ..., 'value': ...}``.
    """

    name: str
    value: int

    def __str__(self) -> str:
        return self.name.lower()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CustomStatus):
            return self.name == other.name and self.value == other.value
        if isinstance(other, str):
            return self.name.lower() == other.lower()
        if isinstance(other, Mapping):
            return bool(self.name == other.get("name") and self.value == other.get("value"))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.name, self.value))

    @property
    def is_finished(self) -> bool:
        """True when the value lies in track's finished or error groups."""
        return self.value >= 200


StatusLike = Status | CustomStatus


def status(name: str | None = None, value: int | None = None) -> StatusLike:
    """Return the :class:`Status` with this name or value, else a :class:`CustomStatus`.

    Example:
        >>> status("running"), status(value=302), status("registered", 1)
        (<Status.Running: 101>, <Status.Completed: 302>, CustomStatus(name='registered', value=1))
    """
    if name is not None:
        for member in Status:
            if member.name.lower() == name.lower():
                return member
    if value is not None:
        for member in Status:
            if member.value == value:
                return member
    if name is None:
        raise SchemaError(
            f"Unknown status value {value!r} and no name given; pass name= for a custom status."
        )
    if not isinstance(name, str) or not name or _CONTROL.search(name):
        raise SchemaError(f"Invalid status name {name!r}: use a non-empty printable string.")
    return CustomStatus(name, int(value if value is not None else -1))


def status_to_json(s: StatusLike) -> dict[str, Any]:
    """Encode a status as ``{'name': ..., 'value': ...}`` (track's JSON form)."""
    return {"name": s.name, "value": s.value}


def status_from_json(data: Any) -> StatusLike:
    """Decode a status from its JSON form, a name or a value."""
    if isinstance(data, Mapping):
        return status(data.get("name"), data.get("value"))
    if isinstance(data, str):
        return status(data)
    if isinstance(data, int) and not isinstance(data, bool):
        return status(value=data)
    raise SchemaError(f"Cannot read a status from {data!r}; expected {{'name': str, 'value': int}}.")


# ------------------------------------------------------------------------------------------------ checks
def check_name(what: str, name: object, *, allow_slash: bool = False) -> str:
    """Check a project, group, trial or metric name and return it.

    Names become folder names in file backends, so they may not escape a folder: no ``/`` or ``\\``
    (unless ``allow_slash``, for metric names such as ``train/loss``), no ``.`` or ``..``, no NUL or other
    control characters, not empty, at most 255 characters; a trial name does not start with ``.`` (a hidden
    folder).

    Raises:
        InvalidNameError: naming the value and what is wrong with it.
    """
    if not isinstance(name, str):
        raise InvalidNameError(what, name, f"must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError(what, name, "must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidNameError(what, name, f"is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    if "\x00" in name:
        raise InvalidNameError(what, name, "contains a NUL character")
    if _CONTROL.search(name):
        raise InvalidNameError(what, name, "contains a control character")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidNameError(what, name, "is not valid Unicode (it holds a lone surrogate)") from None
    if not allow_slash and ("/" in name or "\\" in name):
        raise InvalidNameError(what, name, "contains a path separator")
    if name in (".", "..") or (not allow_slash and name.strip() in (".", "..")):
        raise InvalidNameError(what, name, "is a relative folder reference")
    if allow_slash and any(part == ".." for part in re.split(r"[/\\]", name)):
        raise InvalidNameError(what, name, "contains a '..' component")
    if what == "trial" and name.startswith("."):
        # A trial is a folder in file backends: a hidden one is skipped by every listing, and '.unitrack' is the
        # hdf5 backend's own index folder (#12 item 12). Refused on every backend, so all store the same names.
        raise InvalidNameError(
            what, name, "starts with '.' (a hidden folder; '.unitrack' holds the backend's index)"
        )
    return name


def _to_plain_scalar(value: Any) -> Any:
    """Turn numpy/torch 0-d values into Python scalars; leave everything else alone."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0 and callable(item):
        return item()
    return value


_PLAIN_SCALARS = frozenset({type(None), bool, int, float, str})


def check_plain(where: str, value: Any, _depth: int = 0) -> Any:
    """Return ``value`` as plain JSON-able data (None, bool, int, float, str, list, dict with str keys).

    numpy and torch 0-d scalars become Python scalars and tuples become lists. Anything else raises, because
    every backend (JSON files, HDF5, SQL, the wire) must store exactly what it was given.

    Raises:
        SchemaError: naming where the value sits and its type.
    """
    if _depth > 64:
        raise SchemaError(f"{where} is nested more than 64 levels deep; flatten it.")
    if type(value) in _PLAIN_SCALARS:
        return value
    if type(value) is not dict:
        value = _to_plain_scalar(value)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [check_plain(f"{where}[{i}]", v, _depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, v in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise SchemaError(
                    f"{where} has a key {key!r} of type {type(key).__name__}; keys must be str."
                )
            # Exact scalar types need no conversion (and no path text): the common case, checked first.
            out[key] = v if type(v) in _PLAIN_SCALARS else check_plain(f"{where}.{key}", v, _depth + 1)
        return out
    raise SchemaError(
        f"{where} = {value!r} has type {type(value).__name__}; store None, bool, int, float, str, "
        "or lists/dicts of them (convert it, e.g. str(path))."
    )


def check_mapping(where: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key (non-empty, printable) and value of a parameters/metadata/tags mapping."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key or "\x00" in key:
            raise SchemaError(f"{where} key {key!r} is invalid; keys are non-empty str without NUL.")
        out[key] = value if type(value) in _PLAIN_SCALARS else check_plain(f"{where}.{key}", value)
    return out


# -------------------------------------------------------------------------------------------------- hash
def _canonical(value: Any) -> Any:
    """Type-tagged canonical form: bools, ints, floats and strings never collide."""
    if value is None:
        return ["n"]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", "nan" if math.isnan(value) else repr(value)]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, (list, tuple)):
        return ["l", [_canonical(v) for v in value]]
    if isinstance(value, Mapping):
        return ["d", [[str(k), _canonical(value[k])] for k in sorted(value, key=str)]]
    raise SchemaError(f"Cannot hash a value of type {type(value).__name__}: {value!r}")


def compute_hash(name: str | None, version: str | None, parameters: Mapping[str, Any]) -> str:
    """Return the sha256 hex digest identifying a trial's (name, version, parameters).

    Nested dicts and lists, negative and large ints, and bools versus ints all hash distinctly (track's hash
    ignored dict values and made ``True == 1 == '\\x01'``).

    Example:
        >>> compute_hash("a", None, {"opt": {"lr": 0.1}}) != compute_hash("a", None, {"opt": {"lr": 0.2}})
        True
    """
    payload = json.dumps(
        [_canonical(name), _canonical(version), _canonical(dict(parameters))],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- metrics
Number = int | float
Step = int | float | None


#: The largest int a float64 holds (rounded): bigger metric values cannot be stored by every backend.
MAX_METRIC_INT = int(sys.float_info.max)


def check_number(where: str, value: Any) -> Number:
    """Return a metric value as int or float (bools and 0-d arrays/tensors converted)."""
    value = _to_plain_scalar(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_METRIC_INT:
            raise SchemaError(
                f"{where} = {value} is beyond the float64 range metrics are stored in (about 1.8e308)."
            )
        return value
    raise SchemaError(
        f"{where} = {value!r} has type {type(value).__name__}; metric values are numbers. "
        "Log text with log_trial_metadata instead."
    )


def check_step(value: Any) -> Step:
    """Return a step as int, float or None."""
    value = _to_plain_scalar(value)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f"step = {value!r} is not finite; steps are finite numbers or None.")
        if isinstance(value, int) and abs(value) > MAX_METRIC_INT:
            raise SchemaError(
                f"step = {value} is beyond the float64 range steps are stored in (about 1.8e308)."
            )
        return value
    raise SchemaError(f"step = {value!r} has type {type(value).__name__}; steps are int, float or None.")


@lru_cache(maxsize=4096)
def _check_metric_name(name: str) -> str:
    return check_name("metric", name, allow_slash=True)


def check_metric_name(name: object) -> str:
    """Check a metric name (``/`` allowed, as in ``train/loss``); names repeat every step, so str names are
    checked once and remembered.

    Raises:
        InvalidNameError: naming the value.
    """
    if type(name) is str:
        return _check_metric_name(name)
    return check_name("metric", name, allow_slash=True)


@dataclass(frozen=True)
class MetricPoint:
    """One logged value: metric ``name`` at ``step`` (None when logged without a step)."""

    name: str
    step: Step
    value: Number

    @classmethod
    def checked(cls, name: str, step: Step, value: Any) -> MetricPoint:
        """Build a point from a step already checked by :func:`check_step` (the per-call fast path)."""
        check_metric_name(name)
        point = object.__new__(cls)
        object.__setattr__(point, "name", name)
        object.__setattr__(point, "step", step)
        object.__setattr__(point, "value", check_number(f"metric {name!r}", value))
        return point

    def __post_init__(self) -> None:
        if type(self.name) is str:
            _check_metric_name(self.name)  # names repeat every step: check each once
        else:
            check_name("metric", self.name, allow_slash=True)
        object.__setattr__(self, "step", check_step(self.step))
        object.__setattr__(self, "value", check_number(f"metric {self.name!r}", self.value))


@dataclass(frozen=True)
class Metric:
    """A named series of ``(step, value)`` points in the order they were first logged, and the latest value.

    A point logged again at a step that already has a value replaces it (a resumed run re-logging steps
    keeps one clean series); points without a step always append.

    ``logged`` counts the points ever logged to the series, including those that replaced a point at their
    step, so it grows with every change: a summary (``find_trial_summaries``, which carries no points) tells a
    changed series from an unchanged one by it, even when the latest value stayed the same. None when the
    backend does not know; not part of equality.
    """

    name: str
    steps: tuple[Step, ...] = ()
    values: tuple[Number, ...] = ()
    latest: Number | None = None
    logged: int | None = field(default=None, compare=False)

    def __iter__(self) -> Iterator[tuple[Step, Number]]:
        return iter(zip(self.steps, self.values, strict=True))

    def __len__(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[Step, Number]:
        """Return ``{step: value}`` for the points that have a step (track's form)."""
        return {s: v for s, v in zip(self.steps, self.values, strict=True) if s is not None}

    def __repr__(self) -> str:
        """Short: the name, the number of points, the step range and the latest value (never every point).

        Example:
            >>> Metric("loss", steps=(1, 2, 3), values=(0.9, 0.5, 0.25), latest=0.25)
            Metric('loss', 3 points, steps 1..3, latest=0.25)
        """
        n = len(self.values)
        text = f"Metric({self.name!r}, {_count(n, 'point')}"
        steps = [s for s in self.steps if s is not None]
        if steps:
            text += f", steps {min(steps)}..{max(steps)}"
        return f"{text}, latest={self.latest!r})"


@dataclass(frozen=True)
class ChronoObservation:
    """One timed duration in seconds for the chrono ``name``; ``aggregator`` describes how to accumulate."""

    name: str
    seconds: float
    aggregator: Mapping[str, Any] = field(default_factory=lambda: {"kind": "stat", "skip_obs": 1})

    def __post_init__(self) -> None:
        check_name("chrono", self.name, allow_slash=True)
        object.__setattr__(self, "seconds", float(check_number(f"chrono {self.name!r}", self.seconds)))


# ----------------------------------------------------------------------------------------------- objects
@dataclass(frozen=True, eq=False)
class Trial:
    """One run: parameters, metadata, metric series, timers, status and errors.

    ``uid`` is ``f"{hash}_{revision}"``; the hash covers name, version and parameters (:func:`compute_hash`)
    and is computed when not given. Parameters merged in later (``log_trial_arguments``) do not change it.
    """

    _hash: str | None = None
    revision: int = 0
    name: str | None = None
    description: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    version: str | None = None
    group_id: str | None = None
    project_id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    chronos: Mapping[str, Any] = field(default_factory=dict)
    status: StatusLike = Status.CreatedGroup
    errors: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name("trial", self.name)
        if not isinstance(self.revision, int) or isinstance(self.revision, bool) or self.revision < 0:
            raise SchemaError(f"Trial revision {self.revision!r} must be an int >= 0.")
        if self.version is not None and not isinstance(self.version, str):
            object.__setattr__(self, "version", str(self.version))
        object.__setattr__(self, "project_id", _check_ref("Trial project_id", self.project_id))
        object.__setattr__(self, "group_id", _check_ref("Trial group_id", self.group_id))
        _check_description("Trial", self.description)
        object.__setattr__(self, "parameters", check_mapping("parameters", self.parameters))
        if self._hash is None:
            object.__setattr__(self, "_hash", compute_hash(self.name, self.version, self.parameters))
        elif not isinstance(self._hash, str) or not re.fullmatch(r"[A-Za-z0-9]{1,128}", self._hash):
            raise SchemaError(f"Trial hash {self._hash!r} must be 1-128 letters or digits.")

    @property
    def hash(self) -> str:
        """The hash of (name, version, parameters)."""
        assert self._hash is not None  # set in __post_init__
        return self._hash

    @property
    def uid(self) -> str:
        """``f"{hash}_{revision}"``: unique among the trials of a backend."""
        return f"{self.hash}_{self.revision}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trial) and other.uid == self.uid

    def __repr__(self) -> str:
        """Short and informative, for notebooks and logs: name, uid prefix, status, counts.

        Example:
            >>> t = Trial(name="resnet", parameters={"lr": 0.1, "depth": 50})
            >>> repr(t)  # doctest: +ELLIPSIS
            "Trial('resnet', uid=...…_0, registered, 2 parameters, 0 metrics)"
        """
        points = sum(len(m) for m in self.metrics.values())
        metrics = _count(len(self.metrics), "metric")
        if points:
            metrics += f" / {_count(points, 'point')}"
        errors = f", {_count(len(self.errors), 'error')}" if self.errors else ""
        return (
            f"Trial({self.name!r}, uid={self.hash[:8]}…_{self.revision}, {_status_text(self.status)}, "
            f"{_count(len(self.parameters), 'parameter')}, {metrics}{errors})"
        )

    def __hash__(self) -> int:
        return hash(self.uid)


def split_uid(uid: str) -> tuple[str, int]:
    """Split a trial uid into ``(hash, revision)``."""
    head, sep, tail = uid.rpartition("_")
    if not sep or not head or not tail.isdigit():
        raise SchemaError(f"Invalid trial uid {uid!r}; expected '<hash>_<revision>'.")
    return head, int(tail)


@dataclass(frozen=True, eq=False)
class TrialGroup:
    """A set of trials (a sweep). ``uid`` is the hash of (name, project_id); ``trials`` holds trial uids."""

    _uid: str | None = None
    name: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    trials: frozenset[str] = frozenset()
    project_id: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name("group", self.name)
        object.__setattr__(self, "metadata", check_mapping("group metadata", self.metadata))
        object.__setattr__(self, "trials", frozenset(self.trials))
        object.__setattr__(self, "project_id", _check_ref("TrialGroup project_id", self.project_id))
        if self._uid is None:
            if self.name is None or self.project_id is None:
                raise SchemaError("A TrialGroup needs a name and a project_id (its uid is their hash).")
            object.__setattr__(self, "_uid", compute_hash(self.name, None, {"project_id": self.project_id}))

    @property
    def uid(self) -> str:
        """The hash of (name, project_id)."""
        assert self._uid is not None  # set in __post_init__
        return self._uid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrialGroup) and other.uid == self.uid

    def __repr__(self) -> str:
        """Short: name, uid prefix, project and the number of trials (never every trial uid)."""
        return (
            f"TrialGroup({self.name!r}, uid={self.uid[:8]}…, project={self.project_id!r}, "
            f"{_count(len(self.trials), 'trial')})"
        )

    def __hash__(self) -> int:
        return hash(self.uid)


@dataclass(frozen=True, eq=False)
class Project:
    """A collection of groups and trials. ``uid`` is its name."""

    _uid: str | None = None
    name: str | None = None
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    trials: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.name is None and self._uid is not None:
            object.__setattr__(self, "name", self._uid)
        if self.name is None:
            raise SchemaError("A Project needs a name (its uid is its name).")
        check_name("project", self.name)
        object.__setattr__(self, "_uid", self.name)
        object.__setattr__(self, "metadata", check_mapping("project metadata", self.metadata))
        object.__setattr__(self, "groups", frozenset(self.groups))
        object.__setattr__(self, "trials", frozenset(self.trials))

    @property
    def uid(self) -> str:
        """The project's name."""
        assert self._uid is not None  # set in __post_init__
        return self._uid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Project) and other.uid == self.uid

    def __repr__(self) -> str:
        """Short: name and the numbers of groups and trials."""
        return f"Project({self.name!r}, {_count(len(self.groups), 'group')}, {_count(len(self.trials), 'trial')})"

    def __hash__(self) -> int:
        return hash(self.uid)


def _check_ref(what: str, value: object) -> str | None:
    """A project or group id: None or a str; an int (track's type hints allowed them) becomes its decimal text.

    Checked when the object is built, so nothing a reader could not accept ever reaches a file (issue #12
    item 8: an int ``project_id`` was written to the journal and then refused by every reader).

    Raises:
        SchemaError: for any other type.
    """
    if value is None or type(value) is str:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return str(value)
    raise SchemaError(f"{what} {value!r} has type {type(value).__name__}; pass the id as a str (or an int).")


def _count(n: int, noun: str) -> str:
    """``'1 point'``, ``'1,234 points'``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _status_text(s: StatusLike) -> str:
    """A status as the word listings show (the one vocabulary of :mod:`unitrack.persistence.lifecycle`)."""
    from unitrack.persistence.lifecycle import status_word  # lifecycle imports this module

    return status_word(s)


def _check_description(what: str, description: object) -> None:
    """A description is None or text without NUL (postgresql:// cannot store one: every backend refuses it)."""
    if description is None:
        return
    if not isinstance(description, str):
        raise SchemaError(
            f"{what} description {description!r} has type {type(description).__name__}; pass a str, or None."
        )
    if "\x00" in description:
        raise SchemaError(f"{what} description holds a NUL character; remove it.")


# ----------------------------------------------------------------------------------------------- updates
@dataclass(frozen=True)
class TrialUpdate:
    """A change to one trial, checked when built, applied atomically by a backend.

    Mappings merge key by key (later wins), metric points append (or replace the value at an existing step),
    chrono observations aggregate, errors append, and ``status``/``project_id``/``group_id``/``description``
    replace when not None (a trial's description, xmen's purpose, can change after creation).
    ``writer``/``seq`` make a batch idempotent: a backend applies a given (writer, seq) at most once per trial
    and skips any seq not above the last one it applied for that writer.
    """

    parameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[MetricPoint, ...] = ()
    chronos: tuple[ChronoObservation, ...] = ()
    status: StatusLike | None = None
    errors: tuple[str, ...] = ()
    project_id: str | None = None
    group_id: str | None = None
    description: str | None = None
    writer: str | None = None
    seq: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", check_mapping("parameters", self.parameters))
        object.__setattr__(self, "metadata", check_mapping("metadata", self.metadata))
        object.__setattr__(self, "tags", check_mapping("tags", self.tags))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "chronos", tuple(self.chronos))
        for point in self.metrics:
            if not isinstance(point, MetricPoint):
                raise SchemaError(f"TrialUpdate.metrics holds {point!r}; expected MetricPoint values.")
        for obs in self.chronos:
            if not isinstance(obs, ChronoObservation):
                raise SchemaError(f"TrialUpdate.chronos holds {obs!r}; expected ChronoObservation values.")
        errors = tuple(self.errors)
        for err in errors:
            if not isinstance(err, str):
                raise SchemaError(f"TrialUpdate.errors holds {err!r}; errors are strings.")
        object.__setattr__(self, "errors", errors)
        if self.status is not None and not isinstance(self.status, (Status, CustomStatus)):
            object.__setattr__(self, "status", status_from_json(self.status))
        _check_description("TrialUpdate", self.description)
        object.__setattr__(self, "project_id", _check_ref("TrialUpdate project_id", self.project_id))
        object.__setattr__(self, "group_id", _check_ref("TrialUpdate group_id", self.group_id))
        if (self.writer is None) != (self.seq is None):
            raise SchemaError("TrialUpdate needs both writer and seq, or neither.")
        if self.writer is not None and (
            not isinstance(self.writer, str) or not re.fullmatch(r"[\w.:-]{1,128}", self.writer)
        ):
            raise SchemaError(f"TrialUpdate writer {self.writer!r} must be 1-128 word characters.")
        if self.seq is not None and (
            not isinstance(self.seq, int) or isinstance(self.seq, bool) or self.seq < 0
        ):
            raise SchemaError(f"TrialUpdate seq {self.seq!r} must be an int >= 0.")

    @classmethod
    def of_metrics(cls, points: tuple[MetricPoint, ...]) -> TrialUpdate:
        """An update holding only ``points`` (already checked MetricPoints): the per-call fast path."""
        update = object.__new__(cls)
        for name, value in _EMPTY_UPDATE_FIELDS:
            object.__setattr__(update, name, value)
        object.__setattr__(update, "metrics", points)
        return update

    @property
    def is_empty(self) -> bool:
        """True when applying the update would change nothing."""
        return not (
            self.parameters
            or self.metadata
            or self.tags
            or self.metrics
            or self.chronos
            or self.errors
            or self.status is not None
            or self.project_id is not None
            or self.group_id is not None
            or self.description is not None
        )


# Defaults of a TrialUpdate, with read-only mappings so fast-path updates can share them safely.
_EMPTY_UPDATE_FIELDS = tuple(
    (
        f.name,
        MappingProxyType({})
        if isinstance(getattr(TrialUpdate(), f.name), dict)
        else getattr(TrialUpdate(), f.name),
    )
    for f in fields(TrialUpdate)
)


@dataclass(frozen=True)
class GroupUpdate:
    """A change to one group: metadata merges key by key."""

    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", check_mapping("group metadata", self.metadata))
