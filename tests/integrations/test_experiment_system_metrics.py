"""An Experiment's ``system_metrics=`` option: sys/... series in its trial while it runs, none after."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_until
from unitrack.errors import ConfigError
from unitrack.experiment import Experiment


class Sleeper(Experiment):
    """Sleep a little."""

    seconds: float = 1.0  # @p how long

    def run(self):
        sampler = self._sampler
        wait_until(lambda: sampler.samples >= 3, timeout_s=30, what="three samples")
        time.sleep(max(0.0, self.seconds - 0.1 * sampler.samples))
        self.message({"done": 1.0})


def test_an_experiment_samples_system_metrics_while_it_runs(tmp_path):
    ex = Sleeper(tmp_path, "sleep", system_metrics=0.1)
    ex()
    assert ex._sampler is None  # stopped with the run
    (trial,) = ex.backend.fetch_trials({"name": "sleep"})
    assert str(trial.status) == "completed"
    cpu, memory = trial.metrics["sys/cpu_percent"], trial.metrics["sys/memory_percent"]
    assert len(cpu) == len(memory) >= 3
    assert trial.metrics["sys/disk_percent"].latest > 0  # the file system holding the experiment folder
    assert trial.metrics["done"].steps == (1,)  # messages count their own steps
    assert (tmp_path / "sleep" / "store.h5").exists()


def test_no_sampling_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("UNITRACK_SYSTEM_METRICS", raising=False)
    ex = Sleeper(tmp_path, "sleep")
    with ex:
        assert ex._sampler is None
    (trial,) = ex.backend.fetch_trials({"name": "sleep"})
    assert not [m for m in trial.metrics if m.startswith("sys/")]


def test_a_bad_interval_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="system_metrics"):
        Sleeper(tmp_path, "sleep", system_metrics=-3)
    assert not (tmp_path / "sleep").exists()


def test_import_unitrack_loads_no_framework_and_no_system_library():
    import subprocess
    import sys

    code = (
        "import sys, unitrack, unitrack.integrations, unitrack.integrations.run, unitrack.integrations.optuna; "
        "unitrack.TrackClient('ephemeral://', system_metrics=False); print(' '.join(sys.modules))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    heavy = {"torch", "lightning", "transformers", "keras", "optuna", "psutil", "pynvml", "pandas"}
    assert not heavy & loaded
