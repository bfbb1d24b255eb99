"""Fixtures for experiment tests: no backend or project leaks in from the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

WORKTREE = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("UNITRACK_URI", raising=False)
    monkeypatch.delenv("UNITRACK_PROJECT", raising=False)


@pytest.fixture
def subprocess_env():
    """Environment for a python subprocess that imports unitrack from this worktree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(WORKTREE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def python():
    return sys.executable
