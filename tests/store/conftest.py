from __future__ import annotations

import os

import pytest


def snapshot(folder) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime, to prove nothing was touched."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return str(folder)
