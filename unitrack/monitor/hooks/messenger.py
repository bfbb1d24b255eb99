"""XmenMessenger: send selected variables to experiments (any :class:`~unitrack.monitor.sink.MessageSink`)."""

from __future__ import annotations

import enum
import inspect
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError
from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.sink import MessageSink
from unitrack.monitor.spec import Every, parse_spec

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Keep", "XmenMessenger"]

logger = logging.getLogger(__name__)


class Keep(str, enum.Enum):
    """Which value an experiment keeps when a message key is sent again."""

    LATEST = "latest"
    MAX = "max"
    MIN = "min"

    @classmethod
    def parse(cls, value: str | Keep) -> Keep:
        """Return the member for ``value``.

        Raises:
            ConfigError: ``value`` is not latest, max or min.
        """
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"keep must be one of latest, max, min; got {value!r}", parameter="keep", value=str(value)
            ) from None


_TAKES_STEP: dict[type, bool] = {}


def takes_step(sink: Any) -> bool:
    """True when ``sink.message`` accepts a ``step`` keyword (``Experiment.message`` does); cached per type."""
    cls = type(sink)
    known = _TAKES_STEP.get(cls)
    if known is None:
        try:
            parameters = inspect.signature(sink.message).parameters.values()
        except (TypeError, ValueError):
            known = False
        else:
            known = any(
                (p.name == "step" and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
                for p in parameters
            )
        _TAKES_STEP[cls] = known
    return known


class XmenMessenger(Hook):
    """Send variables to experiments as messages.

    Two spec forms:

    - ``"{log_regex}->{exp_regex}@{modulo}{trigger}"``: local variables whose names match ``exp_regex`` and that
      have a ``message`` method are the experiments; variables matching ``log_regex`` are sent to each of them.
    - ``"{exp_regex}@{modulo}{trigger}"``: only the monitor's timing and counters are sent (SEED_NOTES C5).

    Each experiment first receives ``monitor.summary(verbose=1)`` (counters and timing, kept as ``latest``), then
    ``message(values, keep=keep, leader=leader)``; both with ``step=monitor.step`` when its ``message`` takes a
    ``step`` keyword (an ``Experiment`` then files the numbers at the monitor's step in its metric series).

    Args:
        spec: The spec, in one of the forms above.
        keep: ``'latest'``, ``'max'`` or ``'min'``: what the experiment keeps when a key is sent again.
        leader: A regex; the first sent variable it matches leads: the others are kept only when the leader is.
        expand: Send a dict variable with K keys as K values named by its keys.
        prepend: With ``expand``, name each value ``{dict}_{key}``. Treated as a bool: None and False do not
            prepend (the original prepended for any non-None value; SEED_NOTES C6).

    Raises:
        InvalidSpecError: ``spec`` is malformed.
        ConfigError: ``keep`` is not one of the three, or ``leader`` is not a valid regex.

    Example:
        >>> class Sink:
        ...     def __init__(self):
        ...         self.messages = {}
        ...     def message(self, values, keep="latest", leader=None):
        ...         self.messages.update(values)
        >>> from unitrack.monitor import Monitor
        >>> m = Monitor(hooks=[XmenMessenger("y.*->ex@2s")])
        >>> ex, y1 = Sink(), 0
        >>> for _ in m(range(4)):
        ...     y1 += 1
        [... 2/4]: Left messages ['y1'] with ex
        [... 4/4]: Left messages ['y1'] with ex
        >>> ex.messages["y1"], ex.messages["s"]
        (4, '4/4')
    """

    def __init__(
        self,
        spec: str | Every,
        keep: str | Keep = "latest",
        leader: str | None = None,
        expand: bool = False,
        prepend: bool | None = None,
    ) -> None:
        parsed = parse_spec(spec)
        if parsed.target is None:
            self.log_regex: re.Pattern[str] | None = None
            self.exp_regex = re.compile(parsed.pattern)
            selection = parsed.pattern
        else:
            self.log_regex = re.compile(parsed.pattern) if parsed.pattern else None
            self.exp_regex = re.compile(parsed.target)
            selection = f"(?:{parsed.pattern})|(?:{parsed.target})" if parsed.pattern else parsed.target
        super().__init__(parsed)
        # The monitor selects variables with one regex: the variables to send or the experiments.
        self.regex = selection
        self.compiled = re.compile(selection)
        self.keep = Keep.parse(keep)
        try:
            self.leader: re.Pattern[str] | None = re.compile(leader) if leader is not None else None
        except re.error as exc:
            raise ConfigError(f"leader {leader!r} is not a valid regex: {exc}", parameter="leader") from exc
        self.expand = bool(expand)
        self.prepend = bool(prepend)

    def values(self, var_dict: Mapping[str, Any], experiments: Mapping[str, Any]) -> dict[str, Any]:
        """Return the values to send, after ``expand``/``prepend``."""
        values: dict[str, Any] = {}
        if self.log_regex is None:
            return values
        for name, value in var_dict.items():
            if name in experiments or not self.log_regex.match(name):
                continue
            if self.expand and isinstance(value, Mapping):
                for key, item in value.items():
                    values[f"{name}_{key}" if self.prepend else str(key)] = item
            else:
                values[name] = value
        return values

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Send the summary and the selected values to every matched experiment."""
        experiments = {
            k: v for k, v in var_dict.items() if self.exp_regex.match(k) and isinstance(v, MessageSink)
        }
        if not experiments:
            return
        values = self.values(var_dict, experiments)
        leader = None
        if self.leader is not None:
            leader = next((k for k in values if self.leader.match(k)), None)
        summary = monitor.summary(verbose=1)
        for name, experiment in experiments.items():
            step = {"step": monitor.step} if takes_step(experiment) else {}
            experiment.message(summary, keep=Keep.LATEST.value, leader=None, **step)
            if values:
                experiment.message(dict(values), keep=self.keep.value, leader=leader, **step)
            where = getattr(experiment, "directory", None)
            monitor.report(f"Left messages {list(values)} with {name}" + (f" at {where}" if where else ""))
