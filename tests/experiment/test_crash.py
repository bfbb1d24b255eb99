"""A running experiment killed at random moments loses nothing it acknowledged; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import CustomStatus, Status

SCRIPT = textwrap.dedent(
    """
    import sys
    from unitrack.experiment import Experiment

    class Crash(Experiment):
        '''Messages until killed.'''

        n: int = 10**9  # @p how many messages

        def run(self):
            for i in range(self.n):
                self.message({"i": i, "loss": 1.0 / (i + 1)}, step=i)
                sys.stdout.write(f"{i}\\n")  # acknowledged: message() returned
                sys.stdout.flush()

    if __name__ == "__main__":
        Crash().main()
    """
)


@pytest.fixture(params=["hdf5", "file"])
def backend(request: pytest.FixtureRequest) -> str:
    """The embedded default (no ``UNITRACK_URI``: ``hdf5://`` at the experiment root) and ``file://``."""
    return str(request.param)


def start(
    tmp_path: Path, env: dict[str, str], backend: str, target: str = "ex1"
) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in env.items() if k != "UNITRACK_URI"}
    if backend == "file":
        uri = env["UNITRACK_URI"] = f"file://{tmp_path}/db.json"
    else:
        uri = f"hdf5://{tmp_path}/root"  # what the experiment uses when no URI is given
    proc = subprocess.Popen(
        [sys.executable, str(script), "-x", str(tmp_path / "root" / target)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, uri


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Read what is left of stdout (through the same buffered reader as readline: communicate() would skip
    lines already buffered there) and stderr, and wait for the exit."""
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    return rest, err


def signal_after_first_message(proc: subprocess.Popen[str], signum: int) -> tuple[list[int], str]:
    """Wait for the first acknowledged message, send ``signum``, and return every acknowledged step and stderr."""
    first = proc.stdout.readline()
    assert first, proc.stderr.read()
    proc.send_signal(signum)
    rest, err = finish(proc)
    return [int(first), *(int(x) for x in rest.split())], err


def read_back(uri: str):
    # A writer killed mid-line leaves a torn journal tail, which the file backend drops with a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_protocol(uri).fetch_trials({"name": "ex1"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_keeps_every_acknowledged_message(tmp_path, subprocess_env, backend, seed):
    kill_after = random.Random(seed).choice([0, 1, 50, 400, 1500])
    proc, uri = start(tmp_path, subprocess_env, backend)
    acknowledged = []
    try:
        while len(acknowledged) < kill_after:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = finish(proc)
    acknowledged += [int(x) for x in rest.split()]
    assert proc.returncode == -signal.SIGKILL, err
    params = tmp_path / "root" / "ex1" / "params.yml"
    if params.exists():
        state = YAML(typ="safe").load(params.read_text())
        assert state["_status"] in ("registered", "running")
    trials = read_back(uri)
    if not acknowledged:
        return
    (trial,) = trials
    assert set(acknowledged) <= set(trial.metrics["i"].steps)
    assert trial.status == Status.Running


def test_sigterm_leaves_a_stopped_status_with_data_flushed(tmp_path, subprocess_env, backend):
    proc, uri = start(tmp_path, subprocess_env, backend)
    acknowledged, err = signal_after_first_message(proc, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = YAML(typ="safe").load((tmp_path / "root" / "ex1" / "params.yml").read_text())
    assert state["_status"] == "stopped" and state["_timestamps"]["stopped"]
    # the message in flight when the signal came is completed (durable) but was not acknowledged yet
    assert state["_messages"]["i"] in (acknowledged[-1], acknowledged[-1] + 1)
    (trial,) = read_back(uri)
    assert trial.status == Status.Interrupted and trial.metadata["status"] == "stopped"
    assert set(acknowledged) <= set(trial.metrics["i"].steps)


# --------------------------------------------------------------------------------- Slurm's time-limit warning
def fake_scontrol(tmp_path: Path, exit_code: int = 0) -> Path:
    """An ``scontrol`` stand-in on PATH that records its arguments (Slurm itself is not on this machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "scontrol"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{bin_dir}/argv.txt"\nexit {exit_code}\n')
    tool.chmod(0o755)
    return bin_dir


def slurm_env(env: dict[str, str], bin_dir: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def warn_time_limit(tmp_path: Path, env: dict[str, str], backend: str) -> tuple[list[int], str, int, str]:
    proc, uri = start(tmp_path, env, backend)
    acknowledged, err = signal_after_first_message(proc, signal.SIGUSR1)
    return acknowledged, uri, proc.returncode, err


def test_sigusr1_leaves_a_timeout_status_with_data_flushed(tmp_path, subprocess_env, backend):
    acknowledged, uri, code, err = warn_time_limit(tmp_path, slurm_env(subprocess_env, None), backend)
    assert code == 128 + signal.SIGUSR1, err
    state = YAML(typ="safe").load((tmp_path / "root" / "ex1" / "params.yml").read_text())
    assert state["_status"] == "timeout"
    (trial,) = read_back(uri)
    assert trial.status == CustomStatus("timeout", 204) and trial.metadata["status"] == "timeout"
    assert set(acknowledged) <= set(trial.metrics["i"].steps)


def test_sigusr1_in_a_requeueing_array_task_requeues_it(tmp_path, subprocess_env):
    bin_dir = fake_scontrol(tmp_path)
    env = slurm_env(
        subprocess_env,
        bin_dir,
        UNITRACK_REQUEUE="1",
        SLURM_JOB_ID="977",
        SLURM_ARRAY_JOB_ID="970",
        SLURM_ARRAY_TASK_ID="7",
    )
    acknowledged, uri, code, err = warn_time_limit(tmp_path, env, "hdf5")
    assert code == 128 + signal.SIGUSR1, err
    assert (bin_dir / "argv.txt").read_text().splitlines() == ["requeue", "970_7"]
    state = YAML(typ="safe").load((tmp_path / "root" / "ex1" / "params.yml").read_text())
    assert state["_status"] == "requeue"
    (trial,) = read_back(uri)
    assert trial.status == CustomStatus("requeue", 205)
    # The requeued task runs it again (run.sh executes params.yml), continuing the same trial.
    proc, _ = start(tmp_path, slurm_env(subprocess_env, None), "hdf5", target="ex1/params.yml")
    assert proc.stdout.readline(), proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc)
    (trial,) = read_back(uri)
    assert trial.status == Status.Interrupted
    assert set(acknowledged) <= set(trial.metrics["i"].steps)


@pytest.mark.parametrize("case", ["scontrol fails", "not in a Slurm job"])
def test_sigusr1_that_cannot_requeue_leaves_timeout(tmp_path, subprocess_env, case):
    if case == "scontrol fails":
        env = slurm_env(subprocess_env, fake_scontrol(tmp_path, 1), UNITRACK_REQUEUE="1", SLURM_JOB_ID="5")
    else:
        env = slurm_env(subprocess_env, fake_scontrol(tmp_path), UNITRACK_REQUEUE="1")
    _, uri, code, err = warn_time_limit(tmp_path, env, "hdf5")
    assert code == 128 + signal.SIGUSR1, err
    expected = "scontrol requeue 5 failed" if case == "scontrol fails" else "not in a Slurm job"
    assert expected in err and "status stays 'timeout'" in err
    (trial,) = read_back(uri)
    assert trial.status == CustomStatus("timeout", 204)


# ----------------------------------------------------------------------------- SIGTERM inside `with ex:` only
WITH_SCRIPT = textwrap.dedent(
    """
    import sys
    from unitrack.experiment import Experiment

    class Plain(Experiment):
        '''Used as a context manager, no main().'''

    with Plain(sys.argv[1], "ex1") as ex:
        for i in range(10**9):
            ex.message({"i": i}, step=i)
            print(i, flush=True)
    """
)


def test_sigterm_inside_a_plain_with_block_stops_the_run_and_exits_143(tmp_path, subprocess_env):
    script = tmp_path / "plain.py"
    script.write_text(WITH_SCRIPT)
    env = {k: v for k, v in subprocess_env.items() if k != "UNITRACK_URI"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "root")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged, err = signal_after_first_message(proc, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err
    state = YAML(typ="safe").load((tmp_path / "root" / "ex1" / "params.yml").read_text())
    assert state["_status"] == "stopped"
    (trial,) = read_back(f"hdf5://{tmp_path}/root")
    assert trial.status == Status.Interrupted
    assert set(acknowledged) <= set(trial.metrics["i"].steps)
