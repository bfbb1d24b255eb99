"""The ``cometml://`` backend (seed 004's ``make_comet_ml``), read back from Comet's offline archives, and the
``mongodb://`` registry entry (issue #17 item 9)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from unitrack.errors import ConfigError
from unitrack.persistence import make_comet_ml, make_mongodb_protocol
from unitrack.persistence.multiplexer import ProtocolMultiplexer
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.track import TrackClient


def archive(folder: Path) -> tuple[dict, list[dict]]:
    """The experiment.json and messages of the one offline archive in ``folder``."""
    (path,) = folder.glob("*.zip")
    with zipfile.ZipFile(path) as zf:
        experiment = json.loads(zf.read("experiment.json"))
        messages = [json.loads(line) for line in zf.read("messages.json").decode().splitlines() if line]
    return experiment, messages


def others(messages: list[dict]) -> dict:
    return {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}


def test_a_trial_is_forwarded_to_a_comet_experiment(tmp_path: Path) -> None:
    offline = tmp_path / "comet"
    client = TrackClient(f"cometml://my-team/vision?offline_directory={offline}")
    client.set_project(name="vision")
    client.new_trial(name="resnet", parameters={"lr": 0.1, "opt": "sgd"})
    with client:
        for step in range(3):
            client.log_metrics(step=step, loss=1.0 / (step + 1))
        client.add_tags(team="cv")
        client.log_metadata(host="node-1", shape=[2, 3])
    uid = client.trial.uid
    assert client.protocol.fetch_trials(None)[0].metrics["loss"].latest == pytest.approx(1 / 3)  # reads work
    client.close()
    experiment, messages = archive(offline)
    assert (experiment["workspace"], experiment["project_name"]) == ("my-team", "vision")
    assert "team:cv" in experiment["tags"]
    found = others(messages)
    assert found["Name"] == "resnet" and found["unitrack_uid"] == uid and found["status"] == "finished"
    assert found["host"] == "node-1" and json.loads(found["shape"]) == [2, 3]
    params = {
        m["payload"]["param"]["paramName"]: m["payload"]["param"]["paramValue"]
        for m in messages
        if m["type"] == "parameter_msg" and m["payload"]["param"]["source"] == "manual"
    }
    assert params == {"lr": 0.1, "opt": "sgd"}
    loss = [
        (m["payload"]["metric"]["step"], m["payload"]["metric"]["metricValue"])
        for m in messages
        if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == "loss"
    ]
    assert loss == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]


def test_tracks_make_comet_ml_in_a_multiplexer_before_the_backend_that_keeps_the_runs(tmp_path: Path) -> None:
    offline = tmp_path / "comet"
    comet = make_comet_ml(f"cometml:team/proj?offline_directory={offline}")  # track's URI form
    with ProtocolMultiplexer(comet, get_protocol(f"hdf5://{tmp_path}/runs")) as both:
        client = TrackClient(both)
        client.new_trial(name="run", parameters={"lr": 0.5})
        client.log_metrics(step=1, loss=0.25)
        client.finish()
    experiment, messages = archive(offline)
    assert experiment["project_name"] == "proj" and others(messages)["Name"] == "run"
    with get_protocol(f"hdf5://{tmp_path}/runs") as kept:
        assert kept.fetch_trials(None)[0].metrics["loss"].values == (0.25,)


def test_a_comet_uri_without_workspace_and_project_is_refused() -> None:
    with pytest.raises(ConfigError, match="cometml://WORKSPACE/PROJECT"):
        get_protocol("cometml://only-a-workspace")


def test_mongodb_explains_that_it_is_not_provided() -> None:
    with pytest.raises(ConfigError, match="MongoDB backend is not provided.*postgresql://"):
        get_protocol("mongodb://localhost:27017/track")
    with pytest.raises(ConfigError, match="not provided"):
        make_mongodb_protocol("mongodb://localhost:27017/track")
