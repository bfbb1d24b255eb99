"""Sweeps (#14 item 5): registering a grid twice, two runners on one root, rerunning by status, what a killed or
failed run leaves behind, the forms of --experiment users type, and the progress of ``unitrack run``."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``unitrack`` commands in the background; any still running when the test ends is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("UNITRACK_URI", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "unitrack", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def pid_written(path: Path) -> Callable[[], bool]:
    """Whether ``path`` holds a pid yet (it is created before it is written)."""
    return lambda: path.exists() and path.read_text().strip().isdigit()


def statuses(root: Path) -> dict[str, str]:
    result = cli("view", str(root), "--json", "-c", "name", "-c", "status", "-c", "error")
    assert result.returncode == 0, result.stderr
    return {r["name"]: r["status"] for r in map(json.loads, result.stdout.splitlines())}


def errors(root: Path) -> dict[str, str]:
    result = cli("view", str(root), "--json", "-c", "name", "-c", "error")
    assert result.returncode == 0, result.stderr
    return {r["name"]: r["error"] for r in map(json.loads, result.stdout.splitlines())}


def make_root(tmp_path: Path, script: str, grid: str = "{a: 1 | 2}", name: str = "R") -> Path:
    (tmp_path / "d.yml").write_text("a: 0\n")
    (tmp_path / "s.sh").write_text(script)
    root = tmp_path / name
    reg = cli(
        "register", "-r", str(root), "-d", str(tmp_path / "d.yml"), "-s", str(tmp_path / "s.sh"), "-u", grid
    )
    assert reg.returncode == 0, reg.stderr
    return root


def test_registering_a_combination_again_asks_for_repeats(tmp_path: Path) -> None:
    root = make_root(tmp_path, "#!/bin/bash\ntrue\n", "{a: 1 | 2}")
    again = cli("register", "-r", str(root), "-u", "{a: 2 | 3}")
    assert again.returncode == 2, again.stdout
    assert "already registered" in again.stderr and "a=2" in again.stderr and "--repeats" in again.stderr
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".") == ["a=1", "a=2"]
    more = cli("register", "-r", str(root), "-u", "{a: 2 | 3}", "--repeat", "1")
    assert more.returncode == 0, more.stderr
    assert sorted(statuses(root)) == ["a=1", "a=2", "a=2_1", "a=3"]
    named = cli("register", "-r", str(root), "-n", "baseline")
    assert named.returncode == 0 and cli("register", "-r", str(root), "-n", "baseline").returncode == 2


# Appends its experiment to ran.txt, waits for the test's go (so both runners contend), then prints.
CONTEND = """#!/bin/bash
echo "$1" >> "{ran}"
while [ ! -e "{go}" ]; do sleep 0.02; done
echo "output of $1"
"""


def test_two_runners_on_one_root_run_each_experiment_once(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    ran, go = tmp_path / "ran.txt", tmp_path / "go"
    root = make_root(tmp_path, CONTEND.format(ran=ran, go=go), "{a: 1 | 2 | 3 | 4}")
    first = spawn("run", "-r", str(root), "-j", "2")
    second = spawn("run", "-r", str(root), "-j", "2")
    wait_until(
        lambda: ran.exists() and len(ran.read_text().splitlines()) >= 4, timeout_s=60, what="4 runs started"
    )
    go.touch()
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outs
    started = ran.read_text().splitlines()
    assert len(started) == len(set(started)) == 4  # every experiment ran exactly once
    finished = sum(int(out.split(" finished,")[0].split()[-1]) for out, _ in outs)
    assert finished == 4 and "skipped" in outs[0][0] + outs[1][0]
    for n in range(1, 5):  # each log is its run's own, never overwritten by the other runner
        assert (root / f"a={n}" / "run.log").read_text().strip().endswith(f"a={n}/params.yml")
    assert set(statuses(root).values()) == {"finished"}


def test_run_status_reruns_only_the_runs_with_those_statuses(tmp_path: Path) -> None:
    root = make_root(tmp_path, '#!/bin/bash\ngrep -q "a: 2" "$1" && exit 3\ntrue\n', "{a: 1 | 2 | 3 | 4}")
    assert cli("run", "-r", str(root)).returncode == 1  # a=2 fails
    assert cli("reset", "a=3", "-r", str(root), "-s", "interrupted").returncode == 0  # as after Ctrl-C
    assert statuses(root) == {"a=1": "finished", "a=2": "error", "a=3": "stopped", "a=4": "finished"}
    dry = cli("run", "-r", str(root), "--status", "stopped,lost,error", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [Path(line).parent.name for line in dry.stdout.splitlines()[:-1]] == ["a=2", "a=3"]
    stopped_only = cli("run", "-r", str(root), "--status", "stopped")
    assert stopped_only.returncode == 0 and "1 finished, 0 failed, 3 skipped" in stopped_only.stdout
    assert statuses(root) == {"a=1": "finished", "a=2": "error", "a=3": "finished", "a=4": "finished"}
    bad = cli("run", "-r", str(root), "--status", "stoped")
    assert bad.returncode == 2 and "Did you mean 'stopped'" in bad.stderr


# A Python run that prints, says it started (with its pid), then waits to be killed.
PRINTS_THEN_HANGS = """#!/bin/bash
exec "{python}" -c 'import os, pathlib, signal, sys
print("step 1 done: loss 0.25")
pathlib.Path(sys.argv[1]).with_name("pid").write_text(str(os.getpid()))
signal.pause()' "$1"
"""


def test_a_sigkilled_run_keeps_its_output_and_shows_why_it_failed(
    tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    root = make_root(tmp_path, PRINTS_THEN_HANGS.format(python=sys.executable), "{a: 1}")
    run = spawn("run", "-r", str(root))
    pid_file = root / "a=1" / "pid"
    wait_until(pid_written(pid_file), timeout_s=60, what="the run to start")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 1, (out, err)
    assert "step 1 done: loss 0.25" in (root / "a=1" / "run.log").read_text()
    assert statuses(root) == {"a=1": "error"}
    assert errors(root)["a=1"].startswith("killed by SIGKILL: step 1 done: loss 0.25")


FAILS = '''
from unitrack import Experiment


class Fails(Experiment):
    """Raises for a large a."""

    a: int = 0  # @p a number

    def run(self):
        if self.a > 1:
            raise ValueError(f"a={self.a} is too large")


class Other(Experiment):
    """Another experiment in the same file."""

    b: int = 0  # @p another number
'''


def test_a_failed_python_run_shows_its_exception_in_view(tmp_path: Path) -> None:
    (tmp_path / "exps.py").write_text(FAILS)
    root = tmp_path / "P"
    reg = cli("register", "-r", str(root), "-e", f"{tmp_path / 'exps.py'}:Fails", "-u", "{a: 1 | 2}")
    assert reg.returncode == 0, reg.stderr
    assert cli("run", "-r", str(root)).returncode == 1
    assert statuses(root) == {"a=1": "finished", "a=2": "error"}
    assert errors(root) == {"a=1": "", "a=2": "ValueError: a=2 is too large"}
    listed = cli("view", str(root))
    assert "ValueError: a=2 is too large" in listed.stdout


def test_experiment_module_from_the_current_folder_runs_from_anywhere(tmp_path: Path) -> None:
    (tmp_path / "exps.py").write_text(FAILS)
    root = tmp_path / "M"
    reg = cli("register", "-r", str(root), "--experiment", "exps:Fails", "-u", "{a: 0 | 1}", cwd=tmp_path)
    assert reg.returncode == 0, reg.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = cli("run", "-r", str(root), cwd=elsewhere)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert statuses(root) == {"a=0": "finished", "a=1": "finished"}


def test_a_file_holding_several_experiments_needs_the_class_named(tmp_path: Path) -> None:
    (tmp_path / "exps.py").write_text(FAILS)
    both = cli("register", "-r", str(tmp_path / "X"), "-e", str(tmp_path / "exps.py"))
    assert both.returncode == 2 and "Fails, Other" in both.stderr and "exps.py:Class" in both.stderr
    wrong = cli("register", "-r", str(tmp_path / "Y"), "-e", f"{tmp_path / 'exps.py'}:Nope")
    assert wrong.returncode == 2 and "no Experiment 'Nope'" in wrong.stderr
    other = cli("register", "-r", str(tmp_path / "Z"), "-e", f"{tmp_path / 'exps.py'}:Other", "-u", "{b: 5}")
    assert other.returncode == 0, other.stderr
    assert cli("run", "-r", str(tmp_path / "Z")).returncode == 0
    assert statuses(tmp_path / "Z") == {"b=5": "finished"}


def test_run_progress_is_plain_lines_off_a_terminal(tmp_path: Path) -> None:
    root = make_root(tmp_path, '#!/bin/bash\ngrep -q "a: 2" "$1" && exit 3\ntrue\n', "{a: 1 | 2 | 3}")
    result = cli("run", "-r", str(root))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1/3] a=1: finished") and "ETA" in lines[0]
    assert lines[1].startswith("[2/3] a=2: error") and "1 failed so far" in lines[1]
    assert lines[-1] == "2 finished, 1 failed, 0 skipped"


def test_run_progress_is_a_live_display_on_a_terminal(tmp_path: Path) -> None:
    root = make_root(tmp_path, '#!/bin/bash\ngrep -q "a: 2" "$1" && exit 3\ntrue\n', "{a: 1 | 2}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm"}
    env.pop("UNITRACK_URI", None)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "unitrack", "run", "-r", str(root)], stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    os.close(leader)
    text = output.decode("utf-8", errors="replace")
    assert (
        "2/2" in text and "1 failed" in text and "\x1b[" in text
    )  # a rich display: count, failures, escapes
    assert "failed: a=2 (error)" in text


HANGS = '''
import os
import pathlib
import signal

from unitrack import Experiment


class Hangs(Experiment):
    """Messages, then waits for a signal while the file 'hang' exists beside the root."""

    a: int = 0  # @p a number

    def run(self):
        self.message({"loss": 1.0}, step=0)
        here = pathlib.Path(self.directory)
        if (here.parent.parent / "hang").exists():
            (here / "pid").write_text(str(os.getpid()))
            signal.pause()
        self.message({"loss": 0.5}, step=1)
'''


def test_a_run_killed_with_its_runner_is_lost_and_rerun_by_status_lost(
    tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    """A node dies: the runner and its experiment get SIGKILL. The run shows `lost` and `--status lost` reruns it."""
    (tmp_path / "hangs.py").write_text(HANGS)
    (tmp_path / "hang").touch()
    root = tmp_path / "L"
    reg = cli("register", "-r", str(root), "-e", str(tmp_path / "hangs.py"), "-u", "{a: 1 | 2}")
    assert reg.returncode == 0, reg.stderr
    runner = spawn("run", "-r", str(root), "a=1")
    pid_file = root / "a=1" / "pid"
    wait_until(pid_written(pid_file), timeout_s=60, what="the experiment to start")
    runner.kill()
    runner.communicate(timeout=60)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_until(lambda: statuses(root)["a=1"] == "lost", timeout_s=60, what="the run to be lost")
    assert statuses(root) == {"a=1": "lost", "a=2": "registered"}
    (tmp_path / "hang").unlink()
    again = cli("run", "-r", str(root), "--status", "lost")
    assert again.returncode == 0 and "1 finished, 0 failed, 1 skipped" in again.stdout, (
        again.stdout + again.stderr
    )
    assert statuses(root) == {"a=1": "finished", "a=2": "registered"}
