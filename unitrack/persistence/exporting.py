"""Export runs for other tools (``unitrack export``): tables for pandas/Parquet/CSV, and TensorBoard.

- :func:`runs_frame`: one row per run, index ``uid``: ``name``, ``status`` (a word), ``project``, ``group``,
  ``description``, ``version``, ``error`` (the last error's last line), then ``parameters.<key>`` (nested dicts
  flattened with dots, lists as JSON text), ``tags.<key>`` and ``metrics.<name>`` (the latest value), the dotted
  paths queries use.
- :func:`metrics_frame`: the long form of every point: ``uid, name, metric, step, value`` (``step`` is NaN for a
  point logged without one).
- :func:`export_tables`: both, as ``runs.parquet`` + ``metrics.parquet`` (through ``pyarrow``) or ``runs.csv`` +
  ``metrics.csv``; they read back with ``pandas.read_parquet``/``read_csv``.
- :func:`export_tensorboard`: one folder per run, each a cox store (a ``metadata`` table of its parameters and a
  long-form ``metrics`` table) with TensorBoard event files of every metric: ``tensorboard --logdir OUT``,
  ``cox-tensorboard --logdir OUT`` and ``CollectionReader(OUT)`` show every run, whatever path it was logged
  through.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError, MissingDependencyError
from unitrack.persistence.lifecycle import status_word
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.structure import Trial

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "export_tables", "export_tensorboard", "metrics_frame", "runs_frame"]

logger = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "tensorboard")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    elif isinstance(value, (list, tuple, Mapping)):
        out[prefix] = json.dumps(value, default=str)
    else:
        out[prefix] = value


def _run_row(trial: Trial, groups: Mapping[str, str]) -> dict[str, Any]:
    last_error = str(trial.errors[-1]).strip().splitlines()[-1] if trial.errors else None
    row: dict[str, Any] = {
        "uid": trial.uid,
        "name": trial.name,
        "status": status_word(trial.status),
        "project": trial.project_id,
        "group": groups.get(trial.group_id or "", trial.group_id),
        "description": trial.description,
        "version": trial.version,
        "error": last_error,
    }
    for key, value in trial.parameters.items():
        _flatten(f"parameters.{key}", value, row)
    for key, value in trial.tags.items():
        _flatten(f"tags.{key}", value, row)
    for name, metric in sorted(trial.metrics.items()):
        row[f"metrics.{name}"] = metric.latest
    return row


def _consistent(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns holding values of several kinds (an int here, a str there) become text, as Parquet needs one."""
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {
            type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        if kinds <= {int, float} and kinds:
            frame[column] = frame[column].astype(float)
        elif len(kinds) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def runs_frame(trials: Iterable[Trial], groups: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run (see the module docstring), index ``uid``."""
    import pandas as pd

    rows = [_run_row(t, groups or {}) for t in trials]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["name", "status"]).rename_axis("uid")
    return _consistent(frame.set_index("uid"))


def metrics_frame(trials: Iterable[Trial]) -> pd.DataFrame:
    """Every metric point in long form: ``uid, name, metric, step, value``."""
    import numpy as np
    import pandas as pd

    uids: list[str] = []
    names: list[Any] = []
    metrics: list[str] = []
    steps: list[float] = []
    values: list[float] = []
    for trial in trials:
        for metric_name, metric in sorted(trial.metrics.items()):
            n = len(metric.values)
            uids += [trial.uid] * n
            names += [trial.name] * n
            metrics += [metric_name] * n
            steps += [math.nan if s is None else float(s) for s in metric.steps]
            values += [float(v) for v in metric.values]
    return pd.DataFrame(
        {
            "uid": pd.array(uids, dtype=object),
            "name": pd.array(names, dtype=object),
            "metric": pd.array(metrics, dtype=object),
            "step": np.asarray(steps, dtype=float),
            "value": np.asarray(values, dtype=float),
        }
    )


def _groups(protocol: Protocol) -> dict[str, str]:
    return {g.uid: str(g.name) for g in protocol.fetch_groups(None)}


def export_tables(
    protocol: Protocol, out_dir: str | os.PathLike[str], fmt: str, query: Query = None
) -> list[Path]:
    """Write ``runs.<fmt>`` and ``metrics.<fmt>`` (``fmt`` is ``parquet`` or ``csv``) into ``out_dir``.

    Raises:
        ConfigError: an unknown format.
        MissingDependencyError: Parquet without ``pyarrow``.
    """
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.", format=fmt)
    trials = protocol.fetch_trials(query)
    runs, points = runs_frame(trials, _groups(protocol)), metrics_frame(trials)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"runs.{fmt}", folder / f"metrics.{fmt}"]
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401 - pandas writes Parquet through it
        except ImportError as exc:
            raise MissingDependencyError("unitrack export --format parquet", "export", "pyarrow") from exc
        runs.to_parquet(written[0], engine="pyarrow")
        points.to_parquet(written[1], engine="pyarrow", index=False)
    else:
        runs.to_csv(written[0])
        points.to_csv(written[1], index=False)
    return written


def _folder_names(trials: list[Trial]) -> list[str]:
    seen: dict[str, int] = {}
    for trial in trials:
        seen[str(trial.name)] = seen.get(str(trial.name), 0) + 1
    return [
        str(t.name) if seen[str(t.name)] == 1 and t.name else f"{t.name or 'run'}-{t.uid[:10]}"
        for t in trials
    ]


def _column(values: list[Any]) -> tuple[type, list[Any]]:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return float, [math.nan if v is None else float(v) for v in values]
    if present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
        return bool, values
    return str, [
        "" if v is None else (v if isinstance(v, str) else json.dumps(v, default=str)) for v in values
    ]


def export_tensorboard(
    protocol: Protocol, out_dir: str | os.PathLike[str], query: Query = None
) -> list[Path]:
    """Write one cox store with TensorBoard events per run into ``out_dir`` (see the module docstring).

    Every store's ``metadata`` table has the same columns (the parameters of all runs, flattened), so
    ``cox-tensorboard --logdir OUT --format-str ...`` lists every run.

    Returns:
        The run folders written.
    """
    from unitrack.store import Store

    trials = protocol.fetch_trials(query)
    flat: list[dict[str, Any]] = []
    for trial in trials:
        row: dict[str, Any] = {}
        for key, value in trial.parameters.items():
            _flatten(key, value, row)
        flat.append(row)
    keys = sorted({k for row in flat for k in row})
    columns = {key: _column([row.get(key) for row in flat]) for key in keys}
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (trial, name) in enumerate(zip(trials, _folder_names(trials), strict=True)):
        with Store(folder, name, mode="w", quiet=True) as store:
            schema: dict[str, Any] = {key: kind for key, (kind, _) in columns.items()}
            schema["uid"] = str
            store.add_table("metadata", schema)
            store["metadata"].append_row({**{k: v[index] for k, (_, v) in columns.items()}, "uid": trial.uid})
            store.add_table("metrics", {"step": float, "name": str, "value": float})
            rows = []
            writer = store.tensorboard
            for metric_name, metric in sorted(trial.metrics.items()):
                unstepped = 0
                for step, value in metric:
                    if step is None:
                        tb_step, unstepped = unstepped, unstepped + 1
                    else:
                        tb_step = int(step)
                    writer.add_scalar(metric_name, float(value), global_step=tb_step)
                    rows.append((math.nan if step is None else float(step), metric_name, float(value)))
            store.append_many({"metrics": rows})
        written.append(folder / name)
    return written
