"""Probe: record CPU, memory and GPU use with experiments."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.sink import MessageSink, MetadataSink
from unitrack.monitor.spec import Every

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Probe", "resource_usage"]

logger = logging.getLogger(__name__)


def _proc_cpu_times() -> tuple[float, float] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields), idle


def _proc_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class _CpuMeter:
    """CPU use since the previous reading, in percent (psutil when importable, else /proc/stat)."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = _proc_cpu_times()

    def percent(self) -> float | None:
        try:
            import psutil
        except ImportError:
            now = _proc_cpu_times()
            if now is None or self._last is None:
                return None
            total, idle = now[0] - self._last[0], now[1] - self._last[1]
            self._last = now
            return 100.0 * (1.0 - idle / total) if total > 0 else 0.0
        return float(psutil.cpu_percent(interval=None))


def _memory_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return _proc_rss_mb()
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def _gpus() -> list[dict[str, Any]]:
    # Only look at GPUs when the program already uses torch: importing it here would cost seconds.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        gpu: dict[str, Any] = {
            "name": torch.cuda.get_device_name(i),
            "memory_mb": torch.cuda.memory_allocated(i) / 2**20,
        }
        try:
            gpu["load"] = float(torch.cuda.utilization(i))
            gpu["temperature"] = float(torch.cuda.temperature(i))
        except (ImportError, RuntimeError, AttributeError):
            # utilization/temperature need pynvml; the name and memory are still worth recording.
            pass
        gpus.append(gpu)
    return gpus


def resource_usage(cpu: _CpuMeter | None = None) -> dict[str, Any]:
    """Return a flat dict of resource use: ``cpu`` (%), ``memory_mb`` (this process), ``gpu<i>_<field>``.

    Values that cannot be measured on this machine are left out.
    """
    usage: dict[str, Any] = {}
    percent = (cpu or _CpuMeter()).percent()
    if percent is not None:
        usage["cpu"] = round(percent, 1)
    memory = _memory_mb()
    if memory is not None:
        usage["memory_mb"] = round(memory, 1)
    for i, gpu in enumerate(_gpus()):
        for key, value in gpu.items():
            usage[f"gpu{i}_{key}"] = value
    return usage


class Probe(Hook):
    """Record resource use with every matched experiment and print it.

    For each selected variable with a ``log_metadata`` method, ``log_metadata(usage)`` is called; otherwise, for one
    with a ``message`` method, ``message(usage)``. ``usage`` is :func:`resource_usage`. The hook then prints
    ``cpu=<x>%   memory=<m>MB`` followed by ``<i> = <name> <load>% <mem>MB <temp>°C`` per GPU.

    Args:
        spec: ``"{exp_regex}@{modulo}{trigger}"``.
        stream: Where to print; None prints to the monitor's stream.
    """

    def __init__(self, spec: str | Every, stream: TextIO | None = None) -> None:
        super().__init__(spec)
        self.stream = stream
        self._cpu = _CpuMeter()

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Measure once, write to every matched experiment, print one line."""
        sinks = [v for v in var_dict.values() if isinstance(v, (MetadataSink, MessageSink))]
        if not sinks:
            return
        usage = resource_usage(self._cpu)
        for sink in sinks:
            if isinstance(sink, MetadataSink):
                sink.log_metadata(dict(usage))
            else:
                sink.message(dict(usage))
        monitor.log(_describe(usage), stream=self.stream)


def _describe(usage: Mapping[str, Any]) -> str:
    parts = [f"cpu={usage.get('cpu', '?')}%   memory={usage.get('memory_mb', '?')}MB"]
    i = 0
    while f"gpu{i}_name" in usage:
        get = usage.get
        parts.append(
            f"{i} = {get(f'gpu{i}_name')} {get(f'gpu{i}_load', '?')}% "
            f"{get(f'gpu{i}_memory_mb', 0):.0f}MB {get(f'gpu{i}_temperature', '?')}°C"
        )
        i += 1
    return "   ".join(parts)
