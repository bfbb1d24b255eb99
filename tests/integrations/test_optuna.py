"""unitrack.integrations.optuna: every Optuna trial becomes a unitrack trial of the study's group; the ask/tell
example's proposals are unitrack experiments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from unitrack.integrations.optuna import UnitrackCallback
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status
from unitrack.persistence.track import TrackClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    layers = trial.suggest_int("layers", 1, 3)
    if trial.number == 2:
        raise ValueError("diverged")
    for step in range(4):
        trial.report((x - 2) ** 2 + step, step)
        if trial.number == 4 and step == 1:
            raise optuna.TrialPruned()
    return (x - 2) ** 2 + layers


def test_every_trial_is_recorded_with_parameters_values_state_and_intermediate_series(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    callback = UnitrackCallback(uri, project="tuning")
    study = optuna.create_study(study_name="quad/v1", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(callback.track(_objective), n_trials=6, callbacks=[callback], catch=(ValueError,))
    protocol = get_protocol(uri)
    trials = {t.tags["number"]: t for t in protocol.fetch_trials({"tags.study": "quad/v1"})}
    assert sorted(trials) == list(range(6)) and len(callback.uids) == 6
    (group,) = protocol.fetch_groups({"name": "quad_v1"})  # the study is the group (a '/' cannot name one)
    assert all(t.group_id == group.uid and t.project_id == "tuning" for t in trials.values())
    done = trials[0]
    frozen = study.trials[0]
    assert done.name == "quad_v1-0" and done.status is Status.Completed
    assert done.parameters == frozen.params
    assert done.metrics["value"].latest == pytest.approx(frozen.value)
    assert done.metrics["intermediate_value"].steps == (0, 1, 2, 3)
    assert done.metrics["value"].steps == (3,)  # at the last reported step
    assert done.metadata["optuna"]["state"] == "COMPLETE" and done.metadata["optuna"]["duration_s"] >= 0
    assert done.metadata["end_time"] >= done.metadata["start_time"]
    failed = trials[2]
    assert (
        failed.status is Status.Exception and "diverged" in failed.errors[0] and "value" not in failed.metrics
    )
    pruned = trials[4]
    assert pruned.status is Status.Interrupted and pruned.metrics["intermediate_value"].steps == (0, 1)
    assert pruned.metadata["optuna"]["state"] == "PRUNED"
    best = group.metadata["optuna"]["best"]
    assert [b["number"] for b in best] == [study.best_trial.number]
    assert group.metadata["optuna"]["directions"] == ["minimize"]
    # compared like a sweep: a query across the study
    better = protocol.fetch_trials({"group_id": group.uid, "metrics.value": {"$lt": study.best_value + 1e-9}})
    assert [t.tags["number"] for t in better] == [study.best_trial.number]


def test_several_objectives_are_named_series(tmp_path):
    client = TrackClient("ephemeral://")
    client.set_project(name="p")
    client.set_group(name="pareto")
    callback = UnitrackCallback(client)
    study = optuna.create_study(
        directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.set_metric_names(["loss", "accuracy"])
    study.optimize(
        lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3, callbacks=[callback]
    )
    trials = client.protocol.fetch_trials({"group_id": client.group.uid})
    assert len(trials) == 3 and all({"loss", "accuracy"} <= set(t.metrics) for t in trials)
    assert repr(callback) == "UnitrackCallback(optuna, 'p', 3 trials written)"
    group = client.protocol.get_trial_group(client.group)
    assert group.metadata["optuna"]["directions"] == ["minimize", "maximize"]


def test_the_ask_tell_example_runs_each_proposal_as_an_experiment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env["PYTHONPATH"] = str(ROOT)
    root = tmp_path / "adaptive"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "optuna_sweep.py"), "--root", str(root), "--trials", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("best: trial-")
    protocol = get_protocol(f"hdf5://{root}")
    trials = protocol.fetch_trials({})
    assert sorted(t.name for t in trials) == [f"trial-{i}" for i in range(5)]
    assert all(str(t.status) == "completed" and "f" in t.metrics for t in trials)
    assert sorted(t.tags["optuna_trial"] for t in trials) == list(range(5))
    assert all((root / t.name / "params.yml").exists() for t in trials)  # each is an xmen experiment folder
    (group,) = protocol.fetch_groups({})
    best = group.metadata["optuna"]["best"]
    assert best["value"] == min(t.metadata["messages"]["f"] for t in trials)


def test_a_failure_without_track_says_how_to_keep_the_traceback():
    callback = UnitrackCallback("ephemeral://")
    study = optuna.create_study(study_name="plain")

    def objective(trial):
        raise ValueError("no")

    study.optimize(objective, n_trials=1, callbacks=[callback], catch=(ValueError,))
    (trial,) = callback.protocol.fetch_trials({})
    assert trial.status is Status.Exception and "UnitrackCallback.track" in trial.errors[0]
