"""The charts of the web view, the report and ``unitrack.plot``: plotly figures built as plain JSON data.

One module builds every figure, so a chart looks the same in the browser, in the one-file report and in a
notebook. A figure is a ``{'data': [...], 'layout': {...}}`` dict that plotly.js draws as it is (and that
``plotly.graph_objects.Figure`` accepts).

Every text that comes from a run (names, parameter values, metric names) is untrusted: plotly.js reads a few
HTML-like tags in labels, so such text is entity-escaped here (:func:`escape`) and plotly shows it as the
literal text it is. Legend format strings (``lr={lr} seed={seed}``) only substitute plain names: no attribute
or index access, so a format string cannot reach into objects.

Figures of several runs take them as run catalog rows (:mod:`unitrack.persistence.catalog`: ``name``,
``parameters.<key>``, ``metrics.<name>``...), and group them as ``unitrack view --group-by`` does
(:func:`unitrack.persistence.catalog.group_members`), so a group's runs, mean and std are the same everywhere.

Example:
    >>> from unitrack.persistence.series import Series
    >>> s = Series("u1", "loss", (0, 1, 2), (1.0, 0.5, 0.25), None, 3)
    >>> fig = line_figure([s], {"u1": {"name": "<b>run</b>", "parameters.lr": 0.1}}, "loss", legend="lr={lr}")
    >>> fig["data"][0]["name"], fig["data"][0]["y"]
    ('lr=0.1', [1.0, 0.5, 0.25])
    >>> fig["data"][0]["meta"]["run"]
    '&lt;b&gt;run&lt;/b&gt;'
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError
from unitrack.persistence import catalog

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from unitrack.persistence.series import Series

#: A run catalog row: column -> value.
Row = Mapping[str, Any]
_PARAMETERS = "parameters."

__all__ = [
    "BANDS",
    "X_AXES",
    "escape",
    "group_keys",
    "group_runs",
    "group_table",
    "legend_label",
    "legend_values",
    "line_figure",
    "parcoords_figure",
    "scatter_figure",
    "smooth",
]

#: What the x axis can show.
X_AXES = ("step", "relative", "wall")
#: The band drawn around a group's mean.
BANDS = ("std", "stderr", "minmax", "none")
#: plotly.js's default colour cycle (D3's category10).
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: The group-by choice meaning "every varying parameter except seeds".
ALL_BUT_SEED = "*-seed"
_SEED = re.compile(r"(^|[._-])(seed|random_state|rng)($|[._-])", re.IGNORECASE)
#: Grid points a group's runs are aligned on when they do not share their steps.
GROUP_GRID = 1000


def escape(text: Any) -> str:
    """Text made literal for plotly.js labels (``&``, ``<``, ``>`` as entities)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def legend_label(fmt: str | None, values: Mapping[str, Any]) -> str:
    """Fill ``fmt`` (``'lr={lr} seed={seed}'``, ``'{name}'``) from ``values``; names only, never attributes.

    A field may carry a format spec (``{lr:.0e}``); a missing name shows as ``?``.

    Raises:
        ConfigError: for a malformed format string.
    """
    if not fmt:
        return str(values.get("name", ""))
    out = []
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ConfigError(f"Legend format {fmt!r} is malformed ({exc}); write fields as {{name}}.") from exc
    for literal, field, spec, _conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        value = values.get(field, "?")
        if spec:
            try:
                out.append(format(value, spec))
                continue
            except (TypeError, ValueError):
                pass
        out.append(_cell(value))
    return "".join(out)


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (NaN points skipped)."""
    if weight <= 0:
        return list(values)
    if weight >= 1:
        weight = 0.999
    out = []
    last, count = 0.0, 0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight**count))
    return out


def _finite(values: Sequence[Any]) -> list[Any]:
    """Values as a list, with None for NaN and infinities (gaps in a plotly line)."""
    import numpy as np

    try:
        array = np.asarray(values, dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        return [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in values]
    bad = ~np.isfinite(array)
    if not bad.any():
        return list(values)
    out: list[Any] = array.tolist()
    for index in np.flatnonzero(bad).tolist():
        out[index] = None
    return out


def _iso(seconds: npt.NDArray[np.float64]) -> list[str]:
    import numpy as np

    return np.datetime_as_string((seconds * 1000).astype("datetime64[ms]"), unit="ms").tolist()  # type: ignore[no-any-return]


def _x_of(series: Series, x: str) -> list[Any] | None:
    """The x values of a series (None when it has no times and x asks for them)."""
    if x == "step":
        return list(series.steps)
    if series.times is None or not series.times:
        return None
    first = series.times[0]
    if x == "relative":
        return [t - first for t in series.times]
    return list(series.times)


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def group_keys(rows: Sequence[Row], group_by: Sequence[str] | None) -> list[str]:
    """The parameter columns to group by: those named (bare or dotted), or for ``'*-seed'`` every parameter
    that varies between ``rows`` except seeds.

    Raises:
        UnknownKeyError: for a name that is no column, naming the closest ones.
        ConfigError: for a name that is not a parameter.
    """
    if not group_by:
        return []
    columns = _columns(rows)
    if ALL_BUT_SEED in group_by:
        keys = []
        for column in columns:
            if not column.startswith(_PARAMETERS) or _SEED.search(column[len(_PARAMETERS) :]):
                continue
            if len({json.dumps(r.get(column), sort_keys=True, default=str) for r in rows}) > 1:
                keys.append(column)
        return keys
    from unitrack.persistence.filters import KeySpace

    space = KeySpace(columns)
    keys = []
    for name in group_by:
        if not name:
            continue
        column = space.resolve(name, "group-by key")
        if not column.startswith(_PARAMETERS):
            raise ConfigError(f"group by takes parameters; {name!r} is the {column!r} column.")
        keys.append(column)
    return list(dict.fromkeys(keys))


def _label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return " ".join(f"{k[len(_PARAMETERS) :]}={_cell(values.get(k, '?'))}" for k in keys) or "all runs"


def groups_of(rows: Sequence[Row], group_by: Sequence[str] | None) -> list[tuple[str, list[Row]]]:
    """Runs grouped by the values of ``group_by`` (see :func:`group_keys`): ``(label, rows)`` in run order.

    The groups are ``unitrack view --group-by OTHERS``'s, OTHERS being every other parameter
    (:func:`unitrack.persistence.catalog.group_members`).
    """
    keys = group_keys(rows, group_by)
    columns = _columns(rows)
    over = [c for c in columns if c.startswith(_PARAMETERS) and c not in keys]
    return [(_label(values, keys), members) for values, members in catalog.group_members(rows, over, columns)]


def group_runs(runs: Mapping[str, Row], group_by: Sequence[str] | None) -> dict[str, list[str]]:
    """:func:`groups_of` by uid: label -> uids, in run order.

    Args:
        runs: uid -> catalog row.
        group_by: parameter names, or ``['*-seed']``.
    """
    rows = [{**row, "uid": uid} for uid, row in runs.items()]
    return {label: [str(r["uid"]) for r in members] for label, members in groups_of(rows, group_by)}


def legend_values(uid: str, row: Row) -> dict[str, Any]:
    """What a legend format string may name: the run's parameters by their short (and dotted) names, ``name``
    and ``uid``."""
    values: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith(_PARAMETERS):
            values.setdefault(key[len(_PARAMETERS) :], value)
            values[key] = value
    values.update(name=row.get("name", uid), uid=uid)
    return values


def _aligned(
    xs: list[list[float]], ys: list[list[float]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The runs' values on one x grid: their shared x when there are few, else an even grid (interpolated;
    NaN outside a run's own range)."""
    import numpy as np

    union = np.unique(np.concatenate([np.asarray(x, dtype=np.float64) for x in xs]))
    if len(union) > GROUP_GRID * 2:
        union = np.linspace(union[0], union[-1], GROUP_GRID)
    out = np.full((len(xs), len(union)), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
        if len(xa) == 0:
            continue
        order = np.argsort(xa, kind="stable")
        xa, ya = xa[order], ya[order]
        inside = (union >= xa[0]) & (union <= xa[-1])
        exact = np.searchsorted(xa, union[inside])
        exact = np.minimum(exact, len(xa) - 1)
        hit = xa[exact] == union[inside]
        vals = np.interp(union[inside], xa, ya)
        vals[hit] = ya[exact[hit]]  # a run's own points are its exact values
        out[i, inside] = vals
    return union, out


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def line_figure(
    series: Sequence[Series],
    runs: Mapping[str, Mapping[str, Any]],
    metric: str,
    *,
    x: str = "step",
    smoothing: float = 0.0,
    log_y: bool = False,
    legend: str | None = None,
    group_by: Sequence[str] | None = None,
    band: str = "std",
    x_range: Sequence[float] | None = None,
    binary: bool = False,
) -> dict[str, Any]:
    """The chart of one metric: a line per run, or per group (mean, band and count).

    Args:
        series: The metric's series (others are ignored), e.g. from ``Protocol.find_series``.
        runs: uid -> the run's catalog row (``name``, ``parameters.<key>``...) for the legend, hover and
            groups.
        metric: The metric drawn.
        x: ``'step'``, ``'relative'`` (seconds since the run's first point) or ``'wall'`` (time of day).
        smoothing: TensorBoard's smoothing weight in [0, 1).
        log_y: A logarithmic y axis.
        legend: A format string over the run's parameters and ``name``/``uid`` (``'lr={lr} seed={seed}'``).
        group_by: Parameter names (or ``['*-seed']``): one line per group, the mean of its runs.
        band: Around a group's mean: ``'std'``, ``'stderr'``, ``'minmax'`` or ``'none'``.
        x_range: The x range shown (a zoom); None lets plotly fit the data.
        binary: Send long numeric x and y as plotly.js typed arrays (base64 float64: exact, smaller and
            much faster to encode and parse than JSON numbers); for the browser, not for notebooks.

    Returns:
        A plotly figure as plain data, with ``layout.meta`` holding ``{'groups': [...]}`` when grouped.

    Raises:
        ConfigError: for an unknown ``x`` or ``band``.
    """
    if x not in X_AXES:
        raise ConfigError(f"x = {x!r}; use one of {', '.join(X_AXES)}.")
    if band not in BANDS:
        raise ConfigError(f"band = {band!r}; use one of {', '.join(BANDS)}.")
    mine = [s for s in series if s.metric == metric and s.uid in runs]
    x_used = x
    if x != "step" and any(s.times is None for s in mine):
        x_used = "step"
    data: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"metric": metric, "x": x_used}
    if group_by:
        charted = {s.uid for s in mine}
        groups = group_runs({uid: runs[uid] for uid in runs if uid in charted}, group_by)
        meta["groups"] = []
        by_uid = {s.uid: s for s in mine}
        for index, (label, uids) in enumerate(groups.items()):
            color = COLORS[index % len(COLORS)]
            members = [by_uid[u] for u in uids if u in by_uid]
            xs = [_x_of(s, x_used) or [] for s in members]
            ys = [smooth(s.values, smoothing) for s in members]
            grid, values = _aligned(xs, ys)
            import numpy as np

            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a grid point no run reaches: NaN
                    count = np.sum(~np.isnan(values), axis=0)
                    mean = np.nanmean(values, axis=0)
                    std = np.nanstd(values, axis=0, ddof=1) if len(members) > 1 else np.zeros_like(mean)
                    low, high = mean - std, mean + std
                    if band == "stderr":
                        err = std / np.sqrt(np.maximum(count, 1))
                        low, high = mean - err, mean + err
                    elif band == "minmax":
                        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
            xs_out: list[Any] = _iso(grid) if x_used == "wall" else grid.tolist()
            name = escape(f"{label} (n={len(members)})")
            if band != "none" and len(members) > 1:
                common = {
                    "type": "scatter",
                    "mode": "lines",
                    "x": xs_out,
                    "legendgroup": name,
                    "showlegend": False,
                }
                data.append(
                    {
                        **common,
                        "y": _finite(high.tolist()),
                        "line": {"width": 0, "color": color},
                        "hoverinfo": "skip",
                    }
                )
                data.append(
                    {
                        **common,
                        "y": _finite(low.tolist()),
                        "line": {"width": 0, "color": color},
                        "fill": "tonexty",
                        "fillcolor": _rgba(color, 0.2),
                        "hoverinfo": "skip",
                        "meta": {"role": "band", "group": escape(label), "band": band},
                    }
                )
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": name,
                    "legendgroup": name,
                    "x": xs_out,
                    "y": _finite(mean.tolist()),
                    "customdata": count.tolist(),
                    "line": {"color": color, "width": 2},
                    "meta": {"role": "mean", "group": escape(label), "count": len(members)},
                    "hovertemplate": "<b>%{meta.group}</b> mean of %{customdata} run(s)<br>"
                    + ("step" if x_used == "step" else "time")
                    + " %{x}<br>%{y:.6g}<extra></extra>",
                }
            )
            meta["groups"].append({"label": label, "count": len(members), "uids": uids})
    else:
        for index, s in enumerate(mine):
            run = runs[s.uid]
            values_for_legend = legend_values(s.uid, run)
            color = COLORS[index % len(COLORS)]
            xs_raw = _x_of(s, x_used) or []
            xs_out = _iso(_np_array(xs_raw)) if x_used == "wall" else xs_raw
            trace: dict[str, Any] = {
                "type": "scatter",
                "mode": "lines",
                "name": escape(legend_label(legend, values_for_legend)),
                "x": xs_out,
                "y": _finite(smooth(s.values, smoothing)),
                "line": {"color": color, "width": 1.5},
                "meta": {
                    "uid": s.uid,
                    "run": escape(run.get("name", s.uid)),
                    "points": len(s),
                    "total": s.total,
                },
                "hovertemplate": "<b>%{meta.run}</b><br>"
                + ("step" if x_used == "step" else "time")
                + " %{x}<br>%{y:.6g}<extra></extra>",
            }
            if smoothing > 0:
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "x": xs_out,
                        "y": _finite(s.values),
                        "line": {"color": color, "width": 1},
                        "opacity": 0.25,
                        "showlegend": False,
                        "hoverinfo": "skip",
                        "meta": {"uid": s.uid, "role": "raw"},
                    }
                )
            data.append(trace)
    titles = {"step": "step", "relative": "time since the run's first point (s)", "wall": "time"}
    layout: dict[str, Any] = {
        "title": {"text": escape(metric)},
        "xaxis": {"title": {"text": titles[x_used]}, "type": "date" if x_used == "wall" else "linear"},
        "yaxis": {"title": {"text": escape(metric)}, "type": "log" if log_y else "linear"},
        "hovermode": "closest",
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "legend": {"orientation": "v"},
        "uirevision": escape(metric),
        "meta": meta,
    }
    if x_range is not None and x_used == "step":
        layout["xaxis"]["range"] = list(x_range)
        layout["xaxis"]["autorange"] = False
    if x_used != x:
        layout["annotations"] = [
            {
                "text": "this backend stores no times: x is the step",
                "xref": "paper",
                "yref": "paper",
                "x": 1,
                "y": 1.08,
                "showarrow": False,
            }
        ]
    if binary:
        for trace in data:
            for key in ("x", "y"):
                trace[key] = typed_array(trace[key])
    return {"data": data, "layout": layout}


