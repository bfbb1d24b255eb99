"""Plain-data (JSON) form of projects, groups, trials and updates: for JSON files and the wire.

Nothing here ever unpickles: the form is dicts, lists, strings and numbers with a ``dtype`` tag, as in track's
``to_json``/``from_json``. Trials in track's own JSON layout (metrics as ``{step: value}`` dicts or lists, no
``steps``) are read too, keeping their stored hash so old files keep their uids.

Example:
    >>> from unitrack.persistence.structure import Trial
    >>> t = Trial(name="a", parameters={"lr": 0.1})
    >>> from_json(to_json(t)).uid == t.uid
    True
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Mapping
from typing import Any

from unitrack.errors import SchemaError
from unitrack.persistence.structure import (
    ChronoObservation,
    GroupUpdate,
    Metric,
    MetricPoint,
    Project,
    Trial,
    TrialGroup,
    TrialUpdate,
    status_from_json,
    status_to_json,
)

__all__ = ["compact_json_encoder", "from_json", "metric_from_json", "metric_to_json", "to_json"]

Obj = Project | TrialGroup | Trial | TrialUpdate | GroupUpdate


def compact_json_encoder() -> Callable[[Any], str]:
    """``json.dumps(obj, separators=(",", ":"), allow_nan=True)`` for plain data already checked (no cycles).

    ``json.dumps`` builds CPython's C encoder anew for every call, which costs as much as encoding a small
    record; this builds it once (``json.encoder.c_make_encoder``, the accelerator json itself uses), and falls
    back to ``JSONEncoder.encode`` where that is missing or behaves differently.
    """
    encoder = json.JSONEncoder(allow_nan=True, check_circular=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    try:
        iterencode = make(
            None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
        )
        sample = {"a": [1.5, -0.0, float("nan"), None, True, 2**70, 'é\n"x'], "b": {}}
        if "".join(iterencode(sample, 0)) != json.dumps(sample, separators=(",", ":")):
            return encoder.encode  # pragma: no cover - a different C encoder
    except (TypeError, ValueError):  # pragma: no cover - another signature
        return encoder.encode

    def encode(obj: Any) -> str:
        return "".join(iterencode(obj, 0))

    return encode


def metric_to_json(metric: Metric) -> dict[str, Any]:
    """Columnar form ``{'steps': [...], 'values': [...], 'latest': v}`` (and ``'logged': n`` when known)."""
    data = {"steps": list(metric.steps), "values": list(metric.values), "latest": metric.latest}
    if metric.logged is not None:
        data["logged"] = metric.logged
    return data


def metric_from_json(name: str, data: Any) -> Metric:
    """Read a metric from the columnar form, or track's ``{step: value}`` dict or plain list."""
    if isinstance(data, Mapping) and "values" in data:
        steps = tuple(data.get("steps") or [None] * len(data["values"]))
        values = tuple(data["values"])
        if len(steps) != len(values):
            raise SchemaError(f"metric {name!r}: {len(steps)} steps but {len(values)} values")
        latest = data.get("latest", values[-1] if values else None)
        logged = data.get("logged")
        if logged is not None and (type(logged) is not int or logged < 0):
            raise SchemaError(f"metric {name!r}: logged = {logged!r} is not a count")
        return Metric(name, steps, values, latest, logged)
    if isinstance(data, Mapping):  # track: {step: value}, steps became strings in JSON
        steps_list: list[Any] = []
        for key in data:
            try:
                steps_list.append(int(key))
            except (TypeError, ValueError):
                steps_list.append(float(key))
        values = tuple(data.values())
        return Metric(name, tuple(steps_list), values, values[-1] if values else None)
    if isinstance(data, list):  # track: a time series without steps
        return Metric(name, (None,) * len(data), tuple(data), data[-1] if data else None)
    raise SchemaError(f"metric {name!r} has an unreadable form {type(data).__name__}")


def _point_to_json(p: MetricPoint) -> list[Any]:
    return [p.name, p.step, p.value]


