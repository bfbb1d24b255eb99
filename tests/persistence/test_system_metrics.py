"""System metrics as series: the sampler, TrackClient(system_metrics=...), and the GPU reader's no-op path."""

from __future__ import annotations

import logging
import time
import warnings
from types import SimpleNamespace

import pytest

from tests.conftest import wait_until
from unitrack.errors import ConfigError
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.system import (
    SYSTEM_METRICS_ENV,
    GpuReader,
    SystemReader,
    SystemSampler,
    system_metrics_interval,
)
from unitrack.persistence.track import TrackClient


def _client(tmp_path, **options):
    client = TrackClient(f"hdf5://{tmp_path}/runs", **options)
    client.set_project(name="p")
    client.set_group(name="g")
    client.new_trial(name="t", parameters={"lr": 0.1})
    return client


def test_sampling_every_0_1_s_for_1_s_gives_cpu_and_memory_series(tmp_path):
    client = _client(tmp_path, system_metrics=0.1)
    with client:
        client.log_metrics(step=1, loss=0.5)
        sampler = client.logger._sampler
        wait_until(lambda: sampler.samples >= 3, timeout_s=30, what="three samples")
        time.sleep(max(0.0, 1.0 - 0.1 * sampler.samples))
    assert client.logger._sampler is None and not sampler.running  # stopped with the trial
    trial = client.protocol.fetch_trials({"name": "t"})[0]
    cpu, memory = trial.metrics["sys/cpu_percent"], trial.metrics["sys/memory_percent"]
    assert len(cpu) == len(memory) == sampler.samples >= 3
    assert all(0 <= v <= 100 for v in cpu.values) and 0 < memory.latest <= 100
    assert list(cpu.steps) == sorted(cpu.steps) and cpu.steps[0] >= 0.1 - 1e-9  # seconds since the start
    assert trial.metrics["sys/proc/memory_mb"].latest > 1
    assert not [name for name in trial.metrics if name.startswith("sys/gpu")]  # this machine has no GPU
    assert trial.metrics["loss"].steps == (1,)  # the training series is untouched
    n = len(cpu)
    time.sleep(0.3)
    assert len(client.protocol.fetch_trials({"name": "t"})[0].metrics["sys/cpu_percent"]) == n


def test_a_resumed_trial_samples_after_its_last_step(tmp_path):
    client = _client(tmp_path, system_metrics=0.1)
    with client:
        wait_until(lambda: client.logger._sampler.samples >= 2, timeout_s=30, what="two samples")
    first = client.logger.refresh().metrics["sys/cpu_percent"]
    again = TrackClient(client.protocol, system_metrics=0.1)
    again.set_trial(uid=client.logger.uid)
    with again:
        wait_until(lambda: again.logger._sampler.samples >= 1, timeout_s=30, what="a sample")
    steps = again.logger.refresh().metrics["sys/cpu_percent"].steps
    assert steps[: len(first)] == first.steps  # nothing replaced
    assert len(steps) > len(first) and min(steps[len(first) :]) > max(first.steps)


def test_no_sampling_by_default_and_the_environment_turns_it_on(tmp_path, monkeypatch):
    monkeypatch.delenv(SYSTEM_METRICS_ENV, raising=False)
    client = _client(tmp_path)
    with client:
        assert client.logger._sampler is None
    monkeypatch.setenv(SYSTEM_METRICS_ENV, "0.1")
    assert TrackClient("ephemeral://").system_metrics == 0.1
    assert TrackClient("ephemeral://", system_metrics=False).system_metrics is None


@pytest.mark.parametrize(
    ("value", "expected"), [(True, 10.0), (False, None), (0, None), (2, 2.0), (0.5, 0.5), (None, None)]
)
def test_interval_values(value, expected, monkeypatch):
    monkeypatch.delenv(SYSTEM_METRICS_ENV, raising=False)
    assert system_metrics_interval(value) == expected


@pytest.mark.parametrize("value", [-1, 0.001, float("nan"), "10", [1]])
def test_bad_intervals_are_config_errors_naming_the_value(value):
    with pytest.raises(ConfigError, match="system_metrics"):
        system_metrics_interval(value)
    with pytest.raises(ConfigError):
        TrackClient("ephemeral://", system_metrics=value)


def test_a_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(SYSTEM_METRICS_ENV, "often")
    with pytest.raises(ConfigError, match=r"\$UNITRACK_SYSTEM_METRICS='often'"):
        system_metrics_interval(None)


def test_a_failing_writer_is_reported_once_and_sampling_goes_on(caplog):
    calls = []

    def write(values, step):
        calls.append(step)
        raise OSError("disk full")

    with caplog.at_level(logging.DEBUG, logger="unitrack.persistence.system"):
        with SystemSampler(write, interval_s=0.05):
            wait_until(lambda: len(calls) >= 3, timeout_s=30, what="three attempts")
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_logged) == 1 and "sampling goes on" in warnings_logged[0].getMessage()


def test_without_a_driver_gpu_metrics_are_a_quiet_no_op(caplog):
    """This machine has no NVIDIA driver: the real NVML import and init fail, quietly."""
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = GpuReader()
        assert reader.count == 0 and reader.read() == {}
        reader.close()
        values = SystemReader(gpu=True).read()
    assert not [k for k in values if k.startswith("sys/gpu")]
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


class _StandInNvml:
    """The subset of ``pynvml`` GpuReader calls, with NVML's documented units: bytes, °C, milliwatts.

    It stands in for the driver (absent here) so the mapping from NVML's answers to ``sys/gpu/...`` names and
    units is checked; it proves nothing about NVML itself.
    """

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, devices, fail_init=False):
        self.devices, self.fail_init, self.shutdown = devices, fail_init, 0

    def nvmlInit(self):
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self):
        self.shutdown += 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.devices[i]

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"])

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return h["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        if h["mw"] is None:
            raise self.NVMLError("Not Supported")
        return h["mw"]


def test_nvml_answers_become_per_gpu_series_in_mb_celsius_and_watts():
    nvml = _StandInNvml(
        [
            {"util": 87, "used": 3 * 2**30, "total": 12 * 2**30, "temp": 71, "mw": 215_500},
            {"util": 0, "used": 0, "total": 2**30, "temp": 35, "mw": None},  # power not supported
        ]
    )
    reader = GpuReader(nvml)
    assert reader.count == 2
    assert reader.read() == {
        "sys/gpu/0/utilization_percent": 87.0,
        "sys/gpu/0/memory_used_mb": 3072.0,
        "sys/gpu/0/memory_percent": 25.0,
        "sys/gpu/0/temperature_c": 71.0,
        "sys/gpu/0/power_w": 215.5,
        "sys/gpu/1/utilization_percent": 0.0,
        "sys/gpu/1/memory_used_mb": 0.0,
        "sys/gpu/1/memory_percent": 0.0,
        "sys/gpu/1/temperature_c": 35.0,
    }
    reader.close()
    assert nvml.shutdown == 1 and reader.read() == {}


def test_nvml_without_a_driver_or_a_device_reads_nothing():
    assert GpuReader(_StandInNvml([], fail_init=False)).read() == {}
    assert GpuReader(_StandInNvml([{"util": 1}], fail_init=True)).count == 0


def test_samples_go_to_any_backend_through_the_protocol():
    protocol = get_protocol("ephemeral://")
    client = TrackClient(protocol, system_metrics=0.05)
    client.new_trial(name="t", parameters={})
    with client:
        wait_until(lambda: client.logger._sampler.samples >= 2, timeout_s=30, what="two samples")
    assert len(client.logger.refresh().metrics["sys/memory_used_mb"]) >= 2
