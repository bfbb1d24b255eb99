"""unitrack.integrations.transformers: a tiny BERT built from a config, trained for real on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integrations.hf_models import Exploding, tiny_model, trainer
from unitrack.integrations.transformers import UnitrackCallback
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _trial(uri: str, name: str):
    (trial,) = get_protocol(uri).fetch_trials({"name": name})
    return trial


def test_train_records_arguments_config_series_checkpoints_and_status(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    callback = UnitrackCallback(uri, name="bert", group="tiny")
    trainer(callback, tmp_path / "out", eval_strategy="steps", eval_steps=4).train()
    trial = _trial(uri, "bert")
    assert trial.status is Status.Completed
    params = trial.parameters
    assert (
        params["learning_rate"] == 1e-3 and params["num_train_epochs"] == 2 and params["logging_steps"] == 2
    )
    assert params["model"]["hidden_size"] == 16 and params["model"]["num_hidden_layers"] == 1
    assert "hub_token" not in params
    assert get_protocol(uri).fetch_trials({"parameters.model.hidden_size": 16}) == [trial]
    assert trial.metrics["loss"].steps == (2, 4, 6, 8)  # logging_steps=2 over 8 steps, at the global step
    assert trial.metrics["eval_loss"].steps == (4, 8)
    assert trial.metrics["train_runtime"].steps == (8,)
    latest = trial.metadata["checkpoints"]["latest"]
    assert latest == str(tmp_path / "out" / "checkpoint-8") and os.path.isdir(latest)
    assert trial.tags["framework"] == "transformers"
    assert "UnitrackCallback(IntegrationRun(transformers, 'bert', closed, Trial('bert'" in repr(callback)


def test_a_train_that_raises_ends_in_error_with_its_traceback(tmp_path):
    uri = f"hdf5://{tmp_path}/runs"
    model = Exploding(tiny_model().config)
    Exploding.calls = 0
    with (
        pytest.raises(ValueError, match="boom after 3 steps"),
        UnitrackCallback(uri, name="boom") as callback,
    ):
        trainer(callback, tmp_path / "out", model=model).train()
    trial = _trial(uri, "boom")
    assert trial.status is Status.Exception
    (error,) = trial.errors
    assert error.startswith("Traceback (most recent call last)") and "ValueError: boom after 3 steps" in error
    assert trial.metrics["loss"].steps == (2,)  # logged before the failure


def _script(tmp_path: Path, code: str) -> Path:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return script


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def test_an_uncaught_exception_ends_the_run_with_its_traceback(tmp_path):
    """No context manager: the process's excepthook records the error, then Python reports it as usual."""
    uri = f"hdf5://{tmp_path}/runs"
    script = _script(
        tmp_path,
        f"""
        from tests.integrations.hf_models import Exploding, tiny_model, trainer
        from unitrack.integrations.transformers import UnitrackCallback

        model = Exploding(tiny_model().config)
        trainer(UnitrackCallback({uri!r}, name="crash"), {str(tmp_path / "out")!r}, model=model).train()
        """,
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1 and "ValueError: boom after 3 steps" in done.stderr  # still reported
    trial = _trial(uri, "crash")
    assert trial.status is Status.Exception and "ValueError: boom after 3 steps" in trial.errors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_under_real_ddp_only_rank_zero_writes(tmp_path):
    """torchrun with two processes (DDP over gloo on the CPU): one trial, rank 1 creates nothing."""
    uri = f"hdf5://{tmp_path}/runs"
    script = _script(
        tmp_path,
        f"""
        import json
        from tests.integrations.hf_models import trainer
        from unitrack.integrations.transformers import UnitrackCallback

        callback = UnitrackCallback({uri!r}, name="ddp")
        t = trainer(callback, {str(tmp_path / "out")!r})
        t.train()
        record = {{"rank": t.args.process_index, "world": t.args.world_size, "uid": callback.run.uid}}
        with open(f"rank{{t.args.process_index}}.json", "w") as f:
            json.dump(record, f)
        """,
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert ranks[1] == {"rank": 1, "world": 2, "uid": None}
    (trial,) = get_protocol(uri).fetch_trials({})
    assert trial.uid == ranks[0]["uid"] and trial.status is Status.Completed
    assert trial.metrics["loss"].steps == (2, 4)  # 2 samples per process per step: 4 steps over 2 epochs
