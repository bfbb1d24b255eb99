"""The `unitrack` command: exit codes, output, help text, and the README listing every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unitrack.cli.app import app
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.structure import Trial

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in _commands():
        result = run(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
        assert f"unitrack {name}" in readme, f"README does not mention `unitrack {name}`"


def test_backends_lists_the_schemes() -> None:
    result = run("backends")
    assert result.returncode == 0
    assert "file://" in result.stdout and "ephemeral://" in result.stdout


def test_dump_prints_the_trials_as_json(tmp_path: Path) -> None:
    with FileProtocol(f"file://{tmp_path}/db.json", strict=False) as db:
        t = db.new_trial(Trial(name="t", parameters={"lr": 0.1}))
        assert t is not None
        db.log_trial_metrics(t, step=0, loss=1.5)
    result = run("dump", f"file://{tmp_path}/db.json", "--query", '{"parameters.lr": {"$lt": 1}}')
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["trials"][0]["metrics"]["loss"]["values"] == [1.5]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("dump", "hfd5://runs"), 2, "error: no backend for scheme 'hfd5'"),
        (("dump", "ephemeral://", "--query", "{bad"), 2, "error: Invalid query"),
        (("no-such-command",), 2, "No such command"),
    ],
)
def test_bad_usage_exits_2_with_one_line_on_stderr(args: tuple[str, ...], code: int, message: str) -> None:
    result = run(*args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_storage_failure_exits_1(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text("{not json")
    result = run("dump", f"file://{tmp_path}/db.json")
    assert result.returncode == 1
    assert "is corrupt at byte" in result.stderr
