"""A Monitor attached to an Experiment: TensorBoard and metric series, messages, checkpoints, probes, failing hooks."""

import logging
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unitrack.errors import ConfigError
from unitrack.experiment import Experiment
from unitrack.monitor import Hook, MetadataSink, MetricSink, Monitor
from unitrack.persistence.registry import get_protocol
from unitrack.store.readers import CollectionReader

STEPS = {s: 1.0 / s for s in range(1, 16)}  # the loss at each of the 15 steps of a 3 x 5 loop


class Training(Experiment):
    """A tiny experiment for the monitor."""

    lr: float = 0.1  # @p learning rate


class Boom(Hook):
    def __call__(self, var_dict, monitor):
        raise RuntimeError("boom")


@pytest.fixture(params=["hdf5", "file"])
def backend(request, tmp_path, monkeypatch):
    """The experiments' root and the URI their trials are in: the default (hdf5 at the root), or UNITRACK_URI."""
    root = tmp_path / "runs"
    if request.param == "file":
        uri = f"file://{tmp_path / 'db.json'}"
        monkeypatch.setenv("UNITRACK_URI", uri)
    else:
        monkeypatch.delenv("UNITRACK_URI", raising=False)
        uri = f"hdf5://{root}"
    return request.param, root, uri


def train(m, ex):
    model = torch.nn.Linear(2, 1)
    for _ in m(range(3)):
        for _ in m(range(5)):
            loss = 1.0 / (m.step + 1)  # the step about to complete
            with torch.no_grad():
                model.bias.fill_(loss)
    return model


def test_an_attached_monitor_writes_through_the_experiment(backend, caplog):
    kind, root, uri = backend
    ex = Training(str(root), "ex1")
    m = Monitor(
        experiment=ex,
        sca="loss@1s",
        msg="loss->ex@2s",
        ckpt="model@5s",
        ckpt_keep=2,
        hooks=[Boom("@3s")],
    )
    assert m.directory == ex.directory == str(root / "ex1")
    with caplog.at_level(logging.ERROR, logger="unitrack.monitor"), ex:
        train(m, ex)
    m.close()
    assert m.step == 15 and ex.status == "finished"  # the failing hook did not stop training

    # A hook that raises is reported once, with its traceback.
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info[0] is RuntimeError
    assert "Boom" in failures[0].getMessage()

    # TensorBoard events in the trial's folder.
    events = EventAccumulator(str(root / "ex1" / "tensorboard"))
    events.Reload()
    tb = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [s for s, _ in tb] == list(STEPS)
    assert [v for _, v in tb] == pytest.approx(list(STEPS.values()), rel=1e-6)

    # The same points in the trial's metric series (messages at even steps fall on the same points).
    (trial,) = get_protocol(uri).fetch_trials({"name": "ex1"})
    assert trial.metrics["loss"].steps == tuple(STEPS)
    assert trial.metrics["loss"].values == pytest.approx(list(STEPS.values()))

    # Messages, at the monitor's steps.
    assert ex.messages["loss"] == STEPS[14]
    assert trial.metadata["messages"]["loss"] == STEPS[14]
    assert ex.messages["s"] == "14/15"

    # Checkpoints: the newest two files kept, the newest named in the trial's metadata.
    folder = root / "ex1" / "checkpoints" / "model"
    assert sorted(os.listdir(folder)) == ["10.pt", "15.pt"]
    assert trial.metadata["checkpoints"] == {"model": str(folder / "15.pt")}
    saved = torch.load(trial.metadata["checkpoints"]["model"], weights_only=True)
    assert saved["step"] == 15 and saved["state_dict"]["bias"].item() == pytest.approx(STEPS[15])

    if kind == "hdf5":  # the trial's folder is a cox store: cox's readers see the series
        df = CollectionReader(str(root)).df("metrics")
        rows = df[df["name"] == "loss"]
        # A message and a summary of the same value at the same step add one row, not two.
        assert len(rows) == 15
        series = rows.sort_values("step")
        assert series["step"].tolist() == list(STEPS)
        assert series["value"].tolist() == pytest.approx(list(STEPS.values()))


