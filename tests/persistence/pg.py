"""A private PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary folder, on a free port.

The server listens on 127.0.0.1 and on a unix socket inside its folder, trusts local connections, and runs
as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root). Each test gets its own
schema (``?schema=...``), which is much faster than a database per test.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENABLE_HINT = "install PostgreSQL to run the postgresql:// tests: apt-get install postgresql"


#: Environment variable naming another folder holding initdb and pg_ctl (e.g. a self-built PostgreSQL).
BIN_ENV = "UNITRACK_TEST_PG_BIN"


def find_bin_dir() -> Path | None:
    """``$UNITRACK_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin`` holding initdb; None if none."""
    chosen = os.environ.get(BIN_ENV)
    if chosen:
        return Path(chosen) if (Path(chosen) / "initdb").is_file() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PostgresServer:
    """A running throw-away server: its URI, and a way to restart it (as a failover or an upgrade would)."""

    uri: str
    bin_dir: Path
    data: Path
    log: Path
    options: str

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_as_server_user(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: every session is ended; ``immediate``: a crash) and start again on the same port."""
        self._ctl("-m", mode, "-w", "stop")
        self._ctl("-l", str(self.log), "-o", self.options, "-w", "start")


@contextmanager
def postgres_instance(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a throw-away server; yield it (``.uri`` is ``postgresql://postgres@127.0.0.1:port/postgres``)."""
    folder = Path(tempfile.mkdtemp(prefix="unitrack-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        data, log = folder / "data", folder / "server.log"
        run = _as_server_user()
        subprocess.run(
            [*run, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        server = PostgresServer(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", bin_dir, data, log, options
        )
        server._ctl("-l", str(log), "-o", options, "-w", "start")
        try:
            yield server
        finally:
            subprocess.run(
                [*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a throw-away server; yield its base URI (``postgresql://postgres@127.0.0.1:port/postgres``)."""
    with postgres_instance(bin_dir) as server:
        yield server.uri


def schema_uri(base: str, key: str) -> str:
    """The URI of a private schema for ``key`` (e.g. a test's tmp_path): same key, same schema."""
    return f"{base}?schema=t_{hashlib.sha256(key.encode()).hexdigest()[:20]}"
