"""track's client API as track's users call it (issue #17 item 3); several tests are track's own, imports renamed."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.persistence.conftest import ADMIN, ADMIN_PASSWORD, make_users
from unitrack.errors import CorruptStoreError, NotFoundError, SchemaError
from unitrack.persistence.aggregators import StatAggregator
from unitrack.persistence.artifacts import MAX_ARTIFACT_BYTES
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.server import ServerThread
from unitrack.persistence.track import TrackClient, TrialDoesNotExist
from unitrack.persistence.uri import parse_uri

from .conftest import ROOT


def test_stat_aggregator_as_track_tested_it() -> None:
    agg = StatAggregator(skip_obs=10)
    for i in range(0, 100):
        agg.append(i)
    assert agg.avg == 54.5
    assert (
        agg.min == 10
    )  # track's test says 9: it dropped one observation fewer from min/max (SEED_NOTES C31)
    assert agg.max == 99
    assert agg.sd == pytest.approx(25.97915831328387, rel=1e-12)  # population sd, as track
    assert agg.sum == agg.total == sum(range(10, 100))


def test_uri_parsing_as_track_tested_it() -> None:
    hostname, port, protocol, password, username = "localhost", 8123, "file://test.json", "123456", "root"
    results = parse_uri(f"socket://{username}:{password}@{hostname}:{port}?backend={protocol}&test=2")
    assert results["scheme"] == "socket"
    assert results["address"] == hostname
    assert results["password"] == password
    assert results["username"] == username
    assert int(results["port"]) == port
    assert results["query"]["backend"] == protocol
    assert int(results["query"]["test"]) == 2
    assert results.get("fragment") == "" and "username" in results and dict(results)["port"] == "8123"
    assert results.port == port  # the typed attributes stay


def test_set_trial_that_does_not_exist_raises_trial_does_not_exist(tmp_path: Path) -> None:
    client = TrackClient(f"hdf5://{tmp_path}/runs")
    with pytest.raises(TrialDoesNotExist, match="'does_not_exist' does not exist") as info:
        client.set_trial(uid="does_not_exist")
    assert isinstance(info.value, NotFoundError)


def test_client_orion_integration_as_track_tested_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"hdf5://{tmp_path}/runs"

    def scoped_init() -> str:
        clt = TrackClient(uri)
        clt.set_project(name="project_name")
        clt.set_group(name="group_name")
        clt.new_trial()
        clt.log_arguments(batch_size=256)
        clt.save()
        uid = clt.trial.uid
        clt.close()
        return uid

    trial_id = scoped_init()
    monkeypatch.setenv("ORION_PROJECT", "project_name")
    monkeypatch.setenv("ORION_EXPERIMENT", "group_name")
    monkeypatch.setenv("ORION_TRIAL_ID", trial_id)
    client = TrackClient(uri)
    assert client.trial.parameters["batch_size"] == 256
    assert client.project.name == "project_name" and client.group.name == "group_name"
    client.close()


def test_chrono_gives_the_timer_and_show_eta_prints_tracks_line(tmp_path: Path) -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", parameters={})
    for _ in range(3):
        with client.chrono("batch") as timer:
            pass
    assert isinstance(timer, StatAggregator)
    assert timer.count == 2  # the default timer skips the first observation, as track's did
    assert timer.avg >= 0 and math.isfinite(timer.sd)
    stored = client.protocol.fetch_trials(None)[0].chronos["batch"]
    assert stored["count"] == 2

    fixed = StatAggregator(skip_obs=0)
    for _ in range(4):
        fixed.append(3.0)  # 3 s per step
    out = io.StringIO()
    client.set_eta_total(10)
    client.show_eta(4, fixed, "loss=0.1", file=out)
    assert out.getvalue() == "[ 5/10] | ETA     0.25 min loss=0.1\n"


def test_show_eta_throttles_by_calls(tmp_path: Path) -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", parameters={})
    out = io.StringIO()
    timer = StatAggregator(skip_obs=0)
    timer.append(1.0)
    client.set_eta_total(100)
    for step in range(10):
        client.show_eta(step, timer, every=5, file=out)
    assert [line.split("]")[0] for line in out.getvalue().splitlines()] == ["[  1/100", "[  6/100"]


def test_client_capture_output_as_track_tested_it(capsys: pytest.CaptureFixture[str]) -> None:
    client = TrackClient("ephemeral://")
    client.set_project(name="project_name")
    client.new_trial(name="t", parameters={})
    client.start()
    client.capture_output(50)
    for i in range(0, 100):
        print(f"testing_output_{i}")
    out = client.stdout.raw()
    for i in range(0, 25):
        assert out[i * 2] == f"testing_output_{100 - 25 + i}"
        assert out[i * 2 + 1] == "\n"
    client.finish()
    assert capsys.readouterr().out.count("testing_output_") == 100  # still printed
    assert not isinstance(sys.stdout, type(client.logger).__mro__[0]) and client.stdout is None
    recorded = client.protocol.fetch_trials(None)[0].metadata["stdout"]
    assert recorded.startswith("testing_output_75\n") and recorded.endswith("testing_output_99\n")


def test_get_device_is_the_cpu_without_a_gpu() -> None:
    import torch

    assert TrackClient.get_device() == torch.device("cpu")
    assert TrackClient("ephemeral://").get_device().type in ("cpu", "cuda")


def test_start_track_server_takes_a_uri_string_as_track_did(tmp_path: Path) -> None:
    users = make_users(tmp_path / "users.json")
    script = (
        "import sys\n"
        "from unitrack.persistence.server import start_track_server\n"
        f"start_track_server('file://{tmp_path}/db.json', '127.0.0.1', 0, users={str(users.path)!r},\n"
        "    on_listening=lambda a: print(f'listening on {a[1]}', flush=True))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on "), proc.stderr.read() if proc.stderr else ""
            port = int(line.split()[-1])
            client = TrackClient(f"socket://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{port}")
            client.new_trial(name="remote", parameters={"lr": 0.1})
            with client:
                client.log_metrics(step=1, loss=0.5)
            client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    with get_protocol(f"file://{tmp_path}/db.json") as db:
        (trial,) = db.fetch_trials({"name": "remote"})
        assert trial.metrics["loss"].values == (0.5,) and str(trial.status) == "completed"


# ------------------------------------------------------------------------------------------------ artifacts
@pytest.fixture(params=["hdf5", "file", "pickled", "ephemeral", "socket"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    kind = request.param
    if kind == "socket":
        users = make_users(tmp_path / "users.json")
        with ServerThread(EphemeralProtocol(), users) as srv:
            yield kind, SocketProtocol(f"socket://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{srv.port}")
        return
    uri = {
        "hdf5": f"hdf5://{tmp_path}/runs",
        "file": f"file://{tmp_path}/db.json",
        "pickled": f"pickled://{tmp_path}/db.pkl",
        "ephemeral": "ephemeral://",
    }[kind]
    if kind == "pickled":
        with pytest.warns(UserWarning, match="track compatibility only"):
            protocol = get_protocol(uri)
    else:
        protocol = get_protocol(uri)
    yield kind, protocol
    protocol.close()


def test_log_code_file_and_directory_store_artifacts_with_the_run(backend, tmp_path: Path) -> None:
    kind, protocol = backend
    script = tmp_path / "train.py"
    script.write_text("print('training')\n")
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"A")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (folder / ".hidden").write_bytes(b"never")
    client = TrackClient(protocol)
    client.set_project(name="p")
    logger = client.new_trial(name="run", parameters={"lr": 0.1})
    logger.log_code(script).log_file(script, name="config/train.py").log_directory(folder, recursive=True)
    assert logger.code == "print('training')\n"
    assert logger.artifacts() == {
        "code/train.py": 18,
        "config/train.py": 18,
        "plots/a.txt": 1,
        "plots/sub/b.bin": 256,
    }
    assert logger.read_artifact("plots/sub/b.bin") == bytes(range(256))
    reader = TrackClient(protocol).set_trial(uid=logger.uid)
    assert reader.read_artifact("code/train.py") == b"print('training')\n"
    entry = reader.refresh().metadata["artifacts"]["plots/a.txt"]
    assert ("data" in entry) == (kind in ("ephemeral", "socket"))  # beside the run where there is a folder
    if kind in ("hdf5", "file", "pickled"):
        beside = protocol.artifact_dir(logger.uid) / "plots" / "a.txt"
        assert beside.read_bytes() == b"A"
        beside.write_bytes(b"B")
        with pytest.raises(CorruptStoreError, match="do not match the sha256"):
            reader.read_artifact("plots/a.txt")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", "a\\b", "", "a/./b", "x\x00"])
def test_unsafe_artifact_names_are_refused(tmp_path: Path, name: str) -> None:
    client = TrackClient(f"hdf5://{tmp_path}/runs")
    logger = client.new_trial(name="run", parameters={})
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(SchemaError, match="Artifact name"):
        logger.log_file(source, name=name)
    assert not (tmp_path / "x").exists()


def test_an_artifact_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    client = TrackClient(f"hdf5://{tmp_path}/runs")
    logger = client.new_trial(name="run", parameters={})
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (MAX_ARTIFACT_BYTES + 1))
    with pytest.raises(SchemaError, match="the limit is"):
        logger.log_file(big)
    assert logger.artifacts() == {}
