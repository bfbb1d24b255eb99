"""Hooks that print: Logger (variables) and Timer (timing statistics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.spec import TRIGGERS, Every

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Logger", "Timer"]

_COUNTER_KEYS = frozenset(t.abbreviation for t in TRIGGERS)


class Logger(Hook):
    """Print the selected variables as ``[<time> <counters>]: name = value name = value``.

    Each value goes through ``process_func`` (if given) and is then formatted as ``f"{value:{format}}"``. The whole
    formatted value is printed (the original xmen Logger dropped the last character; SEED_NOTES C3).

    Args:
        spec: ``"{regex}@{modulo}{trigger}"``.
        format: A format spec applied to every value, e.g. ``'.3f'``.
        process_func: Converts a value before formatting.
        stream: Where to print; None prints to the monitor's stream (``sys.stdout`` unless the Monitor was given
            another).

    Example:
        >>> import io
        >>> from datetime import datetime
        >>> from unitrack.monitor import Monitor
        >>> out = io.StringIO()
        >>> m = Monitor(hooks=[Logger("x@2s", process_func="|".join)], stream=out,
        ...             clock=lambda: datetime(2020, 11, 18, 13, 17))
        >>> x = ["cat", "dog"]
        >>> for _ in m(range(2)):
        ...     pass
        >>> print(out.getvalue(), end="")
        [01:17PM 18/11/20 2/2]: x = cat|dog
    """

    def __init__(
        self,
        spec: str | Every,
        format: str = "",
        process_func: Callable[[Any], Any] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(spec)
        self.format = format
        self.process_func = process_func
        self.stream = stream

    def format_value(self, value: Any) -> str:
        """Return ``value`` as printed: processed, then formatted."""
        if self.process_func is not None:
            value = self.process_func(value)
        return f"{value:{self.format}}"

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Print one line with every selected variable (nothing when none matched)."""
        if var_dict:
            monitor.log(
                " ".join(f"{k} = {self.format_value(v)}" for k, v in var_dict.items()), stream=self.stream
            )


class Timer(Hook):
    """Print the monitor's timing statistics: ``wall``, ``end``, ``next``, ``step``, ``m_step``, ``load``, ``m_load``.

    Adding a Timer makes the monitor time each step (the time spent in the loop body, ``step``, and fetching the
    next item, ``load``); without one the monitor only estimates a mean step time from the wall clock.

    Args:
        spec: ``"@{modulo}{trigger}"`` (a regex, if any, is ignored).
        stream: Where to print; None prints to the monitor's stream.
    """

    #: Tells the Monitor to measure per-step times.
    needs_timing = True

    def __init__(self, spec: str | Every, stream: TextIO | None = None) -> None:
        super().__init__(spec)
        self.stream = stream

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Print the timing part of ``monitor.summary(verbose=1)``."""
        summary = monitor.summary(verbose=1)
        parts = [f"{k}={v}" for k, v in summary.items() if k != "last" and k not in _COUNTER_KEYS]
        monitor.log(" ".join(parts), stream=self.stream)
