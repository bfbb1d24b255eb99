"""unitrack.integrations.keras: a tiny Keras 3 model trained for real on the CPU with the torch backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from unitrack.integrations.keras import UnitrackCallback
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status

ROOT = Path(__file__).resolve().parents[2]
# Keras' own variables (saving a .keras file) warn about numpy 2's copy keyword: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def _model(fail_at: int | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="hidden")]
    if fail_at is not None:

        class Explode(keras.layers.Layer):
            calls = 0

            def call(self, x, training=None):
                if training:
                    type(self).calls += 1
                    if type(self).calls > fail_at:
                        raise ValueError(f"boom after {fail_at} batches")
                return x

        layers.append(Explode())
    model = keras.Sequential([*layers, keras.layers.Dense(1)], name="tiny")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse", metrics=["mae"])
    return model


def _trial(uri: str, name: str):
    (trial,) = get_protocol(uri).fetch_trials({"name": name})
    return trial


def test_fit_records_parameters_epoch_and_batch_series_checkpoints_and_status(tmp_path):
    assert keras.backend.backend() == "torch"
    uri = f"hdf5://{tmp_path}/runs"
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "e{epoch:02d}.keras"))
    callback = UnitrackCallback(uri, name="mlp", batch_every=2, checkpoints=checkpoint)
    x, y = _data()
    _model().fit(
        x, y, batch_size=8, epochs=3, verbose=0, validation_data=_data(8, 1), callbacks=[callback, checkpoint]
    )
    trial = _trial(uri, "mlp")
    assert trial.status is Status.Completed
    params = trial.parameters
    assert params["epochs"] == 3 and params["steps"] == 4 and params["loss"] == "mse"
    assert params["optimizer"]["name"] == "sgd" and params["optimizer"]["learning_rate"] == pytest.approx(
        0.01
    )
    assert params["model"] == {"name": "tiny", "class": "Sequential", "params": 19, "layers": 2}
    assert trial.metadata["model_config"]["name"] == "tiny"
    assert trial.metrics["loss"].steps == (0, 1, 2) and trial.metrics["val_mae"].steps == (0, 1, 2)
    assert trial.metrics["batch/loss"].steps == (2, 4, 6, 8, 10, 12)  # every 2nd of 12 batches
    latest = trial.metadata["checkpoints"]["latest"]
    assert latest == str(tmp_path / "ckpt" / "e03.keras") and os.path.exists(
        latest
    )  # ran after ours: seen at the end
    assert trial.tags["framework"] == "keras"


def test_a_fit_that_raises_ends_in_error_with_its_traceback(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    x, y = _data()
    with (
        pytest.raises(ValueError, match="boom after 5 batches"),
        UnitrackCallback(uri, name="boom") as callback,
    ):
        _model(fail_at=5).fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    trial = _trial(uri, "boom")
    assert trial.status is Status.Exception
    (error,) = trial.errors
    assert error.startswith("Traceback (most recent call last)") and "ValueError: " in error
    assert "boom after 5 batches" in error  # Keras adds the layer's call to the message
    assert trial.metrics["loss"].steps == (0,) and len(trial.metrics["batch/loss"]) == 5


def test_a_second_fit_is_a_new_trial(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    callback = UnitrackCallback(uri, name="twice", batch_every=0)
    model, (x, y) = _model(), _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    trials = sorted(get_protocol(uri).fetch_trials({"name": "twice"}), key=lambda t: t.parameters["epochs"])
    assert [t.parameters["epochs"] for t in trials] == [1, 2] and {str(t.status) for t in trials} == {
        "completed"
    }
    assert trials[1].metrics["loss"].steps == (0, 1) and "batch/loss" not in trials[1].metrics


def test_a_rank_one_process_writes_nothing(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from tests.integrations.test_keras import _data, _model
            from unitrack.integrations.keras import UnitrackCallback

            callback = UnitrackCallback("hdf5://{tmp_path}/runs", name="r1")
            x, y = _data()
            _model().fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
            print("trained", callback.run.uid)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env.update(PYTHONPATH=str(ROOT), KERAS_BACKEND="torch", RANK="1")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("trained None") and not (tmp_path / "runs").exists()


def test_importing_the_module_does_not_import_keras():
    code = "import sys, unitrack.integrations.keras as k; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
