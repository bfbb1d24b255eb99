"""The Hook base class: what the Monitor passes to every hook."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unitrack.monitor.spec import Every, Trigger, parse_spec

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Hook"]


class Hook:
    """Base class of Monitor hooks.

    Each time the monitor's counter for ``trigger`` is divisible by ``modulo``, the hook is called with every local
    variable of the monitored frame whose name matches ``regex`` (``re.match``). Subclasses override
    :meth:`__call__`. A spec without a frequency makes a manual hook, called by ``Monitor.to_hooks(**values)``.

    Args:
        spec: ``"{regex}@{modulo}{trigger}"``, ``"{regex}"``, or a parsed :class:`~unitrack.monitor.spec.Every`.

    Attributes:
        spec: The parsed spec.
        regex: The pattern selecting variable names.
        modulo: How many increments of ``trigger`` between calls (None for a manual hook).
        trigger: The counted level (None for a manual hook); compares equal to its name, e.g. ``'step'``.

    Raises:
        InvalidSpecError: ``spec`` is malformed.

    Example:
        >>> class Collect(Hook):
        ...     def __call__(self, var_dict, monitor):
        ...         print(sorted(var_dict))
        >>> hook = Collect("lo.*@10s")
        >>> hook.regex, hook.modulo, hook.trigger == "step"
        ('lo.*', 10, True)
    """

    def __init__(self, spec: str | Every) -> None:
        self.spec: Every = parse_spec(spec)
        self.regex: str = self.spec.pattern
        self.modulo: int | None = self.spec.modulo
        self.trigger: Trigger | None = self.spec.trigger
        self.compiled: re.Pattern[str] = re.compile(self.regex)

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Handle the selected variables. The base class does nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.spec)!r})"
