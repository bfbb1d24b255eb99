"""Record every Optuna trial as a unitrack trial, so a study is viewed, grouped and compared like a sweep.

``study.optimize(objective, n_trials=50, callbacks=[UnitrackCallback()])``: after each Optuna trial ends, one
unitrack trial is written in one update:

- name ``<study>-<number>``, in group ``<study>`` (a sweep: ``unitrack view`` and queries group it), project
  ``$UNITRACK_PROJECT`` or ``default``; tags ``framework``, ``study``, ``number``;
- parameters: the trial's sampled parameters (``parameters.lr``);
- metrics: the objective value(s) under the study's metric names (``value`` for one objective, ``values_0``,
  ``values_1``... for several, unless ``study.set_metric_names`` named them), at the last reported step; the
  values reported with ``trial.report(value, step)`` as the ``intermediate_value`` series;
- status: ``finished`` (COMPLETE), ``stopped`` (PRUNED), ``error`` (FAIL; with the objective's traceback when
  it is wrapped, ``study.optimize(callback.track(objective), callbacks=[callback])``: Optuna itself keeps none);
- metadata ``optuna``: state, number, start and end times, duration, user and system attributes, the
  parameters' distributions; ``start_time``/``end_time`` as every run has them.

The group's metadata ``optuna`` holds the study's directions and its best trial so far.

For an adaptive sweep whose trials are unitrack experiments (Optuna's ask/tell), see ``examples/optuna_sweep.py``.

Example:
    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(study_name="quad", sampler=optuna.samplers.RandomSampler(seed=0))
    >>> callback = UnitrackCallback("ephemeral://")
    >>> study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 2) ** 2, n_trials=5, callbacks=[callback])
    >>> trials = callback.protocol.fetch_trials({"tags.study": "quad"})
    >>> len(trials), {str(t.status) for t in trials}
    (5, {'completed'})
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

from unitrack.errors import ConfigError
from unitrack.integrations.run import plain_parameters
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import (
    MetricPoint,
    Project,
    Status,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
)
from unitrack.persistence.track import PROJECT_ENV, TrackClient

__all__ = ["UnitrackCallback"]

logger = logging.getLogger(__name__)

_STATES: dict[str, StatusLike] = {
    "COMPLETE": Status.Completed,
    "PRUNED": Status.Interrupted,
    "FAIL": Status.Exception,
    "RUNNING": Status.Running,
}


class UnitrackCallback:
    """An Optuna callback writing each finished trial to a unitrack backend (see the module docstring).

    Args:
        target: the backend: None (``$UNITRACK_URI``, else ``hdf5://runs``), a URI, a Protocol or a TrackClient
            (its backend, project and group).
        project: the project (default: the client's, else ``$UNITRACK_PROJECT``, else ``default``).
        group: the group (default: the study's name).
        metric_names: names for the objective values (default: the study's ``metric_names``, else ``value`` /
            ``values_<i>``).

    Raises:
        ConfigError: for a target of another type.
    """

    def __init__(
        self,
        target: Any = None,
        *,
        project: str | None = None,
        group: str | None = None,
        metric_names: list[str] | None = None,
    ) -> None:
        if isinstance(target, TrackClient):
            self.protocol: Protocol = target.protocol
            project = project or (target.project.name if target.project is not None else None)
            group = group or (target.group.name if target.group is not None else None)
        elif target is None or isinstance(target, str):
            self.protocol = get_protocol(target)
        elif isinstance(target, Protocol):
            self.protocol = target
        else:
            raise ConfigError(
                f"cannot write Optuna trials to a {type(target).__name__}: pass a backend URI, a Protocol or a "
                "TrackClient (or nothing for $UNITRACK_URI)",
                parameter="target",
            )
        self.project = project or os.environ.get(PROJECT_ENV) or "default"
        self.group = group
        self.metric_names = list(metric_names) if metric_names else None
        self._groups: dict[str, TrialGroup] = {}
        self._tracebacks: dict[int, str] = {}
        #: The unitrack trial uid of each Optuna trial written, by (study name, number).
        self.uids: dict[tuple[str, int], str] = {}

    def track(self, objective: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap ``objective`` so that a trial it fails keeps the exception's traceback in its errors."""

        @functools.wraps(objective)
        def tracked(trial: Any) -> Any:
            try:
                return objective(trial)
            except Exception as exc:
                if type(exc).__name__ != "TrialPruned":
                    self._tracebacks[trial.number] = "".join(traceback.format_exception(exc)).rstrip()
                raise

        return tracked

    def _group(self, study: Any) -> TrialGroup:
        name = _safe_name(self.group or study.study_name)
        group = self._groups.get(name)
        if group is None:
            project = self.protocol.new_project(Project(name=self.project))
            group = TrialGroup(name=name, project_id=project.uid)
            self.protocol.new_trial_group(group)
            self._groups[name] = group
        return group

    def __call__(self, study: Any, trial: Any) -> None:
        """Write ``trial`` (an Optuna ``FrozenTrial``) as a unitrack trial of the study's group."""
        group = self._group(study)
        state = trial.state.name
        stored = self.protocol.new_trial(
            Trial(
                name=_safe_name(f"{study.study_name}-{trial.number}"),
                parameters=plain_parameters(dict(trial.params)),
                project_id=group.project_id,
                group_id=group.uid,
                tags={"framework": "optuna", "study": study.study_name, "number": trial.number},
            ),
            auto_increment=True,
        )
        assert stored is not None  # auto_increment always inserts
        self.protocol.update_trial(stored.uid, self._update(study, trial, state))
        self.uids[(study.study_name, trial.number)] = stored.uid
        self._record_best(study, group)

    def _update(self, study: Any, trial: Any, state: str) -> TrialUpdate:
        intermediate = sorted(trial.intermediate_values.items())
        points = [MetricPoint("intermediate_value", int(step), float(v)) for step, v in intermediate]
        last_step = intermediate[-1][0] if intermediate else 0
        values = trial.values or []
        names = self.metric_names or getattr(study, "metric_names", None)
        if not names or len(names) != len(values):
            names = ["value"] if len(values) == 1 else [f"values_{i}" for i in range(len(values))]
        points += [MetricPoint(str(n), int(last_step), float(v)) for n, v in zip(names, values, strict=True)]
        start, end = trial.datetime_start, trial.datetime_complete
        optuna_meta: dict[str, Any] = {
            "state": state,
            "number": trial.number,
            "datetime_start": _iso(start),
            "datetime_complete": _iso(end),
            "duration_s": (end - start).total_seconds() if start and end else None,
            "user_attrs": plain_parameters(dict(trial.user_attrs)),
            "system_attrs": plain_parameters(dict(trial.system_attrs)),
            "distributions": {k: repr(d) for k, d in trial.distributions.items()},
        }
        metadata: dict[str, Any] = {"optuna": optuna_meta}
        if start is not None:
            metadata["start_time"] = start.timestamp()
        if end is not None:
            metadata["end_time"] = end.timestamp()
        errors: tuple[str, ...] = ()
        if state == "FAIL":
            reason = self._tracebacks.pop(trial.number, None) or trial.system_attrs.get("fail_reason")
            errors = (
                str(reason)
                if reason
                else "the Optuna trial failed; wrap the objective with UnitrackCallback.track to keep its traceback",
            )
        return TrialUpdate(
            metrics=tuple(points),
            metadata=metadata,
            status=_STATES.get(state, Status.Broken),
            errors=errors,
        )

    def _record_best(self, study: Any, group: TrialGroup) -> None:
        best: dict[str, Any] | list[dict[str, Any]] | None
        try:
            trials = study.best_trials
        except (RuntimeError, ValueError):  # no completed trial yet
            trials = []
        best = [
            {"number": t.number, "values": list(t.values), "params": plain_parameters(t.params)}
            for t in trials
        ]
        directions = [d.name.lower() for d in study.directions]
        meta: dict[str, Any] = {"study": study.study_name, "directions": directions, "best": best}
        self.protocol.set_group_metadata(group, optuna=meta)

    def __repr__(self) -> str:
        return f"UnitrackCallback(optuna, {self.project!r}, {len(self.uids)} trials written)"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _safe_name(name: str) -> str:
    """Study names may hold ``/``; group and trial names may not."""
    return name.replace("/", "_").replace("\\", "_") or "study"
