"""Files written by the original libraries open (issue #17 item 2): a track ``file://`` database and an xmen root.

The track database (tests/data/track/db.json) reproduces track's FileProtocol output from its source (track is
not on PyPI); see tests/data/track/make_db.py. These tests use only the public API, whatever engine ``file://``
has.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from unitrack.experiment.manager import ExperimentManager
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status

from .conftest import DATA, run_cli

TRACK_HASH_01 = "23390fc3be3ae1a9d92d0fa09504f300cbfb2875fa45e2fe026cc65ec412218f"


@pytest.fixture
def track_db(tmp_path: Path) -> Path:
    path = tmp_path / "db.json"
    shutil.copy(DATA / "track" / "db.json", path)
    return path


def test_a_database_written_by_track_opens_with_its_uids_and_values(track_db: Path) -> None:
    with get_protocol(f"file://{track_db}") as db:
        trials = {t.name: t for t in db.fetch_trials(None)}
        assert sorted(trials) == ["lr-0.01", "lr-0.1"]
        done = trials["lr-0.1"]
        assert done.uid == f"{TRACK_HASH_01}_0"  # track's own hash is kept, so references to it still work
        assert done.parameters == {"lr": 0.1, "epochs": 2, "model": "resnet"}
        assert done.metrics["loss"].steps == (0, 1)
        assert done.metrics["loss"].values == pytest.approx((1.1, 0.55))
        assert done.metrics["final"].steps == (None,) and done.metrics["final"].latest == pytest.approx(0.55)
        assert done.status == Status.Completed and done.chronos["runtime"] == 12.5
        failed = trials["lr-0.01"]
        assert failed.status == Status.Exception and failed.errors == ("<class 'RuntimeError'>",)
        (group,) = db.fetch_groups(None)
        assert group.name == "lr-sweep" and group.trials == {done.uid, failed.uid}
        (project,) = db.fetch_projects(None)
        assert project.name == "vision" and project.description == "image models"
        assert [t.name for t in db.fetch_trials({"parameters.lr": {"$lt": 0.05}})] == ["lr-0.01"]


def test_a_track_database_takes_new_values_and_keeps_them(track_db: Path) -> None:
    with get_protocol(f"file://{track_db}") as db:
        (trial,) = db.fetch_trials({"name": "lr-0.1"})
        db.log_trial_metrics(trial, step=2, loss=0.25)
        db.add_trial_tags(trial, note="continued in unitrack")
    with get_protocol(f"file://{track_db}") as db:
        (trial,) = db.fetch_trials({"name": "lr-0.1"})
        assert trial.metrics["loss"].steps == (0, 1, 2) and trial.metrics["loss"].latest == 0.25
        assert trial.tags["note"] == "continued in unitrack" and trial.uid == f"{TRACK_HASH_01}_0"


def test_view_lists_a_track_database(track_db: Path) -> None:
    result = run_cli("view", f"file://{track_db}")
    assert result.returncode == 0, result.stderr
    assert "lr-0.1" in result.stdout and "lr-0.01" in result.stdout


# ----------------------------------------------------------------------------------------------- xmen
XMEN_DEFAULTS = """\
_created: 06:58PM September 16, 2019  # The date the defaults were created
_version:
  module: /old/project/experiment.py
  class: AnExperiment
a: 3 #  This is the first parameter (default=3)
b: '4' #  This is the second parameter (default='4')
"""

XMEN_PARAMS = """\
_root: {root}  #  The root directory to which the experiment belongs (should not be set)
_name: {name} #  The name of the experiment (should not be set)
_status: {status} #  The status of the experiment (one of ['registered' | 'running' | 'error' | 'finished'])
_created: 07:41PM September 16, 2019 #  The date the experiment was created (should not be set)
_purpose: this is an experiment example #  The purpose for the experiment (should not be set)
_messages: {{}} #  A dictionary of messages which are able to vary throughout the experiment (should not be set)
_version:
  module: /old/project/experiment.py
  class: AnExperiment
  git:
    local_path: /old/project
    remote_url: git@example.org:old/project.git
    hash: 80dcfd98e6c3c17e1bafa72ee56744d4a6e30e80
a: {a} #  This is the first parameter (default=3)
b: '3' #  This is the second parameter (default='4')
"""


@pytest.fixture
def xmen_root(tmp_path: Path) -> Path:
    """An experiment root as xmen's ExperimentManager wrote it (its documented experiment.yml and params.yml)."""
    root = tmp_path / "old-root"
    root.mkdir()
    (root / "defaults.yml").write_text(XMEN_DEFAULTS)
    (root / "script.sh").write_text('#!/bin/bash\necho "$(cat ${1})"\n')
    (root / "script.sh").chmod(0o755)
    names = [("a=10__b=3", 10, "finished"), ("a=20__b=3", 20, "registered")]
    lines = [f"root: {root}", f"defaults: {root}/defaults.yml", f"script: {root}/script.sh", "experiments:"]
    lines += [f"- {root}/{name}" for name, _, _ in names]
    lines += ["overides:"] + [f"- a: {a}\n  b: '3'" for _, a, _ in names]
    lines += ["created: 07:41PM September 16, 2019", "purpose: sweep a", "notes: []", "type: script"]
    (root / "experiment.yml").write_text("\n".join(lines) + "\n")
    for name, a, status in names:
        (root / name).mkdir()
        (root / name / "params.yml").write_text(XMEN_PARAMS.format(root=root, name=name, status=status, a=a))
    return root


def test_an_xmen_root_loads_and_lists_its_experiments(xmen_root: Path) -> None:
    manager = ExperimentManager(xmen_root)
    manager.check_initialised()
    assert [Path(p).name for p in manager.experiments] == ["a=10__b=3", "a=20__b=3"]
    assert [Path(p).name for p in manager.runnable()] == ["a=20__b=3"]
    result = run_cli("view", str(xmen_root))
    assert result.returncode == 0, result.stderr
    assert "a=10__b=3" in result.stdout and "finished" in result.stdout and "registered" in result.stdout
