"""TrackClient and TrialLogger: track's user API over any backend."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from unitrack.errors import NotFoundError
from unitrack.persistence.structure import Status
from unitrack.persistence.track import TrackClient


def test_delayed_trial_is_created_by_log_arguments(tmp_path: Path) -> None:
    client = TrackClient(f"file://{tmp_path}/db.json")
    client.set_project(name="p")
    client.set_group(name="g")
    assert client.new_trial(name="t") is None  # waits for parameters (they are part of the hash)
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    args = client.log_arguments(parser.parse_args([]))
    assert args.lr == 0.1
    with client:
        for step in range(3):
            client.log_metrics(step=step, loss=1.0 / (step + 1))
        with client.chrono("eval"):
            pass
    client.close()
    again = TrackClient(f"file://{tmp_path}/db.json")
    (trial,) = again.protocol.fetch_trials({"parameters.lr": 0.1})
    assert trial.status is Status.Completed
    assert trial.metrics["loss"].to_dict() == {0: 1.0, 1: 0.5, 2: pytest.approx(1 / 3)}
    assert trial.project_id == "p" and trial.group_id == client.group.uid  # type: ignore[union-attr]
    assert "eval" in trial.chronos and "runtime" in trial.chronos
    again.close()


def test_exception_inside_the_trial_is_recorded_and_not_swallowed() -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", parameters={"a": 1})
    with pytest.raises(ZeroDivisionError), client:
        client.log_metrics(x=1)
        _ = 1 / 0
    (trial,) = client.protocol.fetch_trials(None)
    assert trial.status is Status.Exception and "ZeroDivisionError" in trial.errors[-1]


def test_same_trial_is_resumed_and_force_makes_a_new_revision() -> None:
    client = TrackClient("ephemeral://")
    first = client.new_trial(name="t", parameters={"a": 1})
    resumed = client.new_trial(name="t", parameters={"a": 1})
    forced = client.new_trial(force=True, name="t", parameters={"a": 1})
    assert first is not None and resumed is not None and forced is not None
    assert resumed.uid == first.uid and forced.trial.revision == 1


def test_arguments_alias_tags_metadata_and_report() -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", arguments={"a": 1})
    client.add_tags(team="x")
    client.log_metadata(host="h")
    out = io.StringIO()
    text = client.report(file=out)
    data = json.loads(out.getvalue())
    assert data == json.loads(text)
    assert (
        data["parameters"] == {"a": 1} and data["tags"] == {"team": "x"} and data["metadata"]["host"] == "h"
    )


def test_set_trial_by_uid_and_missing_trial() -> None:
    client = TrackClient("ephemeral://")
    logger = client.new_trial(name="t", parameters={})
    assert logger is not None
    other = TrackClient(client.protocol)
    assert other.set_trial(uid=logger.uid).uid == logger.uid
    with pytest.raises(NotFoundError, match="does not exist"):
        TrackClient(client.protocol).set_trial(uid="nope_0")
    with pytest.raises(NotFoundError, match="get_only"):
        TrackClient(client.protocol).set_project(name="absent", get_only=True)


def test_environment_preselects_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNITRACK_PROJECT", "from-env")
    client = TrackClient("ephemeral://")
    assert client.project is not None and client.project.name == "from-env"


def test_default_backend_comes_from_unitrack_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNITRACK_URI", f"file://{tmp_path}/env.json")
    client = TrackClient()
    client.new_trial(name="t", parameters={})
    client.close()
    assert (tmp_path / "env.json").exists()
