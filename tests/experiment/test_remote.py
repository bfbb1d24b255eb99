"""UNITRACK_URI=socket://... makes an Experiment log to a server with no code change."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.persistence.conftest import make_users
from unitrack.experiment import Experiment
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.server import ServerThread
from unitrack.persistence.structure import Status


class Remote(Experiment):
    """An experiment that messages its progress."""

    lr: float = 0.1  # @p the learning rate

    def run(self) -> None:
        for step in range(5):
            self.message({"loss": 1.0 / (step + 1)})


def test_experiment_logs_to_a_server_with_no_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = EphemeralProtocol()
    users = make_users(tmp_path / "users.json", ada=("ada-password-1", "writer"))
    with ServerThread(backend, users) as server:
        monkeypatch.setenv("UNITRACK_URI", f"socket://ada@127.0.0.1:{server.port}")
        monkeypatch.setenv("UNITRACK_PASSWORD", "ada-password-1")
        ex = Remote(str(tmp_path / "root"), "ex1", lr=0.01)
        ex()
        (trial,) = backend.fetch_trials({"parameters.lr": 0.01})
    assert trial.name == "ex1" and trial.status is Status.Completed
    assert trial.metrics["loss"].values == (1.0, 0.5, pytest.approx(1 / 3), 0.25, 0.2)
    assert trial.metadata["messages"]["loss"] == 0.2
    assert trial.tags["owner"] == "ada"
    assert (tmp_path / "root" / "ex1" / "params.yml").exists()  # the experiment's own folder stays local
    assert not (tmp_path / "root" / ".unitrack").exists()  # nothing of a local backend


def test_monitor_attached_to_a_remote_experiment_logs_to_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unitrack.monitor import Monitor

    backend = EphemeralProtocol()
    users = make_users(tmp_path / "users.json", ada=("ada-password-1", "writer"))
    with ServerThread(backend, users) as server:
        monkeypatch.setenv("UNITRACK_URI", f"socket://ada@127.0.0.1:{server.port}")
        monkeypatch.setenv("UNITRACK_PASSWORD", "ada-password-1")
        ex = Remote(str(tmp_path / "root"), "ex2")
        m = Monitor(experiment=ex, sca="loss@1s", msg="loss->ex@2s")
        with ex:
            for _ in m(range(2)):
                for _ in m(range(3)):
                    loss = 1.0 / (m.step + 1)  # noqa: F841 - read by the monitor from this frame
        m.close()
        (trial,) = backend.fetch_trials({"name": "ex2"})
    assert trial.status is Status.Completed
    assert trial.metrics["loss"].steps == tuple(range(1, 7))
    assert trial.metrics["loss"].values == pytest.approx([1.0 / s for s in range(1, 7)])
    assert trial.metadata["messages"]["loss"] == pytest.approx(1.0 / 6)
    assert (tmp_path / "root" / "ex2" / "tensorboard").is_dir()  # event files stay with the job
