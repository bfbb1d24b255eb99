"""unitrack.lightning: a tiny model trained for real on the CPU, logged through UnitrackLogger / MonitorLogger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integrations.lightning_models import BATCHES, Tiny, loader, trainer
from unitrack.experiment import Experiment
from unitrack.lightning import MonitorLogger, TensorBoardLogger, UnitrackLogger
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status
from unitrack.persistence.track import TrackClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning",  # advice for real data sets
)

# log_every_n_steps=2 over 2 epochs of 4 batches: Lightning hands its loggers steps 1, 3, 5, 7 (the index of the
# batch that logged, what its TensorBoard logger shows too); validation logs at the end of each epoch.
TRAIN_STEPS = (1, 3, 5, 7)


def _trial(uri: str, name: str):
    (trial,) = get_protocol(uri).fetch_trials({"name": name})
    return trial


def test_fit_records_parameters_series_checkpoints_and_status(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    logger = UnitrackLogger(uri, name="lit", project="vision", group="tiny")
    trainer(logger, tmp_path / "out").fit(Tiny(lr=0.05), loader(), loader(1))
    trial = _trial(uri, "lit")
    assert trial.status is Status.Completed
    assert trial.parameters == {  # nested dicts and a Namespace, made plain and kept nested
        "lr": 0.05,
        "fail_at": -1,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "data": {"batch_size": 8, "shuffle": False},
    }
    assert get_protocol(uri).fetch_trials({"parameters.optimizer.momentum": 0.9}) == [trial]
    assert trial.metrics["train_loss"].steps == TRAIN_STEPS
    assert trial.metrics["val_loss"].steps == (BATCHES - 1, 2 * BATCHES - 1)
    checkpoints = trial.metadata["checkpoints"]
    final = str(tmp_path / "out" / "lit" / "checkpoints" / f"epoch=1-step={2 * BATCHES}.ckpt")
    assert checkpoints["latest"] == checkpoints["best"] == final and os.path.exists(final)
    assert trial.tags["framework"] == "lightning"
    assert trial.project_id == "vision" and trial.group_id is not None
    assert (tmp_path / "runs" / "lit" / "store.h5").exists()  # committed at the end: a cox store


def test_a_fit_that_raises_ends_in_error_with_its_traceback(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    logger = UnitrackLogger(uri, name="boom")
    with pytest.raises(ValueError, match="boom at step 3"):
        trainer(logger, tmp_path / "out").fit(Tiny(fail_at=3), loader())
    trial = _trial(uri, "boom")
    assert trial.status is Status.Exception
    (error,) = trial.errors
    assert error.startswith("Traceback (most recent call last)") and "ValueError: boom at step 3" in error
    assert "training_step" in error
    assert trial.metrics["train_loss"].steps == (1,)  # what was logged before the failure is kept


def test_metrics_go_to_the_given_client_trial_with_system_metrics(tmp_path):
    client = TrackClient(f"hdf5://{tmp_path}/runs")
    client.set_project(name="p")
    client.new_trial(name="mine", parameters={"seed": 1})
    logger = UnitrackLogger(client, system_metrics=0.1)
    trainer(logger, tmp_path / "out", max_epochs=1).fit(Tiny(), loader())
    trial = client.logger.refresh()
    assert trial.parameters["seed"] == 1 and trial.parameters["lr"] == 0.05  # merged into the given trial
    assert trial.metrics["train_loss"].steps == (1, 3)
    assert trial.status is Status.Completed
    assert logger.run._sampler is None  # the sampler stopped with the run


class Fit(Experiment):
    """Fit a line with Lightning."""

    lr: float = 0.05  # @p learning rate

    def run(self):
        trainer(UnitrackLogger(self), self.directory).fit(Tiny(lr=self.lr), loader())


def test_through_an_experiment_checkpoints_land_in_its_folder(tmp_path):
    ex = Fit(tmp_path, "fit")
    logger = UnitrackLogger(ex)
    assert logger.save_dir == str(tmp_path) and logger.name == "fit"
    trainer(logger, tmp_path / "elsewhere").fit(Tiny(), loader())  # not running: the logger runs it
    assert ex.status == "finished"
    (trial,) = ex.backend.fetch_trials({"name": "fit"})
    assert trial.parameters["lr"] == 0.05 and trial.parameters["optimizer"] == {
        "name": "sgd",
        "momentum": 0.9,
    }
    assert trial.metrics["train_loss"].steps == TRAIN_STEPS
    latest = trial.metadata["checkpoints"]["latest"]
    assert latest == str(tmp_path / "fit" / "checkpoints" / "epoch=1-step=8.ckpt") and os.path.exists(latest)


def test_inside_a_running_experiment_the_experiment_keeps_its_status(tmp_path):
    ex = Fit(tmp_path, "fit")
    ex()
    assert ex.status == "finished"
    (trial,) = ex.backend.fetch_trials({"name": "fit"})
    assert trial.metrics["train_loss"].steps == TRAIN_STEPS and str(trial.status) == "completed"


def test_monitor_specs_write_tensorboard_and_the_trial(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from unitrack.monitor.hooks.tensorboard import close_writers

    uri = f"hdf5://{tmp_path}/runs"
    logger = MonitorLogger(
        uri,
        name="specs",
        save_dir=tmp_path / "tb",
        sca="train_loss@2s",  # at the logged steps (0..7, log_every_n_steps=1) that are multiples of 2 ...
        sca_pref="tb/",
        hist="weights",  # ... every time the module logs weights (end of each epoch)
        txt="note@2e",  # at the end of every second epoch
        msg="val_loss@1e",  # kept in the trial's messages
        msg_keep="min",
    )
    assert TensorBoardLogger is MonitorLogger
    trainer(logger, tmp_path / "out", log_every_n_steps=1).fit(Tiny(images=True), loader(), loader(1))
    close_writers()
    events = EventAccumulator(str(tmp_path / "tb" / "specs" / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("tb/train_loss")] == [0, 2, 4, 6]
    assert [e.step for e in events.Histograms("weights")] == [BATCHES, 2 * BATCHES]
    assert tags["tensors"] == ["note/text_summary"]
    trial = _trial(uri, "specs")
    assert trial.metrics["train_loss"].steps == tuple(range(2 * BATCHES))  # every scalar is a series too
    assert "weights" not in trial.metrics and "note" not in trial.metrics  # non-scalars reach hooks only
    messages = trial.metadata["messages"]
    assert messages["val_loss"] == min(trial.metrics["val_loss"].values)


def test_monitor_logger_refuses_triggers_lightning_does_not_count(tmp_path):
    from unitrack.errors import ConfigError

    with pytest.raises(ConfigError, match="steps and epochs only"):
        MonitorLogger("ephemeral://", sca="loss@2er")


def _run_script(tmp_path: Path, code: str, env: dict[str, str]) -> str:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    full_env.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_under_real_ddp_only_rank_zero_writes(tmp_path):
    """Two processes (DDP over gloo on the CPU): one trial, written by rank 0; rank 1 creates nothing."""
    uri = f"hdf5://{tmp_path}/runs"
    out = _run_script(
        tmp_path,
        f"""
        import json, warnings
        warnings.simplefilter("ignore")
        from tests.integrations.lightning_models import Tiny, loader, trainer
        from unitrack.lightning import UnitrackLogger

        if __name__ == "__main__":
            logger = UnitrackLogger({uri!r}, name="ddp")
            t = trainer(logger, {str(tmp_path / "out")!r}, strategy="ddp", devices=2)
            t.fit(Tiny(), loader(), loader(1))
            print(json.dumps({{"rank": t.global_rank, "uid": logger.run.uid,
                              "experiment": type(logger.experiment).__name__}}))
        """,
        {},
    )
    ranks = {r["rank"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    assert ranks[1] == {"rank": 1, "uid": None, "experiment": "_DummyExperiment"}
    (trial,) = get_protocol(uri).fetch_trials({})
    assert trial.uid == ranks[0]["uid"] and trial.status is Status.Completed
    assert trial.metrics["train_loss"].steps == (1, 3)  # 2 batches per process per epoch, rank 0's values


def test_a_rank_one_process_writes_nothing(tmp_path):
    """A process a launcher marks as rank 1 (``RANK=1``) trains, and creates no trial and no folder."""
    out = _run_script(
        tmp_path,
        f"""
        import warnings
        warnings.simplefilter("ignore")
        from tests.integrations.lightning_models import Tiny, loader, trainer
        from unitrack.lightning import UnitrackLogger

        logger = UnitrackLogger("hdf5://{tmp_path}/runs", name="r1", system_metrics=0.1)
        trainer(logger, {str(tmp_path / "out")!r}).fit(Tiny(), loader())
        print("trained", logger.run.uid)
        """,
        {"RANK": "1"},
    )
    assert out.strip().endswith("trained None")
    assert not (tmp_path / "runs").exists()
