"""A running experiment killed at random moments loses nothing it acknowledged; SIGTERM stops it cleanly."""

from __future__ import annotations

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
from unitrack.persistence.structure import Status

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


def start(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT)
    uri = f"file://{tmp_path}/db.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), "-x", str(tmp_path / "root" / "ex1")],
        env={**env, "UNITRACK_URI": uri},
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


def read_back(uri: str):
    # A writer killed mid-line leaves a torn journal tail, which the file backend drops with a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_protocol(uri).fetch_trials({"name": "ex1"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_keeps_every_acknowledged_message(tmp_path, subprocess_env, seed):
    kill_after = random.Random(seed).choice([0, 1, 50, 400, 1500])
    proc, uri = start(tmp_path, subprocess_env)
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


def test_sigterm_leaves_a_stopped_status_with_data_flushed(tmp_path, subprocess_env):
    proc, uri = start(tmp_path, subprocess_env)
    first = proc.stdout.readline()
    assert first, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    rest, err = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, err
    acknowledged = [int(first), *(int(x) for x in rest.split())]
    state = YAML(typ="safe").load((tmp_path / "root" / "ex1" / "params.yml").read_text())
    assert state["_status"] == "stopped" and state["_timestamps"]["stopped"]
    # the message in flight when the signal came is completed (durable) but was not acknowledged yet
    assert state["_messages"]["i"] in (acknowledged[-1], acknowledged[-1] + 1)
    (trial,) = read_back(uri)
    assert trial.status == Status.Interrupted and trial.metadata["status"] == "stopped"
    assert set(acknowledged) <= set(trial.metrics["i"].steps)
