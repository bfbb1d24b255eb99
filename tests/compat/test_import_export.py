"""``unitrack import tensorboard|mlflow`` and ``unitrack export`` (issue #17 items 7 and 8): inputs written by the
real tools in the test, outputs read back by pandas and by TensorBoard's own reader."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import MetricPoint, Status, Trial
from unitrack.store.readers import CollectionReader

from .conftest import ROOT, run_cli


@pytest.fixture
def tb_logdir(tmp_path: Path) -> Path:
    from tensorboardX import SummaryWriter

    logdir = tmp_path / "tb"
    for run, lr in (("run-a", 0.1), ("nested/run-b", 0.01)):
        writer = SummaryWriter(str(logdir / run))
        for step in range(5):
            writer.add_scalar("train/loss", lr / (step + 1), step)
            writer.add_scalar("acc", step / 10, step)
        writer.add_hparams({"lr": lr, "opt": "sgd", "bn": True, "layers": 3}, {"hparam/acc": 0.4})
        writer.close()
    return logdir


def test_import_tensorboard_reads_scalars_and_hparams_once(tb_logdir: Path, tmp_path: Path) -> None:
    dst = f"hdf5://{tmp_path}/runs"
    first = run_cli("import", "tensorboard", str(tb_logdir), "--to", dst)
    assert first.returncode == 0, first.stderr
    assert "2 created" in first.stdout
    again = run_cli("import", "tensorboard", str(tb_logdir), "--to", dst)
    assert again.returncode == 0 and "0 point(s)" in again.stdout and "2 unchanged" in again.stdout
    with get_protocol(dst) as db:
        trials = {t.name: t for t in db.fetch_trials(None)}
        assert sorted(trials) == ["nested.run-b", "run-a"]
        a = trials["run-a"]
        assert a.parameters == {"lr": 0.1, "opt": "sgd", "bn": True, "layers": 3}
        assert a.metrics["train/loss"].steps == (0, 1, 2, 3, 4)
        assert a.metrics["train/loss"].values == pytest.approx([0.1 / (s + 1) for s in range(5)], rel=1e-6)
        assert a.metrics["hparam/acc"].latest == pytest.approx(0.4)
        assert a.metadata["source"] == {"tool": "tensorboard", "logdir": str(tb_logdir), "run": "run-a"}
        assert [g.name for g in db.fetch_groups(None)] == ["tb"]


@pytest.fixture
def mlflow_store(tmp_path: Path) -> Path:
    """An MLflow file store written by mlflow itself, in a child process (mlflow configures global state)."""
    store = tmp_path / "mlruns"
    script = (
        "import mlflow, sys\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "mlflow.set_experiment('sweep')\n"
        "for lr in (0.1, 0.01):\n"
        "    with mlflow.start_run(run_name=f'lr-{lr}'):\n"
        "        mlflow.log_params({'lr': lr, 'opt': 'sgd', 'epochs': 3})\n"
        "        mlflow.set_tag('team', 'vision')\n"
        "        for step in range(3):\n"
        "            mlflow.log_metric('loss', lr / (step + 1), step=step)\n"
        "mlflow.set_experiment('other')\n"
        "run = mlflow.start_run(run_name='crashed')\n"
        "mlflow.log_metric('loss', 9.0, step=0)\n"
        "mlflow.end_run(status='FAILED')\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", script, store.as_uri()], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return store


def test_import_mlflow_reads_experiments_runs_params_history_and_tags(
    mlflow_store: Path, tmp_path: Path
) -> None:
    dst = f"file://{tmp_path}/db.json"
    result = run_cli("import", "mlflow", mlflow_store.as_uri(), "--to", dst)
    assert result.returncode == 0, result.stderr
    again = run_cli("import", "mlflow", str(mlflow_store), "--to", dst, "--experiment", "sweep")
    assert again.returncode == 0 and "0 point(s)" in again.stdout, again.stdout + again.stderr
    with get_protocol(dst) as db:
        trials = {t.name: t for t in db.fetch_trials(None)}
        assert sorted(trials) == ["crashed", "lr-0.01", "lr-0.1"]
        run = trials["lr-0.1"]
        assert run.parameters == {"lr": 0.1, "opt": "sgd", "epochs": 3}
        assert run.metrics["loss"].steps == (0, 1, 2)
        assert run.metrics["loss"].values == pytest.approx([0.1, 0.05, 0.1 / 3])
        assert run.tags == {"team": "vision"} and run.status == Status.Completed
        assert run.metadata["source"]["tool"] == "mlflow" and run.metadata["source"]["run_id"]
        assert trials["crashed"].status == Status.Exception
        assert sorted(g.name for g in db.fetch_groups(None)) == ["other", "sweep"]
    missing = run_cli("import", "mlflow", str(mlflow_store), "--to", dst, "--experiment", "nope")
    assert missing.returncode == 1 and "no experiment ['nope']" in missing.stderr


@pytest.fixture
def logged(tmp_path: Path) -> str:
    uri = f"hdf5://{tmp_path}/runs"
    with get_protocol(uri) as db:
        for i, lr in enumerate((0.1, 0.01)):
            trial = db.new_trial(
                Trial(name=f"run-{i}", parameters={"lr": lr, "net": {"depth": 4 + i}, "layers": [8, 8]})
            )
            assert trial is not None
            db.log_trial_start(trial)
            db.log_trial_metric_points(trial, [MetricPoint("loss", s, lr / (s + 1)) for s in range(4)])
            db.log_trial_metrics(trial, note=float(i))  # no step
            db.log_trial_finish(trial, None, None, None)
    return uri


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_tables_round_trip_through_pandas(logged: str, tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    out = tmp_path / "out"
    result = run_cli("export", logged, "--format", fmt, "-o", str(out))
    assert result.returncode == 0, result.stderr
    read = pd.read_parquet if fmt == "parquet" else lambda p: pd.read_csv(p)
    runs = read(out / f"runs.{fmt}")
    if fmt == "csv":
        runs = runs.set_index("uid")
    points = read(out / f"metrics.{fmt}")
    with get_protocol(logged) as db:
        trials = {t.uid: t for t in db.fetch_trials(None)}
    assert set(runs.index) == set(trials)
    for uid, trial in trials.items():
        row = runs.loc[uid]
        assert row["name"] == trial.name and row["status"] == "finished"
        assert row["parameters.lr"] == trial.parameters["lr"]
        assert row["parameters.net.depth"] == trial.parameters["net"]["depth"]
        assert row["parameters.layers"] == "[8, 8]"
        assert row["metrics.loss"] == pytest.approx(trial.metrics["loss"].latest)
        mine = points[points.uid == uid]
        for name, metric in trial.metrics.items():
            series = mine[mine.metric == name]
            assert series["value"].tolist() == pytest.approx(list(metric.values))
            steps = [None if math.isnan(s) else s for s in series["step"].tolist()]
            assert steps == [None if s is None else float(s) for s in metric.steps]


def test_export_tensorboard_shows_every_run_in_tensorboard_and_cox_tensorboard(
    logged: str, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    result = run_cli("export", logged, "--format", "tensorboard", "-o", str(out))
    assert result.returncode == 0, result.stderr
    for name, lr in (("run-0", 0.1), ("run-1", 0.01)):
        accumulator = EventAccumulator(str(out / name / "tensorboard"))
        accumulator.Reload()
        loss = accumulator.Scalars("loss")
        assert [e.step for e in loss] == [0, 1, 2, 3]
        assert [e.value for e in loss] == pytest.approx([lr / (s + 1) for s in range(4)], rel=1e-6)
    view = subprocess.run(
        [sys.executable, "-m", "unitrack.store.tensorboard_view", "--logdir", str(out)]
        + ["--format-str", "lr-{lr}", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert view.returncode == 0, view.stderr
    assert "lr-0.1-run-0:" in view.stdout and "lr-0.01-run-1:" in view.stdout
    metrics = CollectionReader(out).df("metrics")
    assert len(metrics) == 2 * 5
