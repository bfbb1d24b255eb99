"""Read runs other tools logged into trials: TensorBoard event files and MLflow (``unitrack import``).

Each imported run becomes a trial whose ``metadata["source"]`` records where it came from (the tool, the
location, the run's id there). A trial's uid is derived from that source, so importing the same runs again
creates nothing twice: the runs are read into memory, then copied with :func:`unitrack.persistence.sync.sync`,
which sends only what the destination lacks (new points of a run still being written, a new status).

- TensorBoard (:func:`read_tensorboard`): every folder of ``LOGDIR`` holding event files is a run, read with
  TensorBoard's own reader; its scalars become metric series (step, value) and the hyper-parameters of the
  HParams plugin become parameters. tensorboardX's ``add_hparams`` writes them into a sub-folder of the run
  (``<run>/<timestamp>/``): such a folder is merged into its run.
- MLflow (:func:`read_mlflow`): every run of every experiment (or of the named ones) of a tracking URI (a
  ``file:`` store, ``sqlite:``, or a tracking server ``http(s)://``), read with ``mlflow``'s client: params,
  the full history of every metric, tags, status and times. One group per experiment.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from unitrack.errors import ConfigError, MissingDependencyError, NotFoundError
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.structure import (
    MetricPoint,
    Project,
    Status,
    Trial,
    TrialGroup,
    TrialUpdate,
    compute_hash,
)
from unitrack.persistence.sync import SyncReport, sync

__all__ = ["import_runs", "read_mlflow", "read_tensorboard"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[/\\\x00-\x1f]")


def _name(text: str) -> str:
    """A trial or group name from a folder path or a run name (``/`` becomes ``.``)."""
    cleaned = _UNSAFE.sub(".", text).strip() or "run"
    return cleaned if cleaned not in (".", "..") else "run"


def _scalar(value: Any) -> Any:
    """A parameter read as text (MLflow keeps them all as text): numbers, booleans and None come back typed."""
    if not isinstance(value, str):
        return value
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value


class _Runs:
    """The runs read from one tool, held in memory until they are copied."""

    def __init__(self, project: str, group_names: Iterable[str] = ()) -> None:
        self.db = EphemeralProtocol(strict=False)
        self.project = self.db.new_project(Project(name=project))
        self.groups: dict[str, TrialGroup] = {}
        for name in group_names:
            self.group(name)

    def group(self, name: str) -> TrialGroup:
        found = self.groups.get(name)
        if found is None:
            group = TrialGroup(name=_name(name), project_id=self.project.uid)
            self.db.new_trial_group(group)
            found = self.groups[name] = self.db.get_trial_group(group) or group
        return found

    def add(
        self,
        group: str,
        name: str,
        source: dict[str, Any],
        parameters: dict[str, Any],
        points: Sequence[MetricPoint],
        *,
        tags: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        status: Any = Status.Completed,
        description: str | None = None,
    ) -> Trial:
        grp = self.group(group)
        # The uid follows the run's identity in its tool, so importing it again finds the same trial.
        identity = json.dumps(source, sort_keys=True, default=str)
        trial = Trial(
            _hash=compute_hash(name, identity, {}),
            name=_name(name),
            version=str(source.get("tool")),
            description=description,
            parameters=parameters,
            tags=tags or {},
            metadata={**(metadata or {}), "source": source},
            project_id=self.project.uid,
            group_id=grp.uid,
            status=status,
        )
        stored = self.db.insert_trial(trial)
        assert stored is not None  # a fresh in-memory database
        if points:
            self.db.update_trial(stored.uid, TrialUpdate(metrics=tuple(points)))
        return stored


# ------------------------------------------------------------------------------------------- TensorBoard
def _event_dirs(logdir: Path) -> list[Path]:
    found = []
    for folder, _, files in os.walk(logdir):
        if any(".tfevents." in f for f in files):
            found.append(Path(folder))
    return sorted(found)


def _hparams(accumulator: Any) -> dict[str, Any]:
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        contents = accumulator.PluginTagToContent("hparams")
    except KeyError:
        return {}
    values: dict[str, Any] = {}
    for content in contents.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.WhichOneof("data") != "session_start_info":
            continue
        for key, value in data.session_start_info.hparams.items():
            kind = value.WhichOneof("kind")
            if kind == "number_value":
                number = value.number_value
                values[key] = int(number) if number.is_integer() and abs(number) < 2**53 else number
            elif kind == "string_value":
                values[key] = value.string_value
            elif kind == "bool_value":
                values[key] = value.bool_value
    return values


def _read_event_dir(folder: Path) -> tuple[list[MetricPoint], dict[str, Any], float | None]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as exc:
        raise MissingDependencyError("unitrack import tensorboard", "import", "tensorboard") from exc
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    points: list[MetricPoint] = []
    first_time: float | None = None
    for tag in accumulator.Tags().get("scalars", []):
        for event in accumulator.Scalars(tag):
            points.append(MetricPoint(tag, int(event.step), float(event.value)))
            first_time = event.wall_time if first_time is None else min(first_time, event.wall_time)
    return points, _hparams(accumulator), first_time


def read_tensorboard(logdir: str | os.PathLike[str], project: str = "tensorboard") -> Protocol:
    """Read every run of a TensorBoard log folder (see the module docstring) into an in-memory backend.

    Raises:
        NotFoundError: ``logdir`` holds no event files.
        MissingDependencyError: the ``tensorboard`` package is not installed.
    """
    root = Path(logdir).resolve()
    folders = _event_dirs(root)
    if not folders:
        raise NotFoundError(f"No TensorBoard event files under {root}.", path=str(root))
    read = {folder: _read_event_dir(folder) for folder in folders}
    # tensorboardX's add_hparams writes a child folder holding only the hparams (and their metric values):
    # it belongs to its parent run.
    merged: dict[Path, tuple[list[MetricPoint], dict[str, Any], float | None]] = {}
    for folder in folders:
        points, hparams, first = read[folder]
        parent = folder.parent
        if hparams and parent in read and folder != root:
            target = merged.setdefault(
                parent, (list(read[parent][0]), dict(read[parent][1]), read[parent][2])
            )
            target[0].extend(points)
            target[1].update(hparams)
            continue
        merged.setdefault(folder, (list(points), dict(hparams), first))
    runs = _Runs(project, [root.name])
    for folder, (points, hparams, first) in sorted(merged.items()):
        relative = folder.relative_to(root).as_posix()
        name = root.name if relative == "." else relative
        source = {"tool": "tensorboard", "logdir": str(root), "run": relative}
        metadata = {"start_time": first} if first is not None else {}
        runs.add(root.name, name, source, hparams, points, metadata=metadata)
    return runs.db


# ------------------------------------------------------------------------------------------------ MLflow
_MLFLOW_STATUS = {
    "FINISHED": Status.Completed,
    "FAILED": Status.Exception,
    "KILLED": Status.Interrupted,
    "RUNNING": Status.Running,
    "SCHEDULED": Status.CreatedGroup,
}


def read_mlflow(uri: str, experiments: Sequence[str] = (), project: str = "mlflow") -> Protocol:
    """Read every run of an MLflow tracking URI into an in-memory backend (see the module docstring).

    Args:
        uri: The tracking URI: ``file:///path/mlruns`` (or a folder path), ``sqlite:///mlflow.db``,
            ``http(s)://host:port``.
        experiments: Only these experiment names (all by default).
        project: The project the runs go in.

    Raises:
        MissingDependencyError: the ``mlflow`` client is not installed.
        NotFoundError: a named experiment does not exist.
        ConfigError: the tracking store cannot be read.
    """
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingDependencyError("unitrack import mlflow", "import", "mlflow-skinny") from exc
    if "://" not in uri and ":" not in uri[:3]:
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 refuses file stores unless asked; reading an existing one is what this import is for.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.search_experiments()
    except MlflowException as exc:
        raise ConfigError(f"Cannot read MLflow tracking store {uri}: {exc}", uri=uri) from exc
    wanted = [e for e in found if not experiments or e.name in experiments]
    missing = sorted(set(experiments) - {e.name for e in found})
    if missing:
        raise NotFoundError(
            f"MLflow store {uri} has no experiment {missing}; it has {sorted(e.name for e in found)}.",
            uri=uri,
        )
    runs = _Runs(project)
    for experiment in wanted:
        for run in client.search_runs([experiment.experiment_id], max_results=50_000):
            info, data = run.info, run.data
            points = [
                MetricPoint(key, int(m.step), float(m.value))
                for key in sorted(data.metrics)
                for m in client.get_metric_history(info.run_id, key)
            ]
            tags = {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")}
            metadata: dict[str, Any] = {
                k: v for k, v in data.tags.items() if k.startswith("mlflow.") and k != "mlflow.note.content"
            }
            metadata.update(
                start_time=None if info.start_time is None else info.start_time / 1000.0,
                end_time=None if info.end_time is None else info.end_time / 1000.0,
                artifact_uri=info.artifact_uri,
            )
            if getattr(info, "user_id", None):
                metadata["user"] = info.user_id
            source = {
                "tool": "mlflow",
                "uri": uri,
                "experiment_id": experiment.experiment_id,
                "run_id": info.run_id,
            }
            runs.add(
                experiment.name,
                info.run_name or info.run_id,
                source,
                {k: _scalar(v) for k, v in data.params.items()},
                points,
                tags=tags,
                metadata=metadata,
                status=_MLFLOW_STATUS.get(str(info.status), Status.CreatedGroup),
                description=data.tags.get("mlflow.note.content"),
            )
    return runs.db


def import_runs(source: Protocol, destination: Protocol, *, source_name: str) -> SyncReport:
    """Copy runs read by :func:`read_tensorboard` or :func:`read_mlflow` into ``destination`` (only what it lacks)."""
    return sync(source, destination, source_name=source_name)
