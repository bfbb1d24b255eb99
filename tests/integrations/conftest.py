"""Framework integration tests: Keras on the torch backend (no TensorFlow), nothing from a model hub."""

from __future__ import annotations

import os

import pytest

# Before anything imports keras: the tests use the PyTorch backend, the only one the test extra installs.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_environment_backend(monkeypatch):
    """Trials go where each test says, never to a backend or project from the environment."""
    for name in (
        "UNITRACK_URI",
        "UNITRACK_PROJECT",
        "UNITRACK_GROUP",
        "UNITRACK_TRIAL_ID",
        "UNITRACK_SYSTEM_METRICS",
    ):
        monkeypatch.delenv(name, raising=False)
