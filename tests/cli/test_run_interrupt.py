"""Ctrl-C during `unitrack run` stops the workers and marks their experiments stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]

# Marks itself started, then waits for a signal (the runner's SIGINT to its process group).
SCRIPT = """#!/bin/bash
exec "{python}" -c 'import pathlib, signal, sys; pathlib.Path(sys.argv[1]).with_name("started").touch(); signal.pause()' "$1"
"""


def _cli(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "unitrack", *args], env=env, text=True, **kwargs
    )


def test_ctrl_c_stops_workers_and_marks_them_stopped(tmp_path: Path) -> None:
    (tmp_path / "d.yml").write_text("a: 0\n")
    (tmp_path / "s.sh").write_text(SCRIPT.format(python=sys.executable))
    root = tmp_path / "R"
    register = _cli("register", "-r", str(root), "-d", str(tmp_path / "d.yml"), "-s", str(tmp_path / "s.sh"),
                    "-u", "{a: 1 | 2}", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _, err = register.communicate(timeout=60)
    assert register.returncode == 0, err
    run = _cli("run", "-r", str(root), "--jobs", "2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folders = [root / "a=1", root / "a=2"]
    wait_until(
        lambda: all((f / "started").exists() for f in folders), timeout_s=30, what="both workers to start"
    )
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode != 0, out
    view = _cli("view", str(root), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listing, verr = view.communicate(timeout=60)
    assert view.returncode == 0, verr
    statuses = sorted(json.loads(line)["status"] for line in listing.splitlines())  # JSON lines
    assert statuses == ["stopped", "stopped"], listing
