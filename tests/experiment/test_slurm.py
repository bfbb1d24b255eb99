"""The sbatch job array: valid bash, every path quoted, the task id mapped to exactly one run.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from unitrack.errors import ConfigError
from unitrack.experiment.manager import ExperimentManager
from unitrack.experiment.slurm import sbatch_lines, write_array_script

HOSTILE = ["$(touch PWNED)", "two words", 'it\'s "quoted"', "`touch PWNED`; touch PWNED", "a\\b"]


@pytest.fixture
def hostile_root(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "root $(touch PWNED) 'q'"
    folders = []
    for name in HOSTILE:
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        run = folder / "run.sh"
        run.write_text('#!/bin/bash\nprintf "%s\\n" "$0" >> "$MARKER"\n')
        run.chmod(0o755)
        folders.append(folder)
    return root, folders


def run_task(script: str, task: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    marker = tmp_path / "ran.txt"
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": task, "MARKER": str(marker)}
    result = subprocess.run(["bash", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    return result, marker


def test_array_script_is_valid_bash_with_the_array_header(hostile_root, tmp_path: Path) -> None:
    root, folders = hostile_root
    script = write_array_script(str(root), [str(f) for f in folders], sbatch_args="-p gpu --time=1:00:00")
    assert Path(script).parent == root / "slurm" and script.endswith(".sbatch")
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    lines = Path(script).read_text().splitlines()
    assert f"#SBATCH --array=0-{len(folders) - 1}" in lines
    assert "#SBATCH -p gpu" in lines and "#SBATCH --time=1:00:00" in lines
    assert any(line.startswith("#SBATCH --job-name=") for line in lines)
    assert any(line.startswith("#SBATCH --output=") and line.endswith("/slurm/%A_%a.out'") for line in lines)


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_each_task_runs_exactly_its_run_sh_and_nothing_else(hostile_root, tmp_path: Path, index: int) -> None:
    root, folders = hostile_root
    script = write_array_script(str(root), [str(f) for f in folders])
    result, marker = run_task(script, str(index), tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.read_text().splitlines() == [str(folders[index] / "run.sh")]
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("task", ["", "5", "99", "-1", "a[$(touch PWNED)]", "1;touch PWNED", "0x1"])
def test_a_bad_task_id_runs_nothing(hostile_root, tmp_path: Path, task: str) -> None:
    root, folders = hostile_root
    script = write_array_script(str(root), [str(f) for f in folders])
    result, marker = run_task(script, task, tmp_path)
    assert result.returncode == 2 and not marker.exists()
    assert not list(tmp_path.rglob("PWNED"))


def test_scripts_written_in_the_same_second_do_not_overwrite(tmp_path: Path) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5)
    write_array_script(str(tmp_path), [str(tmp_path / "a")], now=now)
    with pytest.raises(FileExistsError):
        write_array_script(str(tmp_path), [str(tmp_path / "a")], now=now)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("gpu", "not an option"),
        ("--array=0-3", "set by unitrack"),
        ("-o x", "set by unitrack"),
        (["--comment=a\n#SBATCH --x"], "control character"),
        ("--comment 'open", "cannot be split"),
    ],
)
def test_bad_sbatch_args_raise_config_error(args, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sbatch_lines(args)


def test_sbatch_args_with_spaces_are_quoted() -> None:
    assert sbatch_lines("--comment 'a b' -J x") == ["--comment 'a b'", "-J x"]


def test_no_folders_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no experiments"):
        write_array_script(str(tmp_path), [])


def test_manager_slurm_script_skips_finished_unless_rerun(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("a: x\n")
    (tmp_path / "s.sh").write_text('#!/bin/bash\nprintf "%s\\n" "$1" >> "$MARKER"\n')
    manager = ExperimentManager(tmp_path / "set")
    manager.initialise(defaults=str(tmp_path / "d.yml"), script=str(tmp_path / "s.sh"))
    folders = manager.register(string_params='{a: "$(touch PWNED) | b c | it\'s"}')
    manager.set_status(folders[:1], "finished")
    script, chosen = manager.slurm_script()
    assert chosen == folders[1:] and f"--array=0-{len(chosen) - 1}" in Path(script).read_text()
    result, marker = run_task(script, "1", tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.read_text().splitlines() == [os.path.join(folders[2], "params.yml")]
    script, chosen = manager.slurm_script(rerun=True)
    assert chosen == folders and manager.status(folders[0]) == "registered"
    assert not list(tmp_path.rglob("PWNED"))


# ------------------------------------------------------------------------------------ requeue at the time limit
def test_requeue_script_asks_for_the_warning_and_exports_the_flag(hostile_root, tmp_path: Path) -> None:
    root, folders = hostile_root
    (folders[0] / "run.sh").write_text('#!/bin/bash\nprintf "%s\\n" "$UNITRACK_REQUEUE" >> "$MARKER"\n')
    script = write_array_script(str(root), [str(f) for f in folders], requeue_grace_s=300)
    lines = Path(script).read_text().splitlines()
    assert {"#SBATCH --signal=B:USR1@300", "#SBATCH --requeue", "#SBATCH --open-mode=append"} <= set(lines)
    assert subprocess.run(["bash", "-n", script], capture_output=True).returncode == 0
    result, marker = run_task(script, "0", tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.read_text().splitlines() == ["1"]
    plain = Path(
        write_array_script(str(root), [str(f) for f in folders], now=datetime(2026, 1, 1))
    ).read_text()
    assert "USR1" not in plain and "UNITRACK_REQUEUE" not in plain


@pytest.mark.parametrize("grace", [0, -5, 70000, 1.5, True])
def test_a_bad_grace_period_is_refused(tmp_path: Path, grace: object) -> None:
    with pytest.raises(ConfigError, match="grace period"):
        write_array_script(str(tmp_path), [str(tmp_path / "a")], requeue_grace_s=grace)  # type: ignore[arg-type]
    assert not (tmp_path / "slurm").exists() or not list((tmp_path / "slurm").iterdir())


@pytest.mark.parametrize("option", ["--signal=USR2@60", "--requeue", "--no-requeue", "--open-mode=truncate"])
def test_requeue_options_are_owned_only_when_requeueing(option: str) -> None:
    assert sbatch_lines(option) == [option]
    with pytest.raises(ConfigError, match="set by unitrack for --requeue"):
        sbatch_lines(option, requeue=True)


EXPERIMENT = '''
import sys
from unitrack.experiment import Experiment

class Long(Experiment):
    """Messages until the time limit."""

    n: int = 10**9  # @p how many messages

    def run(self):
        for i in range(self.n):
            self.message({"i": i}, step=i)
            print(i, flush=True)
'''


def test_the_time_limit_warning_reaches_the_experiment_through_the_job_script(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """sbatch script → run.sh → python, each exec'ing the next: SIGUSR1 sent to the batch shell's pid (what
    ``--signal=B:USR1@N`` does) reaches the experiment, which requeues its array task."""
    (tmp_path / "long.py").write_text(EXPERIMENT)
    manager = ExperimentManager(tmp_path / "set")
    manager.initialise(name=str(tmp_path / "long.py"))
    (folder,) = manager.register(string_params="{n: 1000000000}")
    script, _ = manager.slurm_script(requeue_grace_s=60)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{bin_dir}/argv.txt"\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in subprocess_env.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}",
        SLURM_ARRAY_JOB_ID="31",
        SLURM_ARRAY_TASK_ID="0",
        SLURM_JOB_ID="32",
    )
    proc = subprocess.Popen(
        ["bash", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("unitrack: array task 0 runs"), proc.stderr.read()
        assert proc.stdout.readline().strip() == "0", proc.stderr.read()
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGUSR1, err
    assert (bin_dir / "argv.txt").read_text().splitlines() == ["requeue", "31_0"]
    assert manager.status(folder) == "requeue"
    assert folder in manager.runnable()  # the requeued task (or unitrack run) runs it again
