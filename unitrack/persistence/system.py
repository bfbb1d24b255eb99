"""System metrics as series: CPU, memory, disk and network of the process and the host, and per-GPU use.

:func:`read_system` takes one reading; :class:`SystemSampler` takes one every ``interval_s`` seconds on a
background thread and hands it to a writer (``TrackClient(system_metrics=10)`` writes each reading to the trial's
metric series). Every name starts with ``sys/``:

==================================  ===========================================================================
``sys/cpu_percent``                 the host's CPU use (all cores, 0-100)
``sys/memory_percent``,             the host's memory in use (percent, MB)
``sys/memory_used_mb``
``sys/swap_percent``                the host's swap in use
``sys/disk_percent``                use of the file system holding ``disk_path`` (default: the working folder)
``sys/disk_read_mb_s``,             the host's disk and network throughput since the previous reading (MB/s)
``sys/disk_write_mb_s``,
``sys/net_sent_mb_s``,
``sys/net_recv_mb_s``
``sys/proc/cpu_percent``            this process's CPU use (percent of one core: 200 is two busy cores)
``sys/proc/memory_mb``              this process's resident memory
``sys/proc/threads``                this process's threads
``sys/gpu/<i>/utilization_percent`` per NVIDIA GPU ``i`` (NVML's index), when a driver is present: utilisation,
``sys/gpu/<i>/memory_used_mb``,     memory in use (MB, percent), temperature (°C) and power draw (W)
``sys/gpu/<i>/memory_percent``,
``sys/gpu/<i>/temperature_c``,
``sys/gpu/<i>/power_w``
==================================  ===========================================================================

The host and process figures come from ``psutil``, the GPU figures from NVML (``nvidia-ml-py``). Without an NVIDIA
driver, or with no GPU, there are simply no ``sys/gpu/...`` values: never an error, never a warning. A value the
machine cannot measure is left out rather than guessed. Throughputs need two readings, so they start with the
second one.

**Cost.** A reading is a dozen system calls (about 0.3 ms); at the default 10 s interval the sampler uses well
under 0.1 % of one core (``benchmarks/system_metrics_bench.py`` prints the figure). The thread sleeps between
readings and never holds a lock the training loop needs.

Example:
    >>> values = read_system()
    >>> {"sys/cpu_percent", "sys/memory_percent", "sys/proc/memory_mb"} <= set(values)
    True
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError

if TYPE_CHECKING:
    from unitrack.persistence.protocol import Protocol
    from unitrack.persistence.structure import Metric

__all__ = [
    "DEFAULT_INTERVAL_S",
    "MIN_INTERVAL_S",
    "SYSTEM_METRICS_ENV",
    "GpuReader",
    "SystemReader",
    "SystemSampler",
    "read_system",
    "start_trial_sampler",
    "system_metrics_interval",
]

logger = logging.getLogger(__name__)

#: Environment variable giving the sampling interval in seconds for every run that does not choose one
#: (``UNITRACK_SYSTEM_METRICS=10``); unset, empty or 0 samples nothing.
SYSTEM_METRICS_ENV = "UNITRACK_SYSTEM_METRICS"
#: The interval ``system_metrics=True`` means.
DEFAULT_INTERVAL_S = 10.0
#: The shortest interval accepted (a sampler is a background measurement, not a profiler).
MIN_INTERVAL_S = 0.05

_MB = float(2**20)


def system_metrics_interval(value: float | bool | None) -> float | None:
    """Return the sampling interval in seconds that a ``system_metrics=`` option asks for, or None for none.

    ``None`` defers to ``$UNITRACK_SYSTEM_METRICS`` (unset: none); ``False`` or ``0`` is none; ``True`` is
    :data:`DEFAULT_INTERVAL_S`; a number is the interval.

    Raises:
        ConfigError: for a negative, too short or non-numeric interval (also from the environment variable).

    Example:
        >>> system_metrics_interval(True), system_metrics_interval(2), system_metrics_interval(0)
        (10.0, 2.0, None)
    """
    where = "system_metrics"
    if value is None:
        text = os.environ.get(SYSTEM_METRICS_ENV, "").strip()
        if not text:
            return None
        where = f"${SYSTEM_METRICS_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                f"{where}={text!r} is not a number of seconds; set it to e.g. 10, or unset it.",
                parameter=where,
            ) from None
    if value is True:
        return DEFAULT_INTERVAL_S
    if value is False:
        return None
    if not isinstance(value, (int, float)):
        raise ConfigError(
            f"{where}={value!r} is not a number of seconds; pass e.g. 10, True (every 10 s) or None.",
            parameter=where,
        )
    seconds = float(value)
    if seconds == 0:
        return None
    if not seconds >= MIN_INTERVAL_S:  # also refuses NaN
        raise ConfigError(
            f"{where}={value!r}: the interval must be at least {MIN_INTERVAL_S} s (or 0 for no sampling).",
            parameter=where,
        )
    return seconds


class GpuReader:
    """Per-GPU utilisation, memory, temperature and power through NVML; empty without a driver or a GPU.

    Args:
        nvml: the ``pynvml`` module (from ``nvidia-ml-py``); None imports it. Initialisation failures (no
            library, no driver, no device) make the reader empty, logged at DEBUG only.
    """

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self.names: list[str] = []
        try:
            if nvml is None:
                nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - any NVML failure means "no GPU to read": a quiet no-op
            logger.debug("no NVIDIA GPU metrics: %s", exc)
            return
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # noqa: BLE001 - as above
            logger.debug("no NVIDIA GPU metrics: %s", exc)
            self._shutdown(nvml)
            return
        if not self._handles:
            self._shutdown(nvml)
            return
        self._nvml = nvml
        #: Each GPU's name (``'?'`` when NVML does not say).
        self.names = [self._name(nvml, h) for h in self._handles]

    @staticmethod
    def _name(nvml: Any, handle: Any) -> str:
        try:
            name = nvml.nvmlDeviceGetName(handle)
        except Exception as exc:  # noqa: BLE001 - a name is decoration
            logger.debug("no GPU name: %s", exc)
            return "?"
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - shutting down a library that failed: nothing to report
            logger.debug("nvmlShutdown: %s", exc)

    @property
    def count(self) -> int:
        """The number of GPUs read (0 without a driver)."""
        return len(self._handles)

    def read(self) -> dict[str, float]:
        """One reading of every GPU; a figure a device does not report (e.g. power on some boards) is left out."""
        nvml = self._nvml
        out: dict[str, float] = {}
        if nvml is None:
            return out
        for i, handle in enumerate(self._handles):
            prefix = f"sys/gpu/{i}/"
            for what, read in (
                ("utilization", self._utilization),
                ("memory", self._memory),
                ("temperature", self._temperature),
                ("power", self._power),
            ):
                try:
                    out.update({prefix + k: round(v, 1) for k, v in read(nvml, handle).items()})
                except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and friends: leave it out
                    logger.debug("GPU %d does not report its %s: %s", i, what, exc)
        return out

    @staticmethod
    def _utilization(nvml: Any, handle: Any) -> dict[str, float]:
        return {"utilization_percent": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)}

    @staticmethod
    def _memory(nvml: Any, handle: Any) -> dict[str, float]:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)  # bytes
        out = {"memory_used_mb": memory.used / _MB}
        if memory.total:
            out["memory_percent"] = 100.0 * memory.used / memory.total
        return out

    @staticmethod
    def _temperature(nvml: Any, handle: Any) -> dict[str, float]:
        return {"temperature_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))}

    @staticmethod
    def _power(nvml: Any, handle: Any) -> dict[str, float]:
        return {"power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0}  # milliwatts

    def close(self) -> None:
        """Release NVML."""
        if self._nvml is not None:
            self._shutdown(self._nvml)
            self._nvml = None
            self._handles = []
            self.names = []


class SystemReader:
    """Takes readings of the host, this process and the GPUs; keeps what throughputs need between readings.

    Args:
        disk_path: the folder whose file system ``sys/disk_percent`` describes (default: the working folder).
        gpu: read NVIDIA GPUs (True), or not (False); or a :class:`GpuReader` to use.
    """

    def __init__(self, disk_path: str | os.PathLike[str] | None = None, gpu: bool | GpuReader = True) -> None:
        import psutil

        self._psutil = psutil
        self.disk_path = os.fspath(disk_path) if disk_path is not None else os.getcwd()
        self._process = psutil.Process(os.getpid())
        self._gpu = gpu if isinstance(gpu, GpuReader) else GpuReader() if gpu else None
        # CPU percentages are measured between calls: the first call starts the clock.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)
        self._last_io: tuple[float, Any, Any] = (time.monotonic(), self._disk_io(), self._net_io())

    def _disk_io(self) -> Any:
        try:
            return self._psutil.disk_io_counters()
        except (OSError, RuntimeError):  # no disks visible (some containers)
            return None

    def _net_io(self) -> Any:
        try:
            return self._psutil.net_io_counters()
        except (OSError, RuntimeError):
            return None

    def read(self) -> dict[str, float]:
        """One reading, ``{'sys/...': value}``; what cannot be measured here is left out."""
        psutil = self._psutil
        out: dict[str, float] = {"sys/cpu_percent": float(psutil.cpu_percent(interval=None))}
        memory = psutil.virtual_memory()
        out["sys/memory_percent"] = float(memory.percent)
        out["sys/memory_used_mb"] = round((memory.total - memory.available) / _MB, 1)
        try:
            out["sys/swap_percent"] = float(psutil.swap_memory().percent)
        except (OSError, RuntimeError):
            pass
        try:
            out["sys/disk_percent"] = float(psutil.disk_usage(self.disk_path).percent)
        except OSError:
            pass
        now, disk, net = time.monotonic(), self._disk_io(), self._net_io()
        then, last_disk, last_net = self._last_io
        elapsed = now - then
        if elapsed > 0:
            if disk is not None and last_disk is not None:
                out["sys/disk_read_mb_s"] = round((disk.read_bytes - last_disk.read_bytes) / _MB / elapsed, 3)
                out["sys/disk_write_mb_s"] = round(
                    (disk.write_bytes - last_disk.write_bytes) / _MB / elapsed, 3
                )
            if net is not None and last_net is not None:
                out["sys/net_sent_mb_s"] = round((net.bytes_sent - last_net.bytes_sent) / _MB / elapsed, 3)
                out["sys/net_recv_mb_s"] = round((net.bytes_recv - last_net.bytes_recv) / _MB / elapsed, 3)
        self._last_io = (now, disk, net)
        process = self._process
        try:
            with process.oneshot():
                out["sys/proc/cpu_percent"] = float(process.cpu_percent(interval=None))
                out["sys/proc/memory_mb"] = round(process.memory_info().rss / _MB, 1)
                out["sys/proc/threads"] = float(process.num_threads())
        except psutil.Error as exc:  # the process table is not readable here
            logger.debug("no process metrics: %s", exc)
        if self._gpu is not None:
            out.update(self._gpu.read())
        return out

    @property
    def gpu_names(self) -> list[str]:
        """The names of the GPUs read, by index (empty without a driver)."""
        return list(self._gpu.names) if self._gpu is not None else []

    def close(self) -> None:
        """Release the GPU library."""
        if self._gpu is not None:
            self._gpu.close()


def read_system(disk_path: str | os.PathLike[str] | None = None, gpu: bool = True) -> dict[str, float]:
    """Take one reading (see the module's table); CPU percentages cover the last 0.1 s."""
    reader = SystemReader(disk_path, gpu=gpu)
    try:
        time.sleep(0.1)
        return reader.read()
    finally:
        reader.close()


Writer = Callable[[Mapping[str, float], float], Any]


class SystemSampler:
    """Take a reading every ``interval_s`` seconds on a daemon thread and pass it to ``write(values, step)``.

    ``step`` is the seconds since the sampler started plus ``start_step`` (a resumed run passes the last step
    it has, so new points never replace old ones), rounded to milliseconds. A writer that raises is logged
    once at WARNING (then at DEBUG) and sampling goes on: the training run never fails because of it.

    Args:
        write: called with each reading and its step, from the sampler's thread.
        interval_s: seconds between readings (at least :data:`MIN_INTERVAL_S`).
        start_step: the step of the start.
        disk_path: see :class:`SystemReader`.
        gpu: see :class:`SystemReader`.

    Raises:
        ConfigError: for an interval below :data:`MIN_INTERVAL_S`.

    Example:
        >>> points = []
        >>> with SystemSampler(lambda values, step: points.append(step), interval_s=0.05):
        ...     time.sleep(0.3)
        >>> len(points) >= 1
        True
    """

    def __init__(
        self,
        write: Writer,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        start_step: float = 0.0,
        disk_path: str | os.PathLike[str] | None = None,
        gpu: bool | GpuReader = True,
    ) -> None:
        checked = system_metrics_interval(interval_s)
        if checked is None:
            raise ConfigError(
                f"SystemSampler needs an interval of at least {MIN_INTERVAL_S} s, not {interval_s!r}.",
                parameter="interval_s",
            )
        self.interval_s = checked
        self.write = write
        self.start_step = float(start_step)
        self._disk_path = disk_path
        self._gpu = gpu
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False
        #: Readings written so far.
        self.samples = 0

    def start(self) -> SystemSampler:
        """Start sampling (a no-op when already started)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._main, name="unitrack-system-metrics", daemon=True)
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True while the thread samples."""
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            reader = SystemReader(self._disk_path, gpu=self._gpu)
        except Exception:  # noqa: BLE001 - a sampler that cannot start must not end the run
            logger.warning("system metrics are off: the first reading failed", exc_info=True)
            return
        t0 = time.monotonic()
        try:
            while not self._stop.wait(self.interval_s):
                self._sample(reader, t0)
            # One last reading when the run ends: a run shorter than the interval still gets its series,
            # and every series ends with the state at the end of the run.
            self._sample(reader, t0)
        finally:
            reader.close()

    def _sample(self, reader: SystemReader, t0: float) -> None:
        values = reader.read()
        step = round(self.start_step + time.monotonic() - t0, 3)
        try:
            self.write(values, step)
        except Exception:  # noqa: BLE001 - training goes on; say it once
            if not self._failed:
                self._failed = True
                logger.warning("writing system metrics failed; sampling goes on", exc_info=True)
            else:
                logger.debug("writing system metrics failed again", exc_info=True)
        else:
            self.samples += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop sampling: the thread takes one last reading, and this waits for it to be written."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SystemSampler(every {self.interval_s:g} s, {state}, {self.samples} samples)"


def start_trial_sampler(
    protocol: Protocol,
    uid: str,
    interval_s: float,
    *,
    metrics: Mapping[str, Metric] | None = None,
    disk_path: str | os.PathLike[str] | None = None,
) -> SystemSampler:
    """Start sampling into trial ``uid``'s ``sys/...`` series, each reading one write (``log_trial_step``).

    A resumed trial continues after the last ``sys/`` step it has (``metrics``: the trial's series when the
    caller holds them, else they are fetched), so new points never replace old ones.
    """
    if metrics is None:
        found = protocol.fetch_trials({"uid": uid})
        metrics = found[0].metrics if found else {}
    last = max(
        (
            float(s)
            for name, m in metrics.items()
            if name.startswith("sys/")
            for s in m.steps
            if s is not None
        ),
        default=None,
    )

    def write(values: Mapping[str, float], step: float) -> None:
        protocol.log_trial_step(uid, step, values)

    start = 0.0 if last is None else last + interval_s
    return SystemSampler(write, interval_s, start_step=start, disk_path=disk_path).start()
