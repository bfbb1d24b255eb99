"""Reading metric series for charts: chosen metrics of chosen trials, a step range, downsampled at the source.

:meth:`~unitrack.persistence.protocol.Protocol.find_series` is the storage primitive behind every chart: it
reads only the metrics asked for, of the trials asked for (never a whole Trial with every series), keeps the
points whose step lies in ``[step_min, step_max]``, and when a series has more than ``max_points`` points
returns at most ``max_points`` of them, chosen on the backend (or the server) so that 100 runs of 100,000
points cost the wire and the browser what 100 runs of 2,000 do.

Every backend returns the same points for the same request, because every backend selects them with the
rules below (the SQL backend in SQL, the others with :func:`downsample`); the contract suite checks each
backend against :func:`series_of_metric` applied to the full series.

Rules, for one series of ``n`` points:

- the x of a point is its step; a point logged without a step is drawn at its position in the series (0, 1,
  ...); points are ordered by x, ties in the order they were first logged;
- ``step_min``/``step_max`` keep the points with ``step_min <= x <= step_max``;
- ``minmax`` (the default): when ``n > max_points``, the points are split into ``b = (max_points - 2) // 2``
  buckets of equal counts (point ``i`` in bucket ``i * b // n``) and each bucket keeps its smallest and its
  largest value (the first such point on ties), plus the series' first and last points, so peaks are never
  lost and the last value drawn is the last value stored;
- ``lttb``: Largest-Triangle-Three-Buckets (Steinarsson, 2013) with ``max_points`` points, first and last
  kept; smoother-looking lines, a little slower;
- values are exact stored values (nothing is averaged), so hovering a point shows what was logged.

Example:
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Trial
    >>> p = get_protocol("ephemeral://")
    >>> p.strict = False
    >>> t = p.new_trial(Trial(name="run"))
    >>> for step in range(1000):
    ...     p.log_trial_metrics(t, step=step, loss=1 / (step + 1))
    >>> [s] = p.find_series(SeriesRequest(uids=(t.uid,), metrics=("loss",), max_points=100))
    >>> len(s.steps), s.total, s.steps[-1], s.values[0]
    (98, 1000, 999, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unitrack.errors import SchemaError
from unitrack.persistence.structure import Metric, check_metric_name

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from unitrack.persistence.structure import Trial

__all__ = [
    "METHODS",
    "Series",
    "SeriesRequest",
    "downsample",
    "select",
    "select_points",
    "series_from_json",
    "series_from_trials",
    "series_of_metric",
    "series_to_json",
]

#: Downsampling methods a request may name.
METHODS = ("minmax", "lttb")
#: The fewest points a downsampled series may be asked for (first, last, and one bucket's min and max).
MIN_POINTS = 4
#: The most trials and metrics one request may name (bounded work per call, e.g. from the server).
MAX_UIDS = 10_000
MAX_METRICS = 256


def _bound(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SchemaError(f"SeriesRequest.{name} = {value!r}; give a number or None.")
    return float(value)


@dataclass(frozen=True)
class SeriesRequest:
    """What :meth:`Protocol.find_series` reads.

    Args:
        uids: The trials, by uid (unknown uids are skipped, not an error: a chart of runs one of which was
            deleted still draws the others).
        metrics: The metric names; a trial without one of them returns no series for it.
        step_min: Keep points with x >= step_min (None: from the start).
        step_max: Keep points with x <= step_max (None: to the end).
        max_points: At most this many points per series (None: every point), at least 4.
        method: ``"minmax"`` or ``"lttb"``.

    Raises:
        SchemaError: for a malformed field.
    """

    uids: tuple[str, ...]
    metrics: tuple[str, ...]
    step_min: float | None = None
    step_max: float | None = None
    max_points: int | None = None
    method: str = "minmax"

    def __post_init__(self) -> None:
        uids, metrics = self.uids, self.metrics
        if isinstance(uids, str) or not isinstance(uids, Iterable):
            raise SchemaError(f"SeriesRequest.uids must be a list of trial uids, not {uids!r}.")
        if isinstance(metrics, str) or not isinstance(metrics, Iterable):
            raise SchemaError(f"SeriesRequest.metrics must be a list of metric names, not {metrics!r}.")
        uids, metrics = tuple(uids), tuple(metrics)
        if len(uids) > MAX_UIDS or len(metrics) > MAX_METRICS:
            raise SchemaError(
                f"SeriesRequest names {len(uids)} trials and {len(metrics)} metrics; the limits are "
                f"{MAX_UIDS} and {MAX_METRICS} per request. Split it."
            )
        for uid in uids:
            if not isinstance(uid, str) or not uid or len(uid) > 256:
                raise SchemaError(f"SeriesRequest.uids holds {uid!r}; uids are non-empty strings.")
        for metric in metrics:
            check_metric_name(metric)
        object.__setattr__(self, "uids", tuple(dict.fromkeys(uids)))
        object.__setattr__(self, "metrics", tuple(dict.fromkeys(metrics)))
        object.__setattr__(self, "step_min", _bound("step_min", self.step_min))
        object.__setattr__(self, "step_max", _bound("step_max", self.step_max))
        points = self.max_points
        if points is not None and (
            isinstance(points, bool) or not isinstance(points, int) or points < MIN_POINTS
        ):
            raise SchemaError(
                f"SeriesRequest.max_points = {points!r}; give an int >= {MIN_POINTS}, or None for every point."
            )
        if self.method not in METHODS:
            raise SchemaError(f"SeriesRequest.method = {self.method!r}; use one of {', '.join(METHODS)}.")


@dataclass(frozen=True)
class Series:
    """The points of one metric of one trial, as :meth:`Protocol.find_series` returns them.

    Attributes:
        uid: The trial's uid.
        metric: The metric's name.
        steps: The x of each point (its step, or its position for a point logged without one).
        values: The stored values.
        times: Wall-clock time (seconds since the epoch) each point was logged, where the backend stores it
            (``hdf5://``), else None.
        total: How many points of the series lie in the step range (before downsampling).
    """

    uid: str
    metric: str
    steps: tuple[int | float, ...]
    values: tuple[int | float, ...]
    times: tuple[float, ...] | None = None
    total: int = 0

    @property
    def downsampled(self) -> bool:
        """Whether points were left out."""
        return len(self.steps) < self.total

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        last = f", last=({self.steps[-1]!r}, {self.values[-1]!r})" if self.steps else ""
        return (
            f"Series(uid={self.uid!r}, metric={self.metric!r}, points={len(self.steps)}/{self.total}{last})"
        )


# ---------------------------------------------------------------------------------------------- selection
def _minmax(values: npt.NDArray[np.float64], max_points: int) -> npt.NDArray[np.int64]:
    """Indices kept by ``minmax`` (see the module docstring), for ``len(values) > max_points``."""
    import numpy as np

    n = len(values)
    buckets = (max_points - 2) // 2
    # Bucket b holds the points i with i * buckets // n == b: it starts at ceil(b * n / buckets). Buckets differ
    # in size by one at most, so they are the rows of a (buckets x widest) grid, short rows padded.
    starts = -((-np.arange(buckets, dtype=np.int64) * n) // buckets)
    counts = np.diff(np.append(starts, n))
    columns = np.arange(int(counts.max()), dtype=np.int64)
    grid = starts[:, None] + columns[None, :]
    padded = columns[None, :] >= counts[:, None]
    grid[padded] = n - 1  # any real point: the padding cell's value is overwritten below
    short = counts < len(columns)  # rows whose last cell is padding
    low = values[grid]
    if np.isnan(low).any():  # NaN counts as the largest for the minimum and the smallest for the maximum
        nan = np.isnan(low)
        high = np.where(nan, -np.inf, low)
        low[nan] = np.inf
    else:
        high = low.copy()
    low[short, -1] = np.inf
    high[short, -1] = -np.inf
    rows = np.arange(buckets)
    # argmin/argmax return the first of equal values, in x order: the first smallest and first largest point.
    keep = np.concatenate(
        ([0, n - 1], grid[rows, np.argmin(low, axis=1)], grid[rows, np.argmax(high, axis=1)])
    )
    keep.sort()
    return keep[np.concatenate(([True], keep[1:] != keep[:-1]))]  # np.unique, without its hashing cost


def _lttb(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], max_points: int) -> npt.NDArray[np.int64]:
    """Indices kept by Largest-Triangle-Three-Buckets, for ``len(x) > max_points``."""
    import numpy as np

    n = len(x)
    inner = max_points - 2
    # Bucket b (0..inner-1) holds points 1 + floor(b * (n - 2) / inner) .. (exclusive) the next start.
    edges = 1 + (np.arange(inner + 1, dtype=np.int64) * (n - 2)) // inner
    yy = np.where(np.isnan(y), 0.0, y)
    out = np.empty(max_points, dtype=np.int64)
    out[0], out[-1] = 0, n - 1
    chosen = 0
    for b in range(inner):
        lo, hi = edges[b], edges[b + 1]
        if b + 1 < inner:
            nlo, nhi = edges[b + 1], edges[b + 2]
            avg_x, avg_y = x[nlo:nhi].mean(), yy[nlo:nhi].mean()
        else:
            avg_x, avg_y = x[n - 1], yy[n - 1]
        ax, ay = x[chosen], yy[chosen]
        area = np.abs((ax - avg_x) * (yy[lo:hi] - ay) - (ax - x[lo:hi]) * (avg_y - ay))
        chosen = lo + int(np.argmax(area))
        out[b + 1] = chosen
    return out


def select(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], max_points: int | None, method: str = "minmax"
) -> npt.NDArray[np.int64]:
    """The indices of the points a series of (x sorted) points keeps (all of them when it fits)."""
    import numpy as np

    n = len(x)
    if max_points is None or n <= max_points:
        return np.arange(n, dtype=np.int64)
    if method == "lttb":
        return _lttb(x, y, max_points)
    return _minmax(y, max_points)


def select_points(
    steps: npt.NDArray[np.float64], values: npt.NDArray[np.float64], request: SeriesRequest
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
    """The positions of the points a request keeps, for one full series held as arrays.

    Args:
        steps: Each point's step, NaN for a point logged without one (in the order first logged).
        values: Each point's value.
        request: The range and downsampling to apply.

    Returns:
        ``(kept, x, total)``: positions into the arrays (sorted by x), every point's x (its step, or its
        position when it has none), and how many points lay in the range.
    """
    import numpy as np

    n = len(values)
    x = np.array(steps, dtype=np.float64)
    missing = np.isnan(x)
    if missing.any():
        x[missing] = np.flatnonzero(missing)
    y = np.asarray(values, dtype=np.float64)
    lo = -math.inf if request.step_min is None else request.step_min
    hi = math.inf if request.step_max is None else request.step_max
    if n < 2 or not bool(np.any(x[1:] < x[:-1])):
        # Sorted already (the usual case): the range is a slice, nothing is copied.
        first, last = int(np.searchsorted(x, lo, "left")), int(np.searchsorted(x, hi, "right"))
        chosen = select(x[first:last], y[first:last], request.max_points, request.method)
        return first + chosen, x, last - first
    order = np.argsort(x, kind="stable")
    xs = x[order]
    order = order[(xs >= lo) & (xs <= hi)]
    kept = order[select(x[order], y[order], request.max_points, request.method)]
    return kept, x, len(order)


def downsample(
    steps: Sequence[Any],
    values: Sequence[Any],
    times: Sequence[float] | None,
    request: SeriesRequest,
) -> tuple[list[Any], list[Any], list[float] | None, int]:
    """Apply a request's step range and downsampling to one full series, in the order first logged.

    Args:
        steps: Each point's step (None for a point logged without one).
        values: Each point's value.
        times: Each point's wall-clock time, or None.
        request: The range and downsampling to apply.

    Returns:
        ``(steps, values, times, total)``: the kept points sorted by x, and how many lay in the range.
    """
    import numpy as np

    n = len(values)
    raw = np.fromiter((math.nan if s is None else s for s in steps), dtype=np.float64, count=n)
    kept, _, total = select_points(raw, np.asarray(values, dtype=np.float64), request)
    at = kept.tolist()
    out_steps = [i if steps[i] is None else steps[i] for i in at]
    out_values = [values[i] for i in at]
    out_times = None if times is None else [times[i] for i in at]
    return out_steps, out_values, out_times, total


def series_of_metric(
    uid: str, metric: Metric, request: SeriesRequest, times: Sequence[float] | None = None
) -> Series:
    """The :class:`Series` a request gives for one full :class:`Metric` (the reference every backend meets)."""
    steps, values, out_times, total = downsample(metric.steps, metric.values, times, request)
    return Series(
        uid,
        metric.name,
        tuple(steps),
        tuple(values),
        None if out_times is None else tuple(out_times),
        total,
    )


def series_from_trials(trials: Iterable[Trial], request: SeriesRequest) -> list[Series]:
    """Answer a request from full trials: what backends holding every series in memory do.

    Series come in the order of ``request.uids``, then of ``request.metrics``.
    """
    by_uid = {t.uid: t for t in trials}
    out = []
    for uid in request.uids:
        trial = by_uid.get(uid)
        if trial is None:
            continue
        for name in request.metrics:
            metric = trial.metrics.get(name)
            if metric is not None and len(metric):
                series = series_of_metric(uid, metric, request)
                if series.total:  # no point in the step range: no series
                    out.append(series)
    return out


# --------------------------------------------------------------------------------------------- plain data
def _number_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf': JSON has no such numbers
    return value


def series_to_json(series: Series) -> dict[str, Any]:
    """Plain-data form of a series (for the wire and the web view's JSON API)."""
    values = list(series.values)
    if not all(map(math.isfinite, values)):  # map runs in C: the usual all-finite series costs one pass
        values = [_number_or_none(v) for v in values]
    return {
        "dtype": "series",
        "uid": series.uid,
        "metric": series.metric,
        "steps": list(series.steps),
        "values": values,
        "times": None if series.times is None else list(series.times),
        "total": series.total,
    }


def _number_from_json(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"a series value must be a number, not {value!r}")
    return value


def series_from_json(data: Mapping[str, Any]) -> Series:
    """Rebuild a series from :func:`series_to_json` output.

    Raises:
        SchemaError: for anything else.
    """
    try:
        if data.get("dtype") != "series":
            raise SchemaError(f"expected a series, not {data.get('dtype')!r}")
        steps = tuple(_number_from_json(s) for s in data["steps"])
        values = tuple(_number_from_json(v) for v in data["values"])
        raw_times = data.get("times")
        times = None if raw_times is None else tuple(float(_number_from_json(t)) for t in raw_times)
        if len(steps) != len(values) or (times is not None and len(times) != len(values)):
            raise SchemaError("a series has as many steps, values and times")
        return Series(str(data["uid"]), str(data["metric"]), steps, values, times, int(data["total"]))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"malformed series: {type(exc).__name__}: {exc}") from exc


def request_to_json(request: SeriesRequest) -> dict[str, Any]:
    """Plain-data form of a request."""
    return {
        "dtype": "series_request",
        "uids": list(request.uids),
        "metrics": list(request.metrics),
        "step_min": request.step_min,
        "step_max": request.step_max,
        "max_points": request.max_points,
        "method": request.method,
    }


def request_from_json(data: Any) -> SeriesRequest:
    """Rebuild a request from :func:`request_to_json` output.

    Raises:
        SchemaError: for anything else.
    """
    if not isinstance(data, Mapping) or data.get("dtype") != "series_request":
        raise SchemaError("argument 'request' must be a series request object")
    uids, metrics = data.get("uids"), data.get("metrics")
    if not isinstance(uids, list) or not isinstance(metrics, list):
        raise SchemaError("a series request's uids and metrics are lists")
    return SeriesRequest(
        uids=tuple(uids),
        metrics=tuple(metrics),
        step_min=data.get("step_min"),
        step_max=data.get("step_max"),
        max_points=data.get("max_points"),
        method=data.get("method", "minmax"),
    )
