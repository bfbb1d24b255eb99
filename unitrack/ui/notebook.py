"""``unitrack.plot``: the web view's chart of a metric, as an interactive plotly figure for a notebook cell.

Example:
    >>> import tempfile
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Trial
    >>> root = tempfile.mkdtemp()
    >>> with get_protocol(f"hdf5://{root}") as db:
    ...     db.strict = False
    ...     for seed in range(3):
    ...         t = db.new_trial(Trial(name=f"s{seed}", parameters={"lr": 0.1, "seed": seed}))
    ...         for step in range(10):
    ...             db.log_trial_metrics(t, step=step, loss=1 / (step + 1) + seed / 100)
    ...     trials = db.fetch_trials(None)
    >>> fig = plot(trials, "loss", group_by="*-seed")
    >>> [trace.name for trace in fig.data if trace.name]
    ['all runs (n=3)']
    >>> fig = plot(root, "loss", legend="seed={seed}")  # a root folder or URI: every run in it
    >>> sorted(trace.name for trace in fig.data)
    ['seed=0', 'seed=1', 'seed=2']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError
from unitrack.persistence.catalog import row_of
from unitrack.persistence.series import SeriesRequest, series_from_trials
from unitrack.persistence.structure import Trial
from unitrack.ui import figures

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["plot"]


def plot(
    runs: Any,
    metric: str,
    group_by: str | Sequence[str] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    x: str = "step",
    smoothing: float = 0.0,
    log_y: bool = False,
    legend: str | None = None,
    band: str = "std",
    max_points: int | None = 2000,
) -> go.Figure:
    """Chart ``metric`` of ``runs``: a line per run, or per group of runs (mean, band and count).

    Args:
        runs: A root folder or backend URI (every run in it); a run catalog frame (``unitrack.runs(...)``,
            index ``uid``, which names its source in ``attrs``; pass ``source`` for another frame); Trials
            (``fetch_trials`` output, drawn from the points they hold); or uids with ``source``.
        metric: The metric to draw.
        group_by: A parameter name or names to group runs by, or ``'*-seed'`` for all varying parameters but
            seeds.
        source: Where the runs are read (a root folder or a backend URI) when ``runs`` does not say.
        x: ``'step'``, ``'relative'`` or ``'wall'`` (times where the backend stores them).
        smoothing: TensorBoard's smoothing weight in [0, 1).
        log_y: A logarithmic y axis.
        legend: Legend format over parameters, ``name`` and ``uid`` (``'lr={lr} seed={seed}'``).
        band: ``'std'``, ``'stderr'``, ``'minmax'`` or ``'none'`` around a group's mean.
        max_points: Points per line (downsampled at the backend); None for every point.

    Returns:
        A ``plotly.graph_objects.Figure`` (shown by the notebook, or ``.show()``, ``.write_html(...)``).

    Raises:
        ConfigError: for runs of an unknown kind, or no source for uids or a frame.
    """
    import plotly.graph_objects as go

    groups = [group_by] if isinstance(group_by, str) else list(group_by or []) or None
    options: dict[str, Any] = {
        "x": x,
        "smoothing": smoothing,
        "log_y": log_y,
        "legend": legend,
        "group_by": groups,
        "band": band,
    }
    if isinstance(runs, (str, os.PathLike)) and source is None:
        source, runs = runs, None
    if (
        isinstance(runs, Sequence)
        and not isinstance(runs, str)
        and runs
        and all(isinstance(r, Trial) for r in runs)
    ):
        request = SeriesRequest(uids=tuple(t.uid for t in runs), metrics=(metric,), max_points=max_points)
        rows = {t.uid: row_of(t) for t in runs}
        return go.Figure(figures.line_figure(series_from_trials(runs, request), rows, metric, **options))
    is_frame = hasattr(runs, "index") and hasattr(runs, "columns")
    attrs = getattr(runs, "attrs", None)
    if source is None and isinstance(attrs, dict):
        source = attrs.get("source")
    if source is None:
        raise ConfigError(
            "unitrack.plot needs to know where the runs are: pass source='runs' (a root folder or backend URI), "
            "or Trials from fetch_trials."
        )
    from unitrack.ui.data import Source, frame_rows

    with Source(source) as reader:
        if is_frame:
            chosen = frame_rows(
                runs
            )  # the frame's own rows (a catalog frame, perhaps filtered by the caller)
        elif runs is None:
            chosen = reader.rows()[0]
        else:
            uids = [str(u) for u in runs]
            chosen = reader.chosen(uids)[0]
            unknown = sorted(set(uids) - {r["uid"] for r in chosen})
            if unknown:
                raise ConfigError(f"unitrack.plot: no run {unknown[0]!r} in {reader.label}.")
        info = {str(r["uid"]): r for r in chosen}
        found = reader.series(list(info), [metric], max_points=max_points)
    return go.Figure(figures.line_figure(found, info, metric, **options))
