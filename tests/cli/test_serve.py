"""`unitrack serve` and `unitrack user`: exit codes and output, in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=60,
    )


def test_user_add_list_passwd_remove(tmp_path: Path) -> None:
    users = str(tmp_path / "users.json")
    added = run(
        "user",
        "add",
        "ada",
        "--role",
        "reader",
        "--users",
        users,
        "--password-stdin",
        stdin="a-long-password\n",
    )
    assert added.returncode == 0, added.stderr
    assert "added user 'ada' (reader)" in added.stdout
    assert "a-long-password" not in Path(users).read_text()
    assert (Path(users).stat().st_mode & 0o777) == 0o600
    assert run("user", "list", "--users", users).stdout == "ada\treader\n"
    changed = run("user", "passwd", "ada", "--users", users, "--password-stdin", stdin="another-password\n")
    assert changed.returncode == 0 and "changed the password" in changed.stdout
    assert run("user", "remove", "ada", "--users", users).returncode == 0
    assert run("user", "list", "--users", users).stdout == ""


def test_user_add_refuses_a_short_password_and_a_duplicate(tmp_path: Path) -> None:
    users = str(tmp_path / "users.json")
    short = run("user", "add", "ada", "--users", users, "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "too short" in short.stderr
    assert (
        run("user", "add", "ada", "--users", users, "--password-stdin", stdin="long-enough-1\n").returncode
        == 0
    )
    again = run("user", "add", "ada", "--users", users, "--password-stdin", stdin="long-enough-1\n")
    assert again.returncode == 2 and "exists" in again.stderr


def test_serve_without_users_refuses_to_start(tmp_path: Path) -> None:
    result = run("serve", "--backend", "ephemeral://", "--port", "0", "--users", str(tmp_path / "none.json"))
    assert result.returncode == 2
    assert "no default password" in result.stderr


def test_serve_refuses_plaintext_on_a_public_address(tmp_path: Path) -> None:
    users = str(tmp_path / "users.json")
    run("user", "add", "ada", "--users", users, "--password-stdin", stdin="long-enough-1\n")
    result = run("serve", "--backend", "ephemeral://", "--host", "0.0.0.0", "--port", "0", "--users", users)  # noqa: S104
    assert result.returncode == 2 and "--insecure" in result.stderr


def test_serve_with_init_admin_prints_the_password_once_and_the_port(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unitrack",
            "serve",
            "--backend",
            f"file://{tmp_path}/db.json",
            "--port",
            "0",
            "--users",
            str(users),
            "--init-admin",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("listening on"):
            break
    password = lines[0].rsplit(": ", 1)[1].strip()
    port = int(lines[-1].rsplit(":", 1)[1])
    assert port > 0 and len(password) >= 20
    assert password not in users.read_text() and "admin" in json.loads(users.read_text())["users"]

    from unitrack.persistence.client import SocketProtocol
    from unitrack.persistence.structure import Project

    with SocketProtocol(f"socket://admin:{password}@127.0.0.1:{port}") as client:
        client.new_project(Project(name="p"))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert password not in out + err
