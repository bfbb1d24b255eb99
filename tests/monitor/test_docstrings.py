import doctest
import importlib

import pytest

from .conftest import fixed_clock  # noqa: F401 - keeps the test package importable in isolation

MODULES = [
    "unitrack.monitor.spec",
    "unitrack.monitor.monitor",
    "unitrack.monitor.grid",
    "unitrack.monitor.checkpoint",
    "unitrack.monitor.hooks.base",
    "unitrack.monitor.hooks.logger",
    "unitrack.monitor.hooks.messenger",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
