"""examples/lightning_example.py and examples/hf_example.py run on the CPU and leave a complete trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_lightning_example_trains_and_logs_a_trial(tmp_path):
    out = _run(tmp_path, "lightning_example.py", "--epochs", "2")
    assert "Trial('spirals'" in out and "val_acc=" in out
    (trial,) = get_protocol(f"hdf5://{tmp_path}/runs").fetch_trials({"name": "spirals"})
    assert trial.status is Status.Completed and trial.parameters == {"hidden": 32, "lr": 0.01}
    assert len(trial.metrics["val_acc"]) == 2 and "sys/cpu_percent" in trial.metrics
    assert (tmp_path / trial.metadata["checkpoints"]["latest"]).exists()


@pytest.mark.slow
def test_the_hugging_face_example_trains_and_logs_a_trial(tmp_path):
    out = _run(tmp_path, "hf_example.py", "--epochs", "1")
    assert "Trial('even-odd'" in out and "eval_accuracy=" in out
    (trial,) = get_protocol(f"hdf5://{tmp_path}/runs").fetch_trials({"name": "even-odd"})
    assert trial.status is Status.Completed and trial.parameters["model"]["num_hidden_layers"] == 1
    assert trial.metrics["eval_accuracy"].steps == (12,)  # one epoch of 384 samples in batches of 32
    assert (tmp_path / trial.metadata["checkpoints"]["latest"]).is_dir()
