"""``unitrack sync``: any backend to any other, only what the destination lacks, resumable after SIGKILL
(issue #17 item 6)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.persistence.conftest import ADMIN, ADMIN_PASSWORD, make_users
from unitrack.persistence.artifacts import log_artifacts, read_artifact
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.server import ServerThread
from unitrack.persistence.structure import MetricPoint, Project, Status, Trial, TrialGroup
from unitrack.persistence.sync import STAMP_KEY, sync

from .conftest import ROOT, run_cli


def fill(db: Protocol, runs: int = 3, points: int = 50, *, artifacts: bool = True) -> None:
    """Runs with stepped and step-less series, fields of every kind, a failed one, timers and an artifact."""
    project = db.new_project(Project(name="vision", description="image models", metadata={"owner": "ada"}))
    group = db.new_trial_group(TrialGroup(name="sweep", project_id=project.uid))
    assert group is not None
    for i in range(runs):
        trial = db.new_trial(
            Trial(
                name=f"run-{i}",
                description=f"purpose {i}",
                parameters={"lr": 0.1 / (i + 1), "layers": [8, 8], "opt": {"name": "sgd"}},
                tags={"user": "ada"},
                metadata={"host": "node-1"},
                project_id=project.uid,
                group_id=group.uid,
            )
        )
        assert trial is not None
        db.log_trial_start(trial)
        with_nan = [MetricPoint("loss", s, math.nan if s == 3 else 1.0 / (s + 1)) for s in range(points)]
        db.log_trial_metric_points(trial, with_nan)
        for v in (0.5, 0.5, 0.25):
            db.log_trial_metrics(trial, accuracy=v)  # no step: duplicates are real points
        db.log_trial_chrono_start(trial, "epoch")
        db.log_trial_chrono_finish(trial, "epoch", None, None, None)
        if artifacts:
            log_artifacts(db, trial, {"code/train.py": f"print({i})\n".encode()})
        if i == runs - 1:
            db.log_trial_finish(trial, RuntimeError, RuntimeError("diverged"), None)
        else:
            db.log_trial_finish(trial, None, None, None)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def content(db: Protocol) -> dict[str, Any]:
    """Everything a user reads back of each trial (the sync stamp left out)."""
    out = {}
    for t in db.fetch_trials(None):
        metrics = {
            name: (
                tuple(m.steps),
                tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in m.values),
            )
            for name, m in t.metrics.items()
        }
        metadata = {k: v for k, v in t.metadata.items() if k not in (STAMP_KEY, "artifacts")}
        artifacts = {name: read_artifact(db, t, name) for name in (t.metadata.get("artifacts") or {})}
        out[t.uid] = (
            t.name,
            t.description,
            dict(t.parameters),
            dict(t.tags),
            metadata,
            metrics,
            str(t.status),
            tuple(t.errors),
            t.group_id,
            t.project_id,
            {name: _rounded(state) for name, state in t.chronos.items()},
            artifacts,
        )
    return out


@pytest.fixture(params=["ephemeral", "file", "hdf5", "socket", "postgresql"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Protocol]:
    kind = request.param
    if kind == "socket":
        with ServerThread(EphemeralProtocol(), make_users(tmp_path / "users.json")) as srv:
            client = SocketProtocol(f"socket://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{srv.port}")
            yield client
            client.close()
        return
    if kind == "postgresql":
        from tests.persistence import pg

        uri = pg.schema_uri(request.getfixturevalue("postgres_uri"), f"sync_{os.getpid()}_{id(tmp_path)}")
    else:
        uri = {
            "ephemeral": "ephemeral://",
            "file": f"file://{tmp_path}/dst.json",
            "hdf5": f"hdf5://{tmp_path}/dst",
        }[kind]
    db = get_protocol(uri)
    yield db
    db.close()


def test_sync_copies_every_run_once_and_a_second_sync_sends_nothing(tmp_path: Path, destination) -> None:
    with get_protocol(f"hdf5://{tmp_path}/src") as src:
        fill(src)
        first = sync(src, destination)
        assert (first.trials_created, first.points, first.artifacts, first.failed) == (3, 3 * 53, 3, {})
        assert content(destination) == content(src)
        (project,) = destination.fetch_projects(None)
        assert project.description == "image models" and project.metadata == {"owner": "ada"}
        assert [g.name for g in destination.fetch_groups(None)] == ["sweep"]
        again = sync(src, destination)
        assert (again.points, again.trials_unchanged, again.trials_created, again.artifacts) == (0, 3, 0, 0)
        assert content(destination) == content(src)


def test_sync_sends_only_what_is_new(tmp_path: Path) -> None:
    with get_protocol(f"hdf5://{tmp_path}/src") as src, get_protocol(f"file://{tmp_path}/dst.json") as dst:
        fill(src, runs=2)
        sync(src, dst)
        (trial,) = src.fetch_trials({"name": "run-0"})
        src.log_trial_metrics(trial, step=50, loss=0.01)
        src.log_trial_metrics(trial, accuracy=0.2)
        src.add_trial_tags(trial, note="best")
        report = sync(src, dst)
        assert (report.points, report.trials_updated, report.trials_unchanged) == (2, 1, 1)
        assert content(dst) == content(src)
        full = sync(src, dst, full=True)
        assert (full.points, full.trials_unchanged) == (0, 2)


def test_a_change_that_keeps_every_latest_value_is_synced(tmp_path: Path, destination) -> None:
    with get_protocol(f"hdf5://{tmp_path}/src") as src:
        fill(src, runs=2)
        sync(src, destination)
        (trial,) = src.fetch_trials({"name": "run-0"})
        assert trial.metrics["loss"].latest == 1 / 50 and trial.metrics["accuracy"].latest == 0.25
        src.log_trial_metrics(trial, step=50, loss=1 / 50)  # a new step, the same latest value
        src.log_trial_metrics(trial, accuracy=0.25)  # a step-less point equal to the latest one
        src.log_trial_metrics(trial, step=10, loss=5.0)  # a past point replaced
        src.log_trial_metrics(trial, step=50, loss=1 / 50)  # ... and the latest logged again as it was
        (changed,) = src.find_trial_summaries({"name": "run-0"})
        assert (changed.metrics["loss"].latest, changed.metrics["accuracy"].latest) == (1 / 50, 0.25)
        report = sync(src, destination)
        assert (report.points, report.trials_updated, report.trials_unchanged) == (3, 1, 1)
        assert content(destination) == content(src)
        assert sync(src, destination).trials_unchanged == 2


def _dst_trials(root: Path) -> int:
    return len(list(root.glob("*/trial.json")))


def test_a_sync_killed_midway_resumes_and_duplicates_nothing(tmp_path: Path) -> None:
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    with get_protocol(f"hdf5://{src_root}") as src:
        fill(src, runs=30, points=400)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "unitrack", "sync", str(src_root), str(dst_root), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        wait_until(lambda: _dst_trials(dst_root) >= 5 or proc.poll() is not None, 120, "5 trials copied")
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    killed_at = _dst_trials(dst_root)
    resumed = run_cli("sync", str(src_root), str(dst_root), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "30 trial(s)" in resumed.stdout
    again = run_cli("sync", str(src_root), str(dst_root), "--no-progress")
    assert again.returncode == 0 and "0 point(s)" in again.stdout and "30 unchanged" in again.stdout
    with get_protocol(f"hdf5://{src_root}") as src, get_protocol(f"hdf5://{dst_root}") as dst:
        assert content(dst) == content(src)  # every point once: step-less series would show a duplicate
    assert killed_at < 30, "the sync finished before it could be killed; the test proved nothing"


WRITER = """
import sys, time
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Trial
with get_protocol(sys.argv[1]) as db:
    trial = db.new_trial(Trial(name="live", parameters={"n": 1}))
    db.log_trial_start(trial)
    for step in range(200):
        db.log_trial_metrics(trial, step=step, loss=1.0 / (step + 1))
        if step % 20 == 0:
            db.commit()
            time.sleep(0.01)  # a training step
    db.log_trial_finish(trial, None, None, None)
