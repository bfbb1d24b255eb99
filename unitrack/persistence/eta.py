"""Estimated time to the end of a loop, printed as track's ``show_eta`` printed it.

``EstimatedTime(timer, total)`` reads the mean time per iteration from a timer (any object with ``avg``, ``total``
and ``last``, such as the :class:`~unitrack.persistence.aggregators.StatAggregator` a ``chrono`` block yields)
and the number of iterations (one total, or one per nested loop). Lines have track's format::

    [ 3/10] | ETA     0.12 min  loss=0.5

and, when a step passes the total it was given (the total then grows to fit), ``| Elapsed`` and the minutes
spent so far instead of the ETA.

Example:
    >>> import io
    >>> from unitrack.persistence.aggregators import StatAggregator
    >>> timer = StatAggregator(skip_obs=0)
    >>> for _ in range(3):
    ...     timer.append(6.0)
    >>> out = io.StringIO()
    >>> EstimatedTime(timer, 10).show_eta(2, "loss=0.5", file=out)
    >>> out.getvalue()
    '[ 3/10] | ETA     0.70 min loss=0.5\\n'
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

__all__ = ["EstimatedTime", "throttled"]


def _as_list(item: int | Sequence[int]) -> list[int]:
    if isinstance(item, (list, tuple)):
        return [int(i) for i in item]
    return [int(item)]  # type: ignore[arg-type]  # an int (track accepted either)


def _seconds_per_step(timer: Any) -> float:
    avg = getattr(timer, "avg", math.nan)
    if avg is None or not math.isfinite(avg) or avg == 0:
        last = getattr(timer, "last", None)
        return float(last) if last is not None else 0.0
    return float(avg)


class EstimatedTime:
    """Estimate the time left in (nested) loops from a timer of one iteration.

    Args:
        timer: The per-iteration timer (``avg``, ``total``, ``last``), e.g. what ``with logger.chrono(n) as t``
            yields; may be set later.
        total: Iterations in total, or one count per nested loop (outermost first).
        start: The first step's number (steps are shown counted from 1).
        name: Shown after ``ETA``/``Elapsed``.
    """

    def __init__(
        self, timer: Any, total: int | Sequence[int], start: int = 0, name: str | None = None
    ) -> None:
        self.offset = 1 - start
        self.timer = timer
        self.totals = _as_list(total)
        self.name = name

    def set_totals(self, total: int | Sequence[int]) -> None:
        """Set the iteration count (one per nested loop)."""
        self.totals = _as_list(total)

    @property
    def total(self) -> int:
        """Iterations in all: the product of the loop counts."""
        return math.prod(self.totals)

    def _done(self, step: list[int]) -> int:
        """Iterations done after ``step`` (one index per loop, outermost first)."""
        done = 0
        for index, (i, _) in enumerate(zip(step, self.totals, strict=False)):
            inner = math.prod(self.totals[index + 1 :])
            done += i * inner if index < len(step) - 1 else (i + self.offset) * inner
        return done

    def estimated_time(self, step: int | Sequence[int], unit_s: float = 60.0) -> float:
        """Time left after ``step``, in ``unit_s`` (minutes by default)."""
        left = max(self.total - self._done(_as_list(step)), 0)
        return _seconds_per_step(self.timer) * left / unit_s

    def elapsed(self, unit_s: float = 60.0) -> float:
        """Time spent so far according to the timer, in ``unit_s`` (minutes by default)."""
        return float(getattr(self.timer, "total", 0.0) or 0.0) / unit_s

    def eta_line(self, step: int | Sequence[int], msg: str = "") -> str:
        """The line :meth:`show_eta` prints for ``step``."""
        steps = _as_list(step)
        while len(self.totals) < len(steps):
            self.totals.append(1)
        grown = False
        parts = []
        for index, i in enumerate(steps):
            total = self.totals[index]
            width = int(math.log10(max(total, 1))) + 1
            if i + self.offset > total:  # the loop ran longer than announced: the total grows to fit
                self.totals[index] = total = i + self.offset
                grown = True
            parts.append(f"[{i + self.offset:{width}d}/{total:{width}d}]")
        label = f" {self.name}" if self.name else ""
        if grown:
            parts.append(f" | Elapsed{label} {self.elapsed():8.2f} min ")
        else:
            parts.append(f" | ETA{label} {self.estimated_time(steps):8.2f} min ")
        parts.append(msg)
        return "".join(parts)

    def show_eta(self, step: int | Sequence[int], msg: str = "", file: IO[str] | None = None) -> None:
        """Write the ETA line for ``step`` to ``file`` (``sys.stdout`` by default)."""
        out = file if file is not None else sys.stdout
        out.write(self.eta_line(step, msg) + "\n")


def throttled(
    fun: Callable[..., Any],
    throttle: float | None = None,
    every: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[..., None]:
    """Wrap ``fun`` so it runs at most once per ``throttle`` seconds and/or once per ``every`` calls.

    With neither, every call runs. The first call always runs.
    """
    calls = 0
    last: float | None = None

    def wrapper(*args: Any, **kwargs: Any) -> None:
        nonlocal calls, last
        calls += 1
        if every is not None and every > 1 and (calls - 1) % every:
            return
        now = clock()
        if throttle is not None and last is not None and now - last < throttle:
            return
        last = now
        fun(*args, **kwargs)

    return wrapper
