import os
import random
import select
import signal
import time
from datetime import datetime

import pytest
import torch

from unitrack.errors import InvalidNameError, NotFoundError
from unitrack.experiment import Experiment
from unitrack.monitor import CheckpointNotFoundError, Monitor, NotCheckpointableError, load
from unitrack.monitor import checkpoint as checkpoint_module


def _train(directory, epochs=3, steps=4, keep=2, **extra):
    model = torch.nn.Linear(3, 2)
    m = Monitor(directory, ckpt="model@1e", ckpt_keep=keep, **extra)
    for _ in m(range(epochs)):
        for _ in m(range(steps)):
            with torch.no_grad():
                model.weight.add_(1.0)
    return m, model


def test_checkpoints_kept_per_ckpt_keep(tmp_path):
    _train(tmp_path)
    folder = tmp_path / "checkpoints" / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["12.pt", "8.pt"]


def test_checkpoint_alias_and_keep_all(tmp_path):
    model = torch.nn.Linear(3, 2)
    m = Monitor(tmp_path, checkpoint="model@2s")
    for _ in m(range(6)):
        pass
    assert model is not None
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "model").iterdir()) == ["2.pt", "4.pt", "6.pt"]


def test_checkpoint_file_contents(tmp_path):
    _train(tmp_path)
    record = torch.load(tmp_path / "checkpoints" / "model" / "12.pt", weights_only=True)
    assert (record["step"], record["epoch"]) == (12, 3)
    assert "era" not in record
    assert record["version"]["class"] == "Linear" and record["date"]
    assert set(record["state_dict"]) == {"weight", "bias"}


def test_load_restores_weights_step_and_epoch(tmp_path):
    _, trained = _train(tmp_path)
    fresh = torch.nn.Linear(3, 2)
    m = Monitor(tmp_path)
    assert m.load(model=fresh) == {"model": fresh}
    assert (m.step, m.epoch) == (12, 3)
    assert torch.equal(fresh.weight, trained.weight)
    m.load(step=8, model=fresh)
    assert (m.step, m.epoch) == (8, 2)
    m.load(step=12, update_triggers=False, model=fresh)
    assert (m.step, m.epoch) == (8, 2)


def test_training_resumes_after_load_with_limit(tmp_path, out):
    _train(tmp_path)
    m = Monitor(tmp_path, limit="@5e", stream=out)
    m.load(model=torch.nn.Linear(3, 2))
    for _ in m(range(10)):
        for _ in m(range(4)):
            pass
    assert (m.step, m.epoch) == (20, 5)


def test_load_matches_step_exactly_and_raises_when_asked(tmp_path):
    _train(tmp_path, epochs=3, steps=5, keep=None)  # 5.pt, 10.pt, 15.pt
    with pytest.raises(CheckpointNotFoundError, match="step 1 ") as info:
        load(tmp_path / "checkpoints", step=1, attempt=False, model=torch.nn.Linear(3, 2))
    assert isinstance(info.value, ValueError) and isinstance(info.value, NotFoundError)
    assert info.value.available == [5, 10, 15]
    with pytest.raises(CheckpointNotFoundError, match="'other'"):
        load(tmp_path / "checkpoints", attempt=False, other=torch.nn.Linear(3, 2))


def test_load_with_attempt_warns_and_continues(tmp_path, caplog):
    _train(tmp_path)
    model = torch.nn.Linear(3, 2)
    modules, meta = load(tmp_path / "checkpoints", other=torch.nn.Linear(3, 2), model=model)
    assert meta == {"step": 12, "epoch": 3} and set(modules) == {"other", "model"}
    assert any("No checkpoint for 'other'" in r.getMessage() for r in caplog.records)


def test_monitor_load_without_directory_returns_empty(caplog):
    assert Monitor().load(model=torch.nn.Linear(1, 1)) == {}
    assert "no directory" in caplog.text


def test_manual_checkpoint_of_object_without_state_dict_is_an_error(tmp_path):
    m = Monitor(tmp_path)
    with pytest.raises(NotCheckpointableError, match="Cannot checkpoint 'x' \\(int\\)") as info:
        m.checkpoint(x=3)
    assert isinstance(info.value, TypeError)


def test_manual_checkpoint_saves_all(tmp_path):
    m = Monitor(tmp_path)
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    paths = m.checkpoint(net=net, opt=opt)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "checkpoints/net/0.pt",
        "checkpoints/opt/0.pt",
    ]
    _, meta = load(tmp_path / "checkpoints", opt=torch.optim.SGD(net.parameters(), lr=0.5))
    assert meta == {}


