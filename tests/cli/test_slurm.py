"""``unitrack run --slurm``: write the sbatch job array, submit it when sbatch is on PATH, else say how."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, path: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path}
    env.pop("UNITRACK_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    (tmp_path / "d.yml").write_text("a: 1\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    root = tmp_path / "S"
    reg = cli(
        "register",
        "-r",
        str(root),
        "-d",
        str(tmp_path / "d.yml"),
        "-s",
        str(tmp_path / "s.sh"),
        "-u",
        "{a: 1 | 2 | 3}",
        path="/usr/bin:/bin",
    )
    assert reg.returncode == 0, reg.stderr
    return root


@pytest.fixture
def fake_sbatch(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        '#!/bin/bash\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv.txt"\necho "Submitted batch job 42"\n'
    )
    sbatch.chmod(0o755)
    return bin_dir


def scripts(root: Path) -> list[Path]:
    return sorted((root / "slurm").glob("*.sbatch"))


def test_run_slurm_submits_with_sbatch_on_path(sweep: Path, fake_sbatch: Path) -> None:
    result = cli(
        "run",
        "--slurm",
        "--sbatch-args",
        "-p gpu --time=1:00:00",
        "-r",
        str(sweep),
        path=f"{fake_sbatch}:/usr/bin:/bin",
    )
    assert result.returncode == 0, result.stderr
    assert "submitted job array 42 (3 task(s))" in result.stdout
    [script] = scripts(sweep)
    assert (fake_sbatch / "argv.txt").read_text().splitlines() == [str(script)]
    text = script.read_text()
    assert "#SBATCH --array=0-2" in text and "#SBATCH -p gpu" in text


def test_run_slurm_without_sbatch_prints_the_script_path(sweep: Path) -> None:
    result = cli("run", "a=[12]", "--slurm", "-r", str(sweep), path="/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    [script] = scripts(sweep)
    assert f"written to {script}" in result.stdout and f"sbatch {script}" in result.stdout
    assert "#SBATCH --array=0-1" in script.read_text()


def test_run_slurm_skips_finished_unless_rerun(sweep: Path) -> None:
    assert cli("reset", "*", "-r", str(sweep), "-s", "finished", path="/usr/bin:/bin").returncode == 0
    result = cli("run", "--slurm", "-r", str(sweep), path="/usr/bin:/bin")
    assert result.returncode == 0 and "nothing to submit" in result.stdout and not scripts(sweep)
    again = cli("run", "--slurm", "--rerun", "-r", str(sweep), path="/usr/bin:/bin")
    assert again.returncode == 0 and "for 3 experiment(s)" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--slurm", "--sbatch-args", "--array=0-9"), "set by unitrack"),
        (("--slurm", "--sbatch-args", "gpu"), "not an option"),
        (("--sbatch-args", "-p gpu"), "needs --slurm"),
        (("--requeue",), "needs --slurm"),
        (("--slurm", "--requeue", "--sbatch-args", "--signal=USR2@5"), "set by unitrack for --requeue"),
        (("--slurm", "--requeue", "--grace", "0"), "greater than or equal to 1"),
    ],
)
def test_run_slurm_bad_options_exit_2_and_write_nothing(
    sweep: Path, args: tuple[str, ...], message: str
) -> None:
    result = cli("run", *args, "-r", str(sweep), path="/usr/bin:/bin")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not scripts(sweep)


def test_run_slurm_failing_sbatch_exits_1(sweep: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "badbin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "sbatch: error: invalid partition" >&2\nexit 1\n')
    (bin_dir / "sbatch").chmod(0o755)
    result = cli("run", "--slurm", "-r", str(sweep), path=f"{bin_dir}:/usr/bin:/bin")
    assert result.returncode == 1 and "invalid partition" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_slurm_requeue_asks_for_the_time_limit_warning(sweep: Path) -> None:
    result = cli("run", "-r", str(sweep), "--slurm", "--requeue", "--grace", "90", path="/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    (script,) = scripts(sweep)
    lines = script.read_text().splitlines()
    assert {"#SBATCH --signal=B:USR1@90", "#SBATCH --requeue", "export UNITRACK_REQUEUE=1"} <= set(lines)