def test_a_monitor_given_the_experiment_directory_finds_the_experiment(tmp_path, monkeypatch):
    # The seed's way: TorchMonitor(ex.directory, ...) in a frame where the experiment is a local variable.
    monkeypatch.delenv("UNITRACK_URI", raising=False)
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    m = Monitor(ex.directory, sca="loss@2s")
    with ex:
        train(m, ex)
    assert m.experiment is ex
    (trial,) = ex.backend.fetch_trials({"name": "ex1"})
    assert trial.metrics["loss"].steps == tuple(s for s in STEPS if s % 2 == 0)
    assert trial.metrics["loss"].values == pytest.approx([v for s, v in STEPS.items() if s % 2 == 0])


def test_a_monitor_elsewhere_does_not_attach_to_a_local_experiment(tmp_path):
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    m = Monitor(tmp_path / "other", sca="loss@5s")
    train(m, ex)
    assert m.experiment is None
    (trial,) = ex.backend.fetch_trials({"name": "ex1"})
    assert trial.metrics == {}


def test_attach_and_manual_checkpoints_record_metadata(tmp_path):
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    m = Monitor().attach(ex)
    assert m.directory == ex.directory
    model = torch.nn.Linear(1, 1)
    m.set_triggers(step=7)
    (path,) = m.checkpoint(net=model)
    (trial,) = ex.backend.fetch_trials({"name": "ex1"})
    assert trial.metadata["checkpoints"] == {"net": str(path)} and path.name == "7.pt"


def test_probe_writes_series_to_the_trial_at_the_monitor_step(tmp_path, out):
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    m = Monitor(experiment=ex, probe="ex@2s", stream=out)
    for _ in m(range(6)):
        pass
    (trial,) = ex.backend.fetch_trials({"name": "ex1"})
    for name in ("sys/cpu_percent", "sys/memory_percent", "sys/proc/memory_mb"):
        assert trial.metrics[name].steps == (2, 4, 6), name  # a series, not a snapshot in metadata
    assert out.getvalue().count("cpu=") == 3 and "memory=" in out.getvalue()


def test_an_experiment_is_every_sink_and_guards_its_own_metadata(tmp_path):
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    assert isinstance(ex, MetricSink) and isinstance(ex, MetadataSink)
    with pytest.raises(ConfigError, match="messages"):
        ex.log_metadata({"messages": {}})
    Training().log_metrics({"loss": 1.0}, step=1)  # unregistered: a no-op


def test_attach_needs_a_sink_with_a_directory():
    with pytest.raises(ConfigError, match="no log_metrics"):
        Monitor(experiment=object())
    with pytest.raises(ConfigError, match="no directory"):
        Monitor(experiment=Training())


def test_messages_carry_the_step_only_to_sinks_that_take_it(tmp_path):
    from unitrack.monitor.hooks.messenger import takes_step

    class Plain:
        def message(self, values, keep="latest", leader=None):
            pass

    class Kw:
        def message(self, values, **options):
            pass

    assert takes_step(Training()) and takes_step(Kw()) and not takes_step(Plain())


def test_a_tensor_that_requires_grad_is_messaged_without_a_warning(tmp_path):
    ex = Training(str(tmp_path), "ex1", backend="ephemeral://")
    m = Monitor(experiment=ex, msg="loss->ex@1s")
    weight = torch.ones(1, requires_grad=True)
    for _ in m(range(2)):
        loss = (weight * 3).sum()  # noqa: F841 - read from this frame by the monitor
    assert ex.messages["loss"] == 3.0
    (trial,) = ex.backend.fetch_trials({"name": "ex1"})
    assert list(trial.metrics["loss"]) == [(1, 3.0), (2, 3.0)]
