"""Aggregators: how repeated values (timers, metadata) are accumulated (track's ``track.aggregators``).

Each aggregator has a JSON form (``to_json()`` / :func:`aggregator_from_json`) so backends can store its state
and the wire can carry it. ``Aggregator.lazy(...)`` returns a factory, as track's API expects.

Example:
    >>> agg = StatAggregator(skip_obs=2)
    >>> for x in [100.0, 50.0, 1.0, 2.0, 3.0]:
    ...     agg += x
    >>> agg.val["avg"], agg.val["min"], agg.val["count"]
    (2.0, 1.0, 3)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from unitrack.errors import SchemaError

__all__ = [
    "Aggregator",
    "RingAggregator",
    "StatAggregator",
    "TimeSeriesAggregator",
    "ValueAggregator",
    "aggregator_from_json",
]


class Aggregator:
    """Base class: ``append(x)`` (or ``+=``) accumulates, ``val`` reads the accumulated value."""

    kind: ClassVar[str] = "base"

    def append(self, other: Any) -> None:
        """Accumulate one observation."""
        raise NotImplementedError

    def __iadd__(self, other: Any) -> Aggregator:
        self.append(other)
        return self

    @property
    def val(self) -> Any:
        """The accumulated value."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The constructor arguments, as plain data: enough to build an empty aggregator of this kind."""
        return {"kind": self.kind}

    def to_json(self, short: bool = False) -> dict[str, Any]:
        """Return the full state (``short=False``) or a summary for display (``short=True``)."""
        raise NotImplementedError

    @classmethod
    def lazy(cls, *args: Any, **kwargs: Any) -> Callable[[], Aggregator]:
        """Return a factory that builds ``cls(*args, **kwargs)`` when called."""
        return lambda: cls(*args, **kwargs)


class ValueAggregator(Aggregator):
    """Keep the last value."""

    kind = "value"

    def __init__(self, val: Any = None) -> None:
        self._val = val

    def append(self, other: Any) -> None:
        self._val = other

    @property
    def val(self) -> Any:
        return self._val

    def to_json(self, short: bool = False) -> dict[str, Any]:
        return {"kind": self.kind, "val": self._val}


class TimeSeriesAggregator(Aggregator):
    """Keep every value; the short JSON form shows the last 20."""

    kind = "series"

    def __init__(self) -> None:
        self._values: list[Any] = []

    def append(self, other: Any) -> None:
        self._values.append(other)

    @property
    def val(self) -> list[Any]:
        return self._values

    def to_json(self, short: bool = False) -> dict[str, Any]:
        return {"kind": self.kind, "values": self._values[-20:] if short else list(self._values)}


class RingAggregator(Aggregator):
    """Keep the last ``n`` values."""

    kind = "ring"

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise SchemaError(f"RingAggregator size {n!r} must be an int >= 1.")
        self._n = n
        self._values: deque[Any] = deque(maxlen=n)

    def append(self, other: Any) -> None:
        self._values.append(other)

    @property
    def val(self) -> list[Any]:
        return list(self._values)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self._n}

    def to_json(self, short: bool = False) -> dict[str, Any]:
        return {"kind": self.kind, "n": self._n, "values": list(self._values)}


class StatAggregator(Aggregator):
    """Streaming count, sum, mean, standard deviation, min and max, after dropping the first observations.

    Exactly ``skip_obs`` observations are dropped (track dropped one fewer from min/max than from the mean).
    The first observations are typically warm-up (compilation, cache misses) and would skew timings. ``sd`` is
    the population standard deviation, as track reported it (25.9792 for 10..99).

    Example:
        >>> agg = StatAggregator(skip_obs=10)
        >>> for i in range(100):
        ...     agg.append(i)
        >>> agg.avg, round(agg.sd, 4), agg.min, agg.total
        (54.5, 25.9792, 10.0, 4905.0)
    """

    kind = "stat"

    def __init__(self, skip_obs: int = 10) -> None:
        if not isinstance(skip_obs, int) or isinstance(skip_obs, bool) or skip_obs < 0:
            raise SchemaError(f"StatAggregator skip_obs {skip_obs!r} must be an int >= 0.")
        self.skip_obs = skip_obs
        self.skipped = 0
        self.count = 0
        self.sum = 0.0
        self.sum_sq = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.first: float | None = None
        self._last: float | None = None

    def append(self, other: Any) -> None:
        x = float(other)
        self._last = x
        if self.first is None:
            self.first = x
        if self.skipped < self.skip_obs:
            self.skipped += 1
            return
        self.count += 1
        self.sum += x
        self.sum_sq += x * x
        self.min = min(self.min, x)
        self.max = max(self.max, x)

    @property
    def avg(self) -> float:
        """Mean of the kept observations (NaN before any)."""
        return self.sum / self.count if self.count else math.nan

    @property
    def sd(self) -> float:
        """Population standard deviation of the kept observations, as track computed it (NaN before any)."""
        if not self.count:
            return math.nan
        var = (self.sum_sq - self.sum * self.sum / self.count) / self.count
        return math.sqrt(max(var, 0.0))

    @property
    def total(self) -> float:
        """Sum of the kept observations (track's ``total``; also ``sum``)."""
        return self.sum

    @property
    def last(self) -> float | None:
        """The last observation appended (kept or skipped), None before any."""
        return self._last

    @property
    def val(self) -> dict[str, Any]:
        return {"avg": self.avg, "min": self.min, "max": self.max, "sd": self.sd, "count": self.count}

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "skip_obs": self.skip_obs}

    def to_json(self, short: bool = False) -> dict[str, Any]:
        if short:
            return self.val
        return {
            "kind": self.kind,
            "skip_obs": self.skip_obs,
            "skipped": self.skipped,
            "count": self.count,
            "sum": self.sum,
            "sum_sq": self.sum_sq,
            "min": self.min,
            "max": self.max,
            "first": self.first,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatAggregator:
        """Rebuild from :meth:`to_json` output."""
        agg = cls(int(data.get("skip_obs", 10)))
        agg.skipped = int(data.get("skipped", 0))
        agg.count = int(data.get("count", 0))
        agg.sum = float(data.get("sum", 0.0))
        agg.sum_sq = float(data.get("sum_sq", 0.0))
        agg.min = float(data.get("min", math.inf))
        agg.max = float(data.get("max", -math.inf))
        first = data.get("first")
        agg.first = None if first is None else float(first)
        return agg


_KINDS: dict[str, type[Aggregator]] = {
    "value": ValueAggregator,
    "series": TimeSeriesAggregator,
    "ring": RingAggregator,
    "stat": StatAggregator,
}


def aggregator_from_json(data: dict[str, Any]) -> Aggregator:
    """Rebuild an aggregator from its ``spec()`` or ``to_json()`` form.

    Raises:
        SchemaError: for an unknown kind.
    """
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "stat":
        return StatAggregator.from_json(data)
    if kind == "value":
        return ValueAggregator(data.get("val"))
    if kind == "series":
        series = TimeSeriesAggregator()
        series._values = list(data.get("values", []))
        return series
    if kind == "ring":
        ring = RingAggregator(int(data.get("n", 1)))
        ring._values.extend(data.get("values", []))
        return ring
    raise SchemaError(f"Unknown aggregator {data!r}; known kinds: {', '.join(sorted(_KINDS))}.")
