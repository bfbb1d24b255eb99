"""Fixtures for compatibility with the original libraries: cox's own stores, crafted foreign files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]


class RunsCode:
    """Pickles to a call of ``open(path, 'w')``: unpickling it creates ``path``, which the tests look for."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def poison_h5(h5_path: Path, marker_dir: Path, *, cox_data: bool = False) -> list[Path]:
    """Add attributes to ``h5_path`` whose unpickling creates a file in ``marker_dir``; return those files.

    The attributes go on the root, on every table's group and on its table node (where pandas and PyTables
    read theirs); with ``cox_data`` each group's ``COX_DATA`` (cox's schema attribute) is replaced too.
    Writing an attribute runs nothing; only reading it back with pandas or PyTables would.
    """
    import tables

    markers: list[Path] = []

    def bait(where: str) -> RunsCode:
        markers.append(marker_dir / f"PWNED-{where}")
        return RunsCode(markers[-1])

    with tables.open_file(str(h5_path), "a") as h5:
        groups = [g for g in h5.root._f_iter_nodes() if isinstance(g, tables.Group)]
        for group in groups:
            group._v_attrs.evil = bait(f"group-{group._v_name}")
            if cox_data:
                group._v_attrs.COX_DATA = bait(f"cox-{group._v_name}")
            table = group._f_get_child("table")
            table.attrs.evil = bait(f"table-{group._v_name}")
        h5.root._v_attrs.evil = bait("root")
    return markers


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m unitrack ARGS`` in a fresh process (so a crafted file cannot touch the test's)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.fixture
def cox_out(tmp_path: Path) -> Path:
    """A copy of the folder of stores written by cox 0.2 itself (``tests/data/cox/make_stores.py``)."""
    out = tmp_path / "out"
    shutil.copytree(DATA / "cox" / "out", out)
    return out


def _postgres_uri():
    # tests/persistence's session server, shared by this package's tests too
    from tests.persistence.conftest import postgres_uri

    return postgres_uri


postgres_uri = _postgres_uri()