"""


def test_follow_copies_a_run_while_it_is_written_until_it_ends(tmp_path: Path) -> None:
    src_uri, dst_uri = f"hdf5://{tmp_path}/src", f"file://{tmp_path}/dst.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", WRITER, src_uri], env=env) as writer:
        follow = run_cli("sync", src_uri, dst_uri, "--follow", "--interval", "0.2", "--until-finished")
        assert writer.wait(120) == 0
    assert follow.returncode == 0, follow.stderr
    with get_protocol(src_uri) as src, get_protocol(dst_uri) as dst:
        (trial,) = dst.fetch_trials(None)
        assert trial.status == Status.Completed and trial.metrics["loss"].steps == tuple(range(200))
        assert content(dst) == content(src)


def _pg_count(uri: str, sql: str) -> int:
    import psycopg

    from unitrack.persistence.backends.sql import SQLProtocol

    db = SQLProtocol(uri)  # for the connection string with the schema's search_path
    try:
        with psycopg.connect(db._conninfo, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0
    finally:
        db.close()


def test_a_sync_to_postgresql_killed_mid_copy_resumes_and_duplicates_nothing(
    tmp_path: Path, postgres_uri: str
) -> None:
    from tests.persistence import pg

    src_root = tmp_path / "src"
    with get_protocol(f"hdf5://{src_root}") as src:
        fill(src, runs=80, points=4000, artifacts=False)  # batches of about 50 whole trials, one COPY each
        wanted = sum(len(m) for t in src.fetch_trials(None) for m in t.metrics.values())
    uri = pg.schema_uri(postgres_uri, f"sync-kill-{tmp_path}")
    _pg_count(uri, "SELECT 1")  # the tables exist before the sync starts
    copying = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY unitrack_metric_points%'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-m", "unitrack", "sync", str(src_root), uri, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        wait_until(lambda: _pg_count(uri, copying) > 0 or proc.poll() is not None, 120, "a COPY of points")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL, (
            "the sync ended before it could be killed; the test proved nothing"
        )
    wait_until(lambda: _pg_count(uri, copying) == 0, 60, "the killed COPY to be rolled back")
    with get_protocol(uri) as dst, get_protocol(f"hdf5://{src_root}") as src:
        by_uid = {t.uid: t for t in src.fetch_trials(None)}
        copied = dst.fetch_trials(None)
        assert len(copied) < 80, "every trial was copied before the kill"
        for trial in copied:  # a trial is there with every point, or not at all
            assert trial.metrics["loss"].values == by_uid[trial.uid].metrics["loss"].values
    resumed = run_cli("sync", str(src_root), uri, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    again = run_cli("sync", str(src_root), uri, "--no-progress")
    assert again.returncode == 0 and "0 point(s)" in again.stdout and "80 unchanged" in again.stdout
    assert _pg_count(uri, "SELECT count(*) FROM unitrack_metric_points") == wanted  # no point twice
    with get_protocol(f"hdf5://{src_root}") as src, get_protocol(uri) as dst:
        assert content(dst) == content(src)