def typed_array(values: Any, minimum: int = 32) -> Any:
    """A list of numbers (None for a gap) as plotly.js's typed-array form ``{'dtype': 'f8', 'bdata': ...}``;
    other lists (text, dates) and lists shorter than ``minimum`` as they are."""
    import base64

    import numpy as np

    if not isinstance(values, list) or len(values) < minimum or isinstance(values[0], (str, bool)):
        return values
    try:
        array = np.asarray(values, dtype="<f8")  # None becomes NaN: a gap
    except (TypeError, ValueError):
        return values
    return {"dtype": "f8", "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def _np_array(values: Sequence[float]) -> npt.NDArray[np.float64]:
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def group_table(
    rows: Sequence[Row], group_by: Sequence[str] | None, metrics: Sequence[str]
) -> dict[str, Any]:
    """Each group's mean ± std (and count) of each metric's latest value: ``unitrack view --group-by``'s
    statistics (:func:`unitrack.persistence.catalog.group_rows`) for the groups of :func:`groups_of`.

    Returns:
        ``{'columns': ['group', 'runs', *metrics], 'keys': [parameter, ...],
        'rows': [[label, n, {'mean': m, 'std': s, 'n': k}, ...]]}`` (``std`` None for a single run).
    """
    keys = group_keys(rows, group_by or [ALL_BUT_SEED])
    columns = _columns(rows)
    columns += [f"metrics.{m}" for m in metrics if f"metrics.{m}" not in columns]
    over = [c for c in columns if c.startswith(_PARAMETERS) and c not in keys]
    out = []
    for grouped in catalog.group_rows(rows, over, columns, counts=True):
        row: list[Any] = [_label(grouped, keys), grouped["n"]]
        for metric in metrics:
            column = f"metrics.{metric}"
            row.append(
                {"mean": grouped[column], "std": grouped[f"{column}.std"], "n": grouped[f"{column}.n"]}
            )
        out.append(row)
    return {
        "columns": ["group", "runs", *metrics],
        "keys": [k[len(_PARAMETERS) :] for k in keys],
        "rows": out,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        return value.item()
    return value


#: Viridis at six stops (plotly's "Viridis"), interpolated for the parallel coordinates' colours.
_VIRIDIS = ((68, 1, 84), (65, 68, 135), (42, 120, 142), (34, 168, 132), (122, 209, 81), (253, 231, 37))
#: Colour bins of the parallel coordinates (one trace each: thousands of runs stay a handful of SVG paths).
_BINS = 12


def _viridis(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True))
    return f"rgb({r},{g},{b})"


def _axis(label: str, values: list[Any]) -> tuple[list[float], list[tuple[float, str]]] | None:
    """A parallel axis: each run's position in [0, 1] and the ticks ``(position, text)``."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            return None
        low, high = min(floats), max(floats)
        span = high - low
        positions = [0.5 if span == 0 else (v - low) / span for v in floats]
        ticks = [(0.0, f"{low:.4g}"), (1.0, f"{high:.4g}")] if span else [(0.5, f"{low:.4g}")]
        return positions, ticks
    categories = sorted({_cell(v) for v in values})
    step = 1 / (len(categories) - 1) if len(categories) > 1 else 0.0
    at = {c: (i * step if len(categories) > 1 else 0.5) for i, c in enumerate(categories)}
    return [at[_cell(v)] for v in values], [(at[c], c) for c in categories[:20]]


def parcoords_figure(rows: Sequence[Row], metric: str, params: Sequence[str]) -> dict[str, Any]:
    """Parallel coordinates: an axis per parameter and one for ``metric``, a line per run coloured by it.

    Drawn as plain SVG lines (no WebGL, so it draws in every browser, headless ones and the offline report
    included); hovering a line's point names the run.
    """
    column = f"metrics.{metric}"
    kept = [r for r in rows if _is_number(r.get(column))]
    names = [escape(r.get("name")) for r in kept]
    axes: list[tuple[str, list[float], list[tuple[float, str]]]] = []
    for key in params:
        if not any(f"{_PARAMETERS}{key}" in r for r in kept):
            continue
        axis = _axis(key, [_value(r.get(f"{_PARAMETERS}{key}")) for r in kept])
        if axis is not None:
            axes.append((key, *axis))
    values = [float(r[column]) for r in kept]
    if not values:
        return {"data": [], "layout": {"title": {"text": escape(f"no run has {metric}")}}}
    metric_axis = _axis(metric, values)
    assert metric_axis is not None  # noqa: S101 - finite numbers by construction
    axes.append((metric, *metric_axis))
    low, high = min(values), max(values)
    bins: dict[int, dict[str, list[Any]]] = {}
    for run, value in enumerate(values):
        t = 0.5 if high == low else (value - low) / (high - low)
        b = min(int(t * _BINS), _BINS - 1)
        trace = bins.setdefault(b, {"x": [], "y": [], "text": []})
        for index, (_, positions, _) in enumerate(axes):
            trace["x"].append(index)
            trace["y"].append(positions[run])
            trace["text"].append(f"{names[run]}<br>{escape(metric)} {value:.6g}")
        trace["x"].append(None)
        trace["y"].append(None)
        trace["text"].append(None)
    data: list[dict[str, Any]] = []
    for b in sorted(bins):
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": bins[b]["x"],
                "y": bins[b]["y"],
                "text": bins[b]["text"],
                "line": {"color": _viridis((b + 0.5) / _BINS), "width": 1.5},
                "marker": {"size": 4, "color": _viridis((b + 0.5) / _BINS)},
                "opacity": 0.7,
                "showlegend": False,
                "hovertemplate": "%{text}<extra></extra>",
            }
        )
    data.append(
        {
            "type": "scatter",
            "mode": "markers",
            "x": [0, 0],
            "y": [0, 0],
            "opacity": 0,
            "hoverinfo": "skip",
            "showlegend": False,
            "marker": {
                "color": [low, high],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": escape(metric)}},
            },
        }
    )
    annotations: list[dict[str, Any]] = []
    shapes = []
    for index, (label, _, ticks) in enumerate(axes):
        shapes.append({"type": "line", "x0": index, "x1": index, "y0": 0, "y1": 1, "line": {"color": "#555"}})
        annotations.append(
            {
                "x": index,
                "y": 1.08,
                "text": f"<b>{escape(label)}</b>",
                "showarrow": False,
                "yanchor": "bottom",
            }
        )
        for position, text in ticks:
            annotations.append(
                {
                    "x": index,
                    "y": position,
                    "text": escape(text),
                    "showarrow": False,
                    "xanchor": "right",
                    "xshift": -4,
                    "font": {"size": 10, "color": "#555"},
                }
            )
    return {
        "data": data,
        "layout": {
            "title": {"text": escape(f"{metric} against the parameters ({len(values)} runs)")},
            "xaxis": {"visible": False, "range": [-0.5, len(axes) - 0.5]},
            "yaxis": {"visible": False, "range": [-0.05, 1.15]},
            "shapes": shapes,
            "annotations": annotations,
            "hovermode": "closest",
            "margin": {"l": 40, "r": 40, "t": 60, "b": 20},
            "meta": {"runs": len(values), "axes": [escape(a[0]) for a in axes]},
        },
    }


def scatter_figure(rows: Sequence[Row], param: str, metric: str) -> dict[str, Any]:
    """One point per run: ``param`` against the latest ``metric`` (hover names the run)."""
    pcol, mcol = f"parameters.{param}", f"metrics.{metric}"
    xs, ys, names = [], [], []
    for row in rows:
        name, xv, yv = row.get("name"), _value(row.get(pcol)), _value(row.get(mcol))
        if xv is None or not _is_number(yv):
            continue
        xs.append(xv if isinstance(xv, (int, float)) and not isinstance(xv, bool) else escape(_cell(xv)))
        ys.append(float(yv))
        names.append(escape(name))
    if not ys:
        return {"data": [], "layout": {"title": {"text": escape(f"no run has {param} and {metric}")}}}
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": xs,
                "y": ys,
                "text": names,
                "marker": {"size": 9, "color": COLORS[0]},
                "hovertemplate": "<b>%{text}</b><br>"
                + escape(param)
                + " %{x}<br>"
                + escape(metric)
                + " %{y:.6g}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": escape(f"{metric} against {param}")},
            "xaxis": {"title": {"text": escape(param)}},
            "yaxis": {"title": {"text": escape(metric)}},
            "hovermode": "closest",
        },
    }