def to_json(obj: Obj, short: bool = False) -> dict[str, Any]:
    """Return the plain-data form of a project, group, trial or update.

    ``short=True`` drops identifiers and bookkeeping, for display (track's ``short`` form).
    """
    if isinstance(obj, Trial):
        data: dict[str, Any] = {
            "dtype": "trial",
            "uid": obj.uid,
            "hash": obj.hash,
            "revision": obj.revision,
            "name": obj.name,
            "description": obj.description,
            "version": obj.version,
            "tags": dict(obj.tags),
            "group_id": obj.group_id,
            "project_id": obj.project_id,
            "parameters": dict(obj.parameters),
            "metadata": dict(obj.metadata),
            "metrics": {k: metric_to_json(m) for k, m in obj.metrics.items()},
            "chronos": dict(obj.chronos),
            "status": status_to_json(obj.status),
            "errors": list(obj.errors),
        }
        if short:
            for key in ("dtype", "hash", "uid", "project_id", "group_id"):
                data.pop(key)
        return data
    if isinstance(obj, TrialGroup):
        return {
            "dtype": "trial_group",
            "uid": obj.uid,
            "name": obj.name,
            "description": obj.description,
            "metadata": dict(obj.metadata),
            "trials": sorted(obj.trials),
            "project_id": obj.project_id,
        }
    if isinstance(obj, Project):
        return {
            "dtype": "project",
            "uid": obj.uid,
            "name": obj.name,
            "description": obj.description,
            "metadata": dict(obj.metadata),
            "groups": sorted(obj.groups),
            "trials": sorted(obj.trials),
        }
    if isinstance(obj, TrialUpdate):
        update: dict[str, Any] = {"dtype": "trial_update"}
        for key in ("parameters", "metadata", "tags"):
            value = getattr(obj, key)
            if value:
                update[key] = dict(value)
        if obj.metrics:
            update["metrics"] = [_point_to_json(p) for p in obj.metrics]
        if obj.chronos:
            update["chronos"] = [[c.name, c.seconds, dict(c.aggregator)] for c in obj.chronos]
        if obj.status is not None:
            update["status"] = status_to_json(obj.status)
        if obj.errors:
            update["errors"] = list(obj.errors)
        for key in ("project_id", "group_id", "description", "writer", "seq"):
            if getattr(obj, key) is not None:
                update[key] = getattr(obj, key)
        return update
    if isinstance(obj, GroupUpdate):
        return {"dtype": "group_update", "metadata": dict(obj.metadata)}
    raise SchemaError(f"Cannot serialize {type(obj).__name__}")


def _str_or_none(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise SchemaError(f"field {key!r} must be a string or null, not {type(value).__name__}")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise SchemaError(f"field {key!r} must be an object, not {type(value).__name__}")
    return dict(value)


def from_json(data: Mapping[str, Any]) -> Obj:
    """Rebuild an object from :func:`to_json` output (or track's JSON).

    Raises:
        SchemaError: for anything that is not a well-formed object of a known ``dtype``.
    """
    if not isinstance(data, Mapping):
        raise SchemaError(f"expected an object with a 'dtype', not {type(data).__name__}")
    dtype = data.get("dtype")
    if dtype == "trial":
        metrics_raw = _mapping(data, "metrics")
        revision = data.get("revision", 0)
        return Trial(
            _hash=_str_or_none(data, "hash"),
            revision=int(revision)
            if isinstance(revision, (int, str)) and str(revision).isdigit()
            else revision,
            name=_str_or_none(data, "name"),
            description=_str_or_none(data, "description"),
            tags=_mapping(data, "tags"),
            version=None if data.get("version") is None else str(data.get("version")),
            group_id=_str_or_none(data, "group_id"),
            project_id=_str_or_none(data, "project_id"),
            parameters=_mapping(data, "parameters"),
            metadata=_mapping(data, "metadata"),
            metrics={k: metric_from_json(k, v) for k, v in metrics_raw.items()},
            chronos=_mapping(data, "chronos"),
            status=status_from_json(data.get("status", {"name": "CreatedGroup", "value": 0})),
            errors=tuple(str(e) for e in data.get("errors") or ()),
        )
    if dtype == "trial_group":
        return TrialGroup(
            _uid=_str_or_none(data, "uid"),
            name=_str_or_none(data, "name"),
            description=_str_or_none(data, "description"),
            metadata=_mapping(data, "metadata"),
            trials=frozenset(str(t) for t in data.get("trials") or ()),
            project_id=_str_or_none(data, "project_id"),
        )
    if dtype == "project":
        return Project(
            _uid=_str_or_none(data, "uid"),
            name=_str_or_none(data, "name"),
            description=_str_or_none(data, "description"),
            metadata=_mapping(data, "metadata"),
            groups=frozenset(str(g) for g in data.get("groups") or ()),
            trials=frozenset(str(t) for t in data.get("trials") or ()),
        )
    if dtype == "trial_update":
        try:
            metrics = tuple(MetricPoint(str(n), s, v) for n, s, v in data.get("metrics") or ())
            chronos = tuple(
                ChronoObservation(str(n), float(s), dict(a)) for n, s, a in data.get("chronos") or ()
            )
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"malformed trial update: {exc}") from exc
        raw_status = data.get("status")
        return TrialUpdate(
            parameters=_mapping(data, "parameters"),
            metadata=_mapping(data, "metadata"),
            tags=_mapping(data, "tags"),
            metrics=metrics,
            chronos=chronos,
            status=None if raw_status is None else status_from_json(raw_status),
            errors=tuple(data.get("errors") or ()),
            project_id=_str_or_none(data, "project_id"),
            group_id=_str_or_none(data, "group_id"),
            description=_str_or_none(data, "description"),  # absent in updates from older clients
            writer=_str_or_none(data, "writer"),
            seq=data.get("seq"),
        )
    if dtype == "group_update":
        return GroupUpdate(metadata=_mapping(data, "metadata"))
    raise SchemaError(f"unknown dtype {dtype!r}; expected trial, trial_group, project or an update")
