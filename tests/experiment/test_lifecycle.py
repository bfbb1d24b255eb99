"""What a run is, for experiments: one folder, one params.yml and one trial per execution; a killed run is
``lost`` everywhere; a resumed run takes what the backend holds; messages reach params.yml without a status
change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from tests.conftest import wait_until
from unitrack.cli.app import app
from unitrack.persistence.lifecycle import read_heartbeat, run_status
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status
from unitrack.store.readers import CollectionReader

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from unitrack.experiment import Experiment
    from unitrack.experiment.functional import Root, functional_experiment

    class T(Experiment):
        '''Logs its value, or (loop) messages a falling best until killed.'''

        a: int = 1  # @p a parameter

        def run(self):
            if float(sys.argv[1]) >= 0:
                for i in range(3):
                    self.message({"v": float(sys.argv[1])}, step=i)
                return
            i = 0
            while True:
                self.message({"best": 1.0 / (i + 1), "i": i}, keep="min", leader="best")
                print(i, flush=True)  # acknowledged: message() returned
                i += 1
                time.sleep(0.002)

    def f(root: Root, a: int = 1):  # @p a parameter
        for i in range(3):
            root.message({"v": float(sys.argv[1])}, step=i)

    if __name__ == "__main__":
        (functional_experiment(f)() if sys.argv[2] == "functional" else T()).main(sys.argv[3:])
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "t.py"
    path.write_text(SCRIPT)
    return path


def read_yaml(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


def trials(root: Path) -> list:
    with warnings.catch_warnings():  # a killed writer leaves a torn journal tail, dropped with a warning
        warnings.simplefilter("ignore")
        with get_protocol(f"hdf5://{root}") as protocol:
            return protocol.fetch_trials(None)


@pytest.mark.parametrize("kind", ["class", "functional"])
def test_running_an_experiment_script_twice_gives_two_runs_whose_folder_params_and_trial_agree(
    tmp_path, script, subprocess_env, kind
):
    root = tmp_path / "runs"
    for value in ("0.5", "0.9"):
        done = subprocess.run(
            [sys.executable, str(script), value, kind, "-x", str(root / "e")],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    by_name = {t.name: t for t in trials(root)}
    assert {k: v.metrics["v"].values for k, v in by_name.items()} == {"e": (0.5,) * 3, "e_1": (0.9,) * 3}
    assert all(t.status is Status.Completed for t in by_name.values())
    for folder in ("e", "e_1"):
        params = read_yaml(root / folder / "params.yml")
        summary = json.loads((root / folder / "trial.json").read_text())
        assert params["_root"] == str(root / folder) and params["_messages"] == {
            "v": by_name[folder].metrics["v"].latest
        }
        assert summary["uid"] == by_name[folder].uid and by_name[folder].metadata["directory"] == str(
            root / folder
        )
    frame = CollectionReader(str(root)).df("metrics")
    assert frame.groupby("exp_id")["value"].max().to_dict() == {"e": 0.5, "e_1": 0.9}


def start_loop(script: Path, env: dict, target: Path, *extra: str, heartbeat_s: str = "30"):
    proc = subprocess.Popen(
        [sys.executable, str(script), "-1", "class", "-x", str(target), *extra],
        env={**env, "UNITRACK_HEARTBEAT_S": heartbeat_s},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first, proc.stderr.read()
    return proc, [int(first)]


def kill(proc, acknowledged: list[int], after: int = 0) -> list[int]:
    """Read ``after`` more acknowledged messages, SIGKILL the run, and return every acknowledged step."""
    try:
        while len(acknowledged) <= after:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    return acknowledged + [int(x) for x in rest.split()]


def test_a_killed_experiment_is_lost_in_every_listing_and_a_live_one_beats(tmp_path, script, subprocess_env):
    root = tmp_path / "runs"
    proc, acknowledged = start_loop(script, subprocess_env, root / "ex1", heartbeat_s="0.2")
    try:
        (live,) = trials(root)
        beat = read_heartbeat(live)
        assert run_status(live) == "running" and beat is not None and beat.pid == proc.pid
        assert read_yaml(root / "ex1" / "params.yml")["_meta"]["process"]["pid"] == proc.pid
        wait_until(
            lambda: read_heartbeat(trials(root)[0]).last_seen > beat.last_seen,
            timeout_s=30,
            what="a new beat",
        )
    finally:
        kill(proc, acknowledged)
    wait_until(lambda: run_status(trials(root)[0]) == "lost", timeout_s=30, what="the killed run to be lost")
    assert read_yaml(root / "ex1" / "params.yml")["_status"] == "running"  # what the process last wrote
    runner = CliRunner()
    for target in (str(root), f"hdf5://{root}"):
        shown = runner.invoke(app, ["view", target])
        assert shown.exit_code == 0, shown.output
        (row,) = [line for line in shown.output.splitlines() if line.startswith("ex1")]
        assert " lost " in f" {row} " and "running" not in row, shown.output


def test_restart_after_a_kill_takes_the_kept_messages_from_the_backend_not_the_stale_params_yml(
    tmp_path, script, subprocess_env
):
    root = tmp_path / "runs"
    proc, acknowledged = start_loop(script, subprocess_env, root / "ex1")
    acknowledged = kill(proc, acknowledged, after=60)
    (trial,) = trials(root)
    kept = trial.metadata["messages"]
    assert kept["i"] >= acknowledged[-1] and kept["best"] == 1.0 / (kept["i"] + 1)
    stale = read_yaml(root / "ex1" / "params.yml")["_messages"]
    assert stale.get("i", -1) < kept["i"], "params.yml was refreshed at the kill: the test proves nothing"
    # --restart (the CLI's resume) runs it again in the same folder and trial; a worse value is not kept.
    done = subprocess.run(
        [sys.executable, str(script), "0.9", "class", "-x", str(root / "ex1"), "--restart"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (after,) = trials(root)
    params = read_yaml(root / "ex1" / "params.yml")
    assert after.uid == trial.uid and after.status is Status.Completed
    assert params["_messages"] == after.metadata["messages"] == {**kept, "v": 0.9}
    assert after.metrics["best"].latest == kept["best"]  # the series kept every point: none replaced


def test_register_restart_in_python_takes_the_backends_messages(tmp_path, script, subprocess_env):
    from tests.experiment.experiments_for_tests import Keep

    root = tmp_path / "runs"
    proc, acknowledged = start_loop(script, subprocess_env, root / "ex1")
    kill(proc, acknowledged, after=30)
    (trial,) = trials(root)
    ex = Keep().register(str(root), "ex1", restart=True)
    assert ex.messages == trial.metadata["messages"]
    with ex:
        ex.message({"best": 0.9}, keep="min")
    assert ex.messages["best"] == trial.metadata["messages"]["best"] < 0.9
    assert read_yaml(root / "ex1" / "params.yml")["_messages"] == ex.messages


MESSENGER = textwrap.dedent(
    """
    import sys
    from unitrack.experiment import Experiment
    from unitrack.monitor import Monitor, XmenMessenger

    ex = Experiment()
    ex.link(sys.argv[1], 'ex')
    m = Monitor(hooks=[XmenMessenger('^y$|^i$->^ex$@10s', keep='min', leader='^y$')])
    x = -50
    for i in m(range(100)):
        x += 1
        y = x ** 2
    """
)


def test_monitor_messages_to_a_registered_experiment_reach_params_yml(tmp_path, subprocess_env):
    """xmen's messenger examples message an experiment that is registered but never inside `with ex:`."""
    script = tmp_path / "messenger.py"
    script.write_text(MESSENGER)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    messages = read_yaml(tmp_path / "ex" / "params.yml")["_messages"]
    assert {k: messages[k] for k in ("i", "y")} == {"i": 49, "y": 0}  # beside the Monitor's timing messages


def test_messages_after_a_burst_reach_params_yml_about_a_second_later(tmp_path):
    from unitrack.experiment import Experiment

    ex = Experiment().register(str(tmp_path), "ex", backend="ephemeral://")
    for i in range(5):
        ex.message({"i": i})
    wait_until(
        lambda: read_yaml(tmp_path / "ex" / "params.yml")["_messages"] == {"i": 4},
        timeout_s=30,
        what="params.yml to hold the last message",
    )
