"""The docstring examples of the store layer run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "unitrack.store",
    "unitrack.store.names",
    "unitrack.store.schema",
    "unitrack.store.serialization",
    "unitrack.store.store",
    "unitrack.store.table",
    "unitrack.store.readers",
    "unitrack.store.params",
    "unitrack.store.fs",
    "unitrack.store.tensorboard_view",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_import_loads_no_heavy_packages():
    import subprocess
    import sys

    code = (
        "import sys, unitrack.store, unitrack.store.readers, unitrack.store.utils;"
        "print([m for m in ('pandas', 'torch', 'tensorboardX') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
