"""integrations.run: the trial lifecycle every framework adapter shares, plain parameters, ranks."""

from __future__ import annotations

import argparse
import dataclasses
import enum
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch

from unitrack.errors import ConfigError
from unitrack.integrations.run import IntegrationRun, env_rank, plain_parameters
from unitrack.persistence.structure import Status
from unitrack.persistence.track import TrackClient


class ConfigLike(Mapping):
    """A mapping that is not a dict, as OmegaConf's DictConfig."""

    def __init__(self, **values):
        self._values = values

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclasses.dataclass
class Optim:
    name: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)


class Mode(enum.Enum):
    FAST = 1


def test_plain_parameters_keeps_nesting_and_makes_everything_storable():
    value = plain_parameters(
        {
            "cfg": ConfigLike(model=ConfigLike(depth=4, act="relu"), tags={"b", "a"}),
            "optim": Optim(),
            "ns": argparse.Namespace(lr=torch.tensor(0.5), mode=Mode.FAST),
            "path": Path("/data"),
            "dtype": torch.float32,
            "fn": torch.nn.functional.relu,
            "bad": float("nan"),
            "long": "x" * 5000,
        }
    )
    assert value["cfg"] == {"model": {"depth": 4, "act": "relu"}, "tags": ["a", "b"]}
    assert value["optim"] == {"name": "adam", "betas": [0.9, 0.999]}
    assert value["ns"] == {"lr": 0.5, "mode": 1}
    assert value["path"] == "/data" and value["dtype"] == "torch.float32" and value["bad"] == "nan"
    assert value["fn"].endswith("relu") and len(value["long"]) == 1000


def test_a_target_of_another_type_or_an_unregistered_experiment_is_refused():
    from unitrack.experiment import Experiment

    with pytest.raises(ConfigError, match="cannot log to a int"):
        IntegrationRun(3, framework="x")
    with pytest.raises(ConfigError, match="not registered"):
        IntegrationRun(Experiment(), framework="x")
    with pytest.raises(ConfigError, match="status"):
        IntegrationRun("ephemeral://", framework="x").finish("done")


def test_the_trial_is_created_by_the_first_write_with_its_parameters():
    run = IntegrationRun("ephemeral://", framework="demo", name="r", group="g", tags={"team": "a"})
    assert run.uid is None and "no trial yet" in repr(run)
    run.log_parameters({"lr": 0.1})
    run.log_metrics({"loss": torch.tensor(0.5), "name": "text", "flag": True}, step=3)
    run.record_checkpoints({"latest": Path("/c/1.pt")})
    run.record_checkpoints({"best": "/c/0.pt"})
    run.finish()
    trial = run.trial_logger.refresh()
    assert trial.parameters == {"lr": 0.1} and trial.tags == {"framework": "demo", "team": "a"}
    assert (
        trial.metrics["loss"].steps == (3,)
        and trial.metrics["flag"].latest == 1
        and "name" not in trial.metrics
    )
    assert trial.metadata["checkpoints"] == {"latest": "/c/1.pt", "best": "/c/0.pt"}
    assert trial.status is Status.Completed and not run.is_open


def test_messages_keep_min_and_max_per_key_on_a_client_trial():
    client = TrackClient("ephemeral://")
    client.new_trial(name="m", parameters={})
    run = IntegrationRun(client, framework="demo")
    run.message({"loss": 3.0}, keep="min", step=1)
    run.message({"loss": 5.0}, keep="min", step=2)
    run.message({"acc": 0.5, "loss": 1.0}, keep="min", leader="acc", step=3)
    trial = client.logger.refresh()
    run.finish()  # the started trial holds this process's SIGTERM handler until it finishes
    assert trial.metadata["messages"] == {"loss": 1.0, "acc": 0.5}
    assert trial.metrics["loss"].steps == (1, 2, 3)


def test_stopped_and_failed_without_an_exception_say_so():
    for status, stored, text in (
        ("stopped", Status.Interrupted, "stopped the run"),
        ("error", Status.Exception, "failed"),
    ):
        run = IntegrationRun("ephemeral://", framework="demo")
        run.finish(status)
        trial = run.trial_logger.refresh()
        assert trial.status is stored and text in trial.errors[0]


def test_env_rank_reads_the_launchers_variables(monkeypatch):
    for name in (
        "RANK",
        "PMI_RANK",
        "OMPI_COMM_WORLD_RANK",
        "SLURM_PROCID",
        "JSM_NAMESPACE_RANK",
        "LOCAL_RANK",
    ):
        monkeypatch.delenv(name, raising=False)
    assert env_rank() == 0
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert env_rank() == 3
    monkeypatch.setenv("RANK", "1")
    assert env_rank() == 1
