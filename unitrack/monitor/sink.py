"""What a Monitor hook may write to, described by capability rather than by class.

``experiment`` and ``monitor`` never import each other: a hook that messages an experiment accepts any object with
a ``message`` method (an ``Experiment`` has one), and a checkpoint accepts any object with ``state_dict``.

A Monitor *attached* to an experiment (``Monitor(experiment=ex)``, ``monitor.attach(ex)``, or found among the
caller's variables by its ``directory``) also writes through it: scalar summaries as metric points
(:class:`MetricSink`), the latest checkpoint paths and resource use as metadata (:class:`MetadataSink`).
``unitrack.experiment.Experiment`` satisfies all three protocols structurally.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["HasStateDict", "MessageSink", "MetadataSink", "MetricSink"]


@typing.runtime_checkable
class MessageSink(typing.Protocol):
    """An object that keeps messages, such as ``unitrack.experiment.Experiment``.

    ``keep`` is one of ``'latest'``, ``'max'``, ``'min'``; with a ``leader`` (a key of ``values``) all values are
    kept only when the leader's value is kept.
    """

    def message(self, values: Mapping[str, Any], keep: str = "latest", leader: str | None = None) -> Any:
        """Record ``values`` according to ``keep`` and ``leader``."""


@typing.runtime_checkable
class MetadataSink(typing.Protocol):
    """An object that records free-form metadata (resource use from :class:`~unitrack.monitor.hooks.Probe`)."""

    def log_metadata(self, values: Mapping[str, Any]) -> Any:
        """Record ``values`` as metadata."""


@typing.runtime_checkable
class MetricSink(typing.Protocol):
    """An object that keeps metric series: ``log_metrics({'loss': 0.5}, step=10)`` appends one point per name.

    A point at a step that already has a value replaces it.
    """

    def log_metrics(self, values: Mapping[str, float], *, step: int) -> Any:
        """Append ``(step, value)`` to the series of each name in ``values``."""


@typing.runtime_checkable
class HasStateDict(typing.Protocol):
    """An object that can be checkpointed: torch modules, optimizers, schedulers."""

    def state_dict(self) -> Any:
        """Return the state to save."""

    def load_state_dict(self, state_dict: Any) -> Any:
        """Restore a saved state."""