def test_checkpointer_hook_warns_about_objects_without_state_dict(tmp_path):
    m = Monitor(tmp_path, ckpt="mod.*@1s")
    model, mode = torch.nn.Linear(1, 1), "train"
    with pytest.warns(UserWarning, match="Cannot checkpoint 'mode' \\(str\\)"):
        for _ in m(range(3)):
            pass
    assert (model, mode) and (tmp_path / "checkpoints" / "model" / "3.pt").exists()
    assert not (tmp_path / "checkpoints" / "mode").exists()


def test_checkpointer_expands_dicts(tmp_path):
    m = Monitor(tmp_path, ckpt="nets@1s")
    nets = {"g": torch.nn.Linear(1, 1), "d": torch.nn.Linear(1, 1)}
    for _ in m(range(1)):
        pass
    assert nets and sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["nets_d", "nets_g"]


def test_checkpoint_names_cannot_escape(tmp_path):
    m = Monitor(tmp_path)
    with pytest.raises(InvalidNameError):
        m.checkpoint(**{"../x": torch.nn.Linear(1, 1)})


# ----------------------------------------------------------------------------------- crash safety (#12 item 5)
KILLS = 40


class Killed(Experiment):
    """An experiment trained until it is killed."""

    lr: float = 0.1  # @p learning rate


def _train_until_killed(root: str, name: str, wfd: int) -> None:
    """Child: train with ckpt_keep=1, reporting each step once its hooks (checkpoint and pointer) returned."""
    try:
        ex = Killed(root, name)
        model = torch.nn.Linear(4, 2)
        with torch.no_grad():
            model.bias.zero_()  # the bias counts the steps trained
        m = Monitor(experiment=ex, ckpt="model@1s", ckpt_keep=1)
        with ex:
            for _ in m(range(10**9)):
                with torch.no_grad():
                    model.bias.add_(1.0)
                os.write(wfd, b"%d\n" % m.step)  # the last step whose hooks (checkpoint, pointer) returned
    finally:
        os._exit(0)


def _kill_after(root: str, name: str, steps: int, delay_s: float) -> list[int]:
    """Fork a trainer; SIGKILL it ``delay_s`` after it reported ``steps`` steps; return the steps reported."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _train_until_killed(root, name, wfd)
    os.close(wfd)
    data = b""
    deadline = time.monotonic() + 60
    while data.count(b"\n") < steps and time.monotonic() < deadline:
        ready, _, _ = select.select([rfd], [], [], 1.0)
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"\n") >= steps, f"the trainer of {name} did not start: {data!r}"
    time.sleep(delay_s)  # a random moment inside a step: the point of the test, not a wait for an event
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    return [int(x) for x in data[: data.rfind(b"\n") + 1].split()]


def test_the_checkpoint_pointer_always_names_a_loadable_file_across_sigkills(tmp_path, monkeypatch):
    """On the old code a kill between deleting the old checkpoint and updating metadata['checkpoints'] left the
    pointer naming a deleted file (3 of 30 kills in the issue), and a kill inside torch.save left a .pt.tmp."""
    monkeypatch.delenv("UNITRACK_URI", raising=False)
    root = str(tmp_path / "runs")
    rng = random.Random(20261208)
    from unitrack.persistence.registry import get_protocol

    stale = 0
    for n in range(KILLS):
        name = f"run{n:02d}"
        steps = _kill_after(root, name, rng.randrange(2, 6), rng.uniform(0, 0.004))
        with get_protocol(f"hdf5://{root}") as db:
            (trial,) = db.fetch_trials({"name": name})
        pointer = trial.metadata.get("checkpoints", {}).get("model")
        note = f"seed 20261208 kill {n}: steps {steps[-3:]}, pointer {pointer}"
        assert pointer is not None, note  # at least two steps were checkpointed and recorded
        record = torch.load(pointer, weights_only=True)  # names a complete file
        assert record["step"] >= steps[-1], note  # no older than the last step whose hooks returned
        assert record["state_dict"]["bias"].tolist() == [float(record["step"])] * 2, note
        folder = tmp_path / "runs" / name / "checkpoints" / "model"
        stale += len(list(folder.glob("*.tmp")))
        # the run goes on in the same folder (as a resumed run does): stale temporary files are removed
        checkpoint_module.save(
            folder.parent, "model", torch.nn.Linear(4, 2), {"step": 10**6}, datetime.now(), 1
        )
        assert sorted(p.name for p in folder.iterdir()) == [f"{10**6}.pt"], note
    print(f"{stale} temporary files left by {KILLS} kills were removed by the next save")
