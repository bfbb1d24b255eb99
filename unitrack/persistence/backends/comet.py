"""``cometml://WORKSPACE/PROJECT``: forward trials to Comet (comet.com) through the ``comet_ml`` package.

track's ``make_comet_ml``: each trial becomes one Comet experiment, named after the trial; its parameters are
logged as parameters, its metric points as metrics (at their step), its tags as Comet tags (``key:value``), its
metadata, description, status and errors as "others" (non-scalar values as JSON text), its timers as
``chrono.<name>`` others. The experiment ends when the trial reaches a final status, or when the backend closes.

Comet is write-only from here: reads (``fetch_trials``...) are answered from this process's memory of what it
forwarded, so ``TrackClient`` works as with any backend. Put it in a multiplexer before the backend that keeps
the runs: ``ProtocolMultiplexer(get_protocol("cometml://ws/proj"), get_protocol("hdf5://runs"))``.

Options (query string): ``offline_directory=DIR`` writes each experiment as an offline archive in ``DIR`` (Comet's
``OfflineExperiment``; upload it later with ``comet upload``) instead of sending it; ``api_key=KEY`` (else
``COMET_API_KEY`` or Comet's own configuration). No network is touched in offline mode.

Example:
    >>> # get_protocol("cometml://my-team/vision?offline_directory=/tmp/comet")
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from unitrack.errors import ConfigError, MissingDependencyError
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.lifecycle import status_word
from unitrack.persistence.query import Query
from unitrack.persistence.structure import (
    MetricPoint,
    Status,
    StatusLike,
    Trial,
    TrialUpdate,
)
from unitrack.persistence.uri import ParsedURI

__all__ = ["CometMLProtocol"]

logger = logging.getLogger(__name__)

#: Keyword arguments that keep an experiment to what unitrack sends (no code, environment or output capture).
_QUIET: dict[str, Any] = {
    "display_summary_level": 0,
    "log_code": False,
    "log_graph": False,
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "parse_args": False,
    "auto_output_logging": None,
    "log_env_details": False,
    "log_git_metadata": False,
    "log_git_patch": False,
    "log_env_gpu": False,
    "log_env_host": False,
    "log_env_cpu": False,
    "log_env_network": False,
    "log_env_disk": False,
}


def _other(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _final(status: StatusLike | None) -> bool:
    if status is None:
        return False
    value = getattr(status, "value", None)
    return isinstance(value, int) and value >= Status.ErrorGroup.value


class CometMLProtocol(EphemeralProtocol):
    """Forward every trial to a Comet experiment (see the module docstring).

    Args:
        uri: ``cometml://WORKSPACE/PROJECT[?offline_directory=DIR&api_key=KEY]`` (also ``cometml:WORKSPACE/PROJECT``
            as track wrote it).
        strict: check that a trial's project and group exist (in this process's memory).

    Raises:
        ConfigError: the URI names no workspace/project.
        MissingDependencyError: ``comet_ml`` is not installed (``pip install 'unitrack[comet]'``).
    """

    def __init__(self, uri: str | ParsedURI, strict: bool = True) -> None:
        super().__init__(uri, strict)
        parts = [p for p in (self.uri.host + self.uri.path).split("/") if p]
        if len(parts) != 2:
            raise ConfigError(
                f"{self.uri} names no Comet workspace and project; use cometml://WORKSPACE/PROJECT.",
                uri=self.uri.redacted(),
            )
        self.workspace, self.project_name = parts
        self.offline_directory = self.uri.option("offline_directory")
        self._api_key = self.uri.option("api_key") or self.uri.password
        try:
            import comet_ml
        except ImportError as exc:
            raise MissingDependencyError("cometml://", "comet", "comet_ml") from exc
        self._comet = comet_ml
        #: The open Comet experiment of each trial uid.
        self.experiments: dict[str, Any] = {}
        #: Each trial's experiment key (also after it ended): the offline archive's name in offline mode.
        self.keys: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------ comet
    def _start(self, trial: Trial) -> Any:
        experiment: Any
        if self.offline_directory is not None:
            os.makedirs(self.offline_directory, exist_ok=True)
            experiment = self._comet.OfflineExperiment(
                project_name=self.project_name,
                workspace=self.workspace,
                offline_directory=self.offline_directory,
                **_QUIET,
            )
        else:
            experiment = self._comet.Experiment(
                api_key=self._api_key, project_name=self.project_name, workspace=self.workspace, **_QUIET
            )
        if trial.name:
            experiment.set_name(trial.name)
        experiment.log_other("unitrack_uid", trial.uid)
        self.experiments[trial.uid] = experiment
        self.keys[trial.uid] = experiment.get_key()
        return experiment

    def _forward(self, uid: str, update: TrialUpdate) -> None:
        experiment = self.experiments.get(uid)
        if experiment is None:
            return  # ended (final status): Comet takes no more
        if update.parameters:
            experiment.log_parameters(dict(update.parameters))
        for point in update.metrics:
            experiment.log_metric(point.name, point.value, step=point.step)
        if update.metadata:
            experiment.log_others({k: _other(v) for k, v in update.metadata.items()})
        if update.tags:
            experiment.add_tags([f"{k}:{_other(v)}" for k, v in update.tags.items()])
        if update.description is not None:
            experiment.log_other("description", update.description)
        for obs in update.chronos:
            experiment.log_metric(f"chrono.{obs.name}", obs.seconds)
        if update.errors:
            trial = self._db.find_trials({"uid": uid})
            experiment.log_other("errors", _other(list(trial[0].errors) if trial else list(update.errors)))
        if update.status is not None:
            experiment.log_other("status", status_word(update.status))
            if _final(update.status):
                self._end(uid)

    def _end(self, uid: str) -> None:
        experiment = self.experiments.pop(uid, None)
        if experiment is not None:
            experiment.end()

    # ------------------------------------------- primitives (the in-memory database's, forwarding writes)
    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        with self._lock:
            stored = self._db.insert_trial(trial, auto_increment)
            if stored is None:
                return None
            self._start(stored)
            points = tuple(
                MetricPoint(name, step, value)
                for name, metric in stored.metrics.items()
                for step, value in metric
            )
            self._forward(
                stored.uid,
                TrialUpdate(
                    parameters=stored.parameters,
                    metadata=stored.metadata,
                    tags=stored.tags,
                    metrics=points,
                    description=stored.description,
                    status=stored.status,
                    errors=tuple(stored.errors),
                ),
            )
            return stored

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        with self._lock:
            self._db.update_trial(uid, update)
            self._forward(uid, update)

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        with self._lock:
            rec = self._db.first_trial(query)
            if rec is None:
                return None
            rec.apply(update)
            self._forward(rec.uid, update)
            return rec.snapshot()

    def close(self) -> None:
        """End every open experiment (writing its archive in offline mode)."""
        with self._lock:
            for uid in list(self.experiments):
                self._end(uid)
