"""Rows describing runs, for ``unitrack view``: from a folder of experiments or from any backend URI.

A row is flat: ``name``, ``status``, ``age_s``, the parameters (by name) and the latest metrics/messages (by
name). Reading a folder uses only each ``params.yml`` (safe loader), so a thousand runs list quickly.

Example:
    >>> rows = [{"name": "a", "lr": 0.1, "depth": 2}, {"name": "b", "lr": 0.2, "depth": 2}]
    >>> varying_keys(rows, ["lr", "depth"])
    ['lr']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ruamel.yaml.error import YAMLError

from unitrack.experiment.paramfile import safe_yaml
from unitrack.persistence.lifecycle import PROCESS_KEY, is_lost, read_heartbeat, run_status

__all__ = ["Run", "runs_from_folder", "runs_from_uri", "varying_keys"]


class Run(dict[str, Any]):
    """A row plus which of its keys are parameters and which are metrics."""

    def __init__(self, row: dict[str, Any], params: Sequence[str], metrics: Sequence[str]) -> None:
        super().__init__(row)
        self.params = list(params)
        self.metrics = list(metrics)


def _age_s(stamp: Any, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        when = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    return max((now - when.replace(tzinfo=None)).total_seconds(), 0.0)


def _folder_status(data: dict[str, Any]) -> str:
    """The status a params.yml shows: ``lost`` for a ``running`` experiment whose process (``_meta.process``) is
    gone (see :func:`unitrack.persistence.lifecycle.is_lost`)."""
    status = str(data.get("_status", ""))
    meta = data.get("_meta")
    if status == "running" and isinstance(meta, dict):
        beat = read_heartbeat({PROCESS_KEY: meta.get(PROCESS_KEY)})
        if beat is not None and is_lost(beat):
            return "lost"
    return status


def runs_from_folder(root: str) -> list[Run]:
    """Read every ``{root}/*/params.yml`` (and ``{root}/params.yml`` when the root is itself a run)."""
    yaml = safe_yaml()  # alias bombs and deep nesting refused (#12 item 11)
    now = datetime.now()
    candidates = [root] + sorted(
        e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
    )
    runs = []
    for folder in candidates:
        path = os.path.join(folder, "params.yml")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.load(handle)
        except (OSError, YAMLError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        params = [str(k) for k in data if not str(k).startswith("_")]
        messages = data.get("_messages") or {}
        messages = messages if isinstance(messages, dict) else {}
        stamps = data.get("_timestamps") or {}
        stamps = stamps if isinstance(stamps, dict) else {}
        row: dict[str, Any] = {
            "name": os.path.basename(folder),
            "status": _folder_status(data),
            "age_s": _age_s(stamps.get("stopped") or stamps.get("last") or stamps.get("registered"), now),
        }
        row.update({k: data[k] for k in params})
        metric_keys = [f"{k}" for k in messages if str(k) not in row]
        row.update({k: messages[k] for k in metric_keys})
        runs.append(Run(row, params, metric_keys))
    return runs


def runs_from_uri(uri: str) -> list[Run]:
    """Read every trial of a backend (its parameters and each metric's latest value)."""
    import time

    from unitrack.persistence.registry import get_protocol

    now = time.time()
    runs = []
    with get_protocol(uri) as protocol:
        for trial in protocol.fetch_trials(None):
            status = trial.metadata.get("status") if isinstance(trial.metadata, dict) else None
            if run_status(trial) == "lost":
                status = "lost"
            row: dict[str, Any] = {
                "name": trial.name or trial.uid,
                "status": str(status or getattr(trial.status, "name", trial.status)),
                "age_s": None,
            }
            end = trial.metadata.get("end_time") if isinstance(trial.metadata, dict) else None
            if isinstance(end, (int, float)):
                row["age_s"] = max(now - end, 0.0)
            params = [str(k) for k in trial.parameters]
            row.update(trial.parameters)
            metric_keys = []
            for key, metric in trial.metrics.items():
                values = list(metric.values)
                if values and key not in row:
                    row[key] = values[-1]
                    metric_keys.append(key)
            runs.append(Run(row, params, metric_keys))
    return runs


def varying_keys(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """The keys whose values differ between rows (all of them when there is one row)."""
    if len(rows) <= 1:
        return list(keys)
    out = []
    for key in keys:
        first = repr(rows[0].get(key))
        if any(repr(r.get(key)) != first for r in rows[1:]):
            out.append(key)
    return out
