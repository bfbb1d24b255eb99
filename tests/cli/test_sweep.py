"""Sweeps from the command line: register, run, view and the manager commands, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    root = tmp_path / "R"
    result = cli(
        "register",
        "--root",
        str(root),
        "--experiment",
        str(ROOT / "examples" / "quadratic.py"),
        "-u",
        "{step: 0.01 | 0.1, x0: 0.0 | 5.0}",
    )
    assert result.returncode == 0, result.stderr
    assert "4 experiment(s) registered" in result.stdout
    return root


def test_readme_flow_register_run_view(grid: Path) -> None:
    result = cli("run", "--root", str(grid), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("finished (") == 4
    assert "4 finished, 0 failed, 0 skipped" in result.stdout
    view = cli("view", str(grid))
    assert view.returncode == 0, view.stderr
    lines = view.stdout.splitlines()
    assert lines[0].split() == ["name", "status", "x0", "step", "x", "f", "age"]
    assert sum(" finished " in line for line in lines) == 4
    assert "3.0009" in view.stdout  # the kept minimum of f for step=0.1
    again = cli("run", "--root", str(grid))
    assert again.returncode == 0 and "0 finished, 0 failed, 4 skipped" in again.stdout
    through_backend = cli("view", f"hdf5://{grid}", "--json")
    rows = [json.loads(line) for line in through_backend.stdout.splitlines()]
    assert through_backend.returncode == 0 and len(rows) == 4
    assert {r["status"] for r in rows} == {"finished"} and all("f" in r for r in rows)


def test_view_filters_sorts_and_writes_csv(grid: Path, tmp_path: Path) -> None:
    result = cli("view", str(grid), "-f", "step<0.05", "--sort", "x0", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["step=0.01__x0=0.0", "step=0.01__x0=5.0"]
    assert cli("view", str(grid), "--status", "finished").stdout.strip().endswith("0 run(s)")
    out = tmp_path / "t.csv"
    assert cli("view", str(grid), "--csv", str(out)).returncode == 0
    assert out.read_text().splitlines()[0].startswith("name,status")
    bad = cli("view", str(grid), "-f", "step<")
    assert bad.returncode == 2 and "position 5" in bad.stderr and "Traceback" not in bad.stderr


def test_failed_run_is_marked_error_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("a: 1\n")
    (tmp_path / "s.sh").write_text('#!/bin/bash\ngrep -q "a: 2" "$1" && { echo boom; exit 4; }\necho ok\n')
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
        "{a: 1 | 2}",
    )
    assert reg.returncode == 0, reg.stderr
    assert cli("run", "--dry-run", "-r", str(root)).stdout.count("run.sh") == 2
    result = cli("run", "-r", str(root), "-j", "2")
    assert result.returncode == 1
    assert "1 finished, 1 failed" in result.stdout and "a=2/run.log" in result.stderr
    assert "boom" in (root / "a=2" / "run.log").read_text()
    view = cli("view", str(root), "--json")
    status = {json.loads(line)["name"]: json.loads(line)["status"] for line in view.stdout.splitlines()}
    assert status == {"a=1": "finished", "a=2": "error"}
    rerun = cli("run", "a=1", "-r", str(root), "--rerun")
    assert rerun.returncode == 0 and "1 finished" in rerun.stdout


def test_manager_commands(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("a: 1\nb: x\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    root = tmp_path / "M"
    assert (
        cli(
            "register",
            "-r",
            str(root),
            "-d",
            str(tmp_path / "d.yml"),
            "-s",
            str(tmp_path / "s.sh"),
            "-u",
            "{a: 1 | 2}",
            "-x",
            "2",
        ).returncode
        == 0
    )
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".") == [
        "a=1",
        "a=1_1",
        "a=2",
        "a=2_1",
    ]
    steps = [
        (("note", "a=1", "hello", "-r", str(root)), "noted on 1"),
        (("note", "a=1", "hello", "-r", str(root), "--delete"), "removed from 1"),
        (("reset", "a=2*", "-r", str(root), "-s", "finished"), "2 experiment(s) set to finished"),
        (("unlink", "a=2_1", "-r", str(root)), "1 experiment(s) unlinked"),
        (("relink", "-r", str(root)), "1 experiment(s) relinked"),
        (("unlink", "a=2_1", "-r", str(root)), "1 experiment(s) unlinked"),
        (("clean", "-r", str(root)), "pass --yes"),  # not on a terminal: nothing deleted without --yes
        (("clean", "-r", str(root), "--dry-run"), "1 folder(s) would be deleted (dry run)"),
        (("clean", "-r", str(root), "--yes"), "1 folder(s) deleted"),
        (("move", str(tmp_path / "N"), "-r", str(root)), "moved to"),
    ]
    for args, expected in steps:
        result = cli(*args)
        if expected == "pass --yes":
            assert result.returncode == 2 and expected in result.stderr, (args, result.stderr)
            assert (root / "a=2_1").exists()
            continue
        assert result.returncode == 0, (args, result.stderr)
        assert expected in result.stdout, (args, result.stdout)
    assert not root.exists() and not (tmp_path / "N" / "a=2_1").exists()
    assert (tmp_path / "N" / "a=1_1" / "params.yml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("register", "-u", "{a: 1}"), "not an experiment root"),
        (("register", "-d", "D", "-s", "S", "-u", "{a: [1] | 2}"), "position"),
        (("register", "-d", "D", "-s", "S", "-u", "{zz: 1}"), "unknown key 'zz'; known: a"),
        (("run",), "not an experiment root"),
        (("note", "nothing*", "x"), "not an experiment root"),
        (("view", "no/such/folder"), "neither a folder nor a backend URI"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "D").write_text("a: 1\n")
    (tmp_path / "S").write_text("true\n")
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_hostile_values_from_the_command_line_run_nothing(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("a: x\n")
    (tmp_path / "s.sh").write_text('#!/bin/bash\ncat "$1" >/dev/null\n')
    root = tmp_path / "H"
    text = '{a: "$(touch PWNED) | `touch PWNED` | ; touch PWNED | ../../x"}'
    reg = cli(
        "register",
        "-r",
        str(root),
        "-d",
        str(tmp_path / "d.yml"),
        "-s",
        str(tmp_path / "s.sh"),
        "-u",
        text,
        cwd=tmp_path,
    )
    assert reg.returncode == 0, reg.stderr
    assert cli("run", "-r", str(root), cwd=tmp_path).returncode == 0
    assert not list(tmp_path.rglob("PWNED")) and not (tmp_path / "x").exists()
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
    assert len(names) == 4 and all("/" not in n for n in names)
