"""Short reprs for notebooks and logs: a trial with long series prints one line, not every point."""

from __future__ import annotations

import re

from unitrack.persistence.structure import Metric, Project, Status, Trial, TrialGroup
from unitrack.persistence.track import TrackClient


def _long_trial() -> Trial:
    steps = tuple(range(5000))
    return Trial(
        name="resnet-lr0.1",
        revision=3,
        parameters={f"p{i}": i for i in range(40)},
        metadata={"checkpoints": {"model": "/runs/x/checkpoints/model/5000.pt"}, "blob": "x" * 10_000},
        metrics={
            name: Metric(name, steps, tuple(float(s) for s in steps), 4999.0) for name in ("loss", "acc")
        },
        status=Status.Exception,
        errors=("Traceback ...\nValueError: boom",),
    )


def test_a_trial_with_series_prints_one_short_line():
    trial = _long_trial()
    text = repr(trial)
    assert len(text) < 150, text
    assert text == (
        f"Trial('resnet-lr0.1', uid={trial.hash[:8]}…_3, error, 40 parameters, "
        "2 metrics / 10,000 points, 1 error)"
    )
    assert str(trial) == text


def test_a_metric_prints_its_size_range_and_latest_value():
    assert repr(_long_trial().metrics["loss"]) == "Metric('loss', 5,000 points, steps 0..4999, latest=4999.0)"
    assert repr(Metric("x", (None,), (1,), 1)) == "Metric('x', 1 point, latest=1)"


def test_groups_and_projects_count_their_trials_instead_of_listing_them():
    group = TrialGroup(
        name="sweep", project_id="vision", trials=frozenset(f"{i:064x}_0" for i in range(1000))
    )
    assert re.fullmatch(
        r"TrialGroup\('sweep', uid=[0-9a-f]{8}…, project='vision', 1,000 trials\)", repr(group)
    )
    project = Project(name="vision", groups=frozenset({group.uid}), trials=group.trials)
    assert repr(project) == "Project('vision', 1 group, 1,000 trials)"


def test_client_and_logger_reprs_name_the_backend_and_the_trial_without_a_password():
    client = TrackClient("ephemeral://")
    assert repr(client) == "TrackClient(ephemeral://)"
    client.set_project(name="vision")
    client.new_trial(name="run", parameters={"lr": 0.1})
    for _ in range(3):
        client.log_metrics(step=_, loss=1.0)
    client.logger.refresh()
    text = repr(client)
    assert text.startswith("TrackClient(ephemeral://, project='vision', trial=Trial('run', uid=")
    assert text.endswith(", running, 1 parameter, 1 metric / 3 points))")
    assert repr(client.logger).startswith("TrialLogger(Trial('run', ") and "backend=ephemeral://" in repr(
        client.logger
    )
    client.logger.finish()
