"""Probe: record CPU, memory, disk, network and GPU use with experiments, as metric series."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.sink import MessageSink, MetadataSink, MetricSink
from unitrack.monitor.spec import Every
from unitrack.persistence.system import SystemReader

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Probe", "resource_usage"]

logger = logging.getLogger(__name__)


def resource_usage(reader: SystemReader | None = None) -> dict[str, float]:
    """Return one reading of the host, this process and the GPUs (``{'sys/cpu_percent': ..., ...}``).

    The names are those of :mod:`unitrack.persistence.system`; what this machine cannot measure is left out.
    Pass the same ``reader`` each time so CPU use covers the time since the previous reading.
    """
    if reader is not None:
        return reader.read()
    from unitrack.persistence.system import read_system

    return read_system()


class Probe(Hook):
    """Record resource use with every matched experiment and print it.

    Each time the hook is due it takes one reading (:mod:`unitrack.persistence.system`: ``sys/cpu_percent``,
    ``sys/memory_percent``, ``sys/proc/memory_mb``, ``sys/gpu/<i>/...`` ...) and writes it to each selected
    variable: as points of its metric series at ``monitor.step`` when it has ``log_metrics`` (an ``Experiment``),
    else with ``log_metadata``, else with ``message``. It then prints
    ``cpu=<x>%   memory=<m>MB`` followed by ``<i> = <name> <load>% <mem>MB <temp>°C`` per GPU.

    Args:
        spec: ``"{exp_regex}@{modulo}{trigger}"``.
        stream: Where to print; None prints to the monitor's stream.
    """

    def __init__(self, spec: str | Every, stream: TextIO | None = None) -> None:
        super().__init__(spec)
        self.stream = stream
        self._reader = SystemReader()  # CPU use of the first reading is measured from here

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Measure once, write to every matched experiment, print one line."""
        sinks = [v for v in var_dict.values() if isinstance(v, (MetricSink, MetadataSink, MessageSink))]
        if not sinks:
            return
        usage = self._reader.read()
        for sink in sinks:
            if isinstance(sink, MetricSink):
                sink.log_metrics(dict(usage), step=monitor.step)
            elif isinstance(sink, MetadataSink):
                sink.log_metadata(dict(usage))
            else:
                sink.message(dict(usage))
        monitor.log(_describe(usage, self._reader.gpu_names), stream=self.stream)


def _describe(usage: Mapping[str, Any], gpu_names: list[str]) -> str:
    parts = [f"cpu={usage.get('sys/cpu_percent', '?')}%   memory={usage.get('sys/proc/memory_mb', '?')}MB"]
    for i, name in enumerate(gpu_names):
        get = usage.get
        parts.append(
            f"{i} = {name} {get(f'sys/gpu/{i}/utilization_percent', '?')}% "
            f"{get(f'sys/gpu/{i}/memory_used_mb', 0):.0f}MB {get(f'sys/gpu/{i}/temperature_c', '?')}°C"
        )
    return "   ".join(parts)
