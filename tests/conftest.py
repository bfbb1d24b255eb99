"""Shared test helpers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed: on a loaded 2-core machine a slow example is not a failure.
settings.register_profile("unitrack", deadline=None)
settings.load_profile("unitrack")


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _restore_backend_registry():
    """Tests may register schemes; put the registry back as it was afterwards."""
    from unitrack.persistence import registry

    known, aliases = dict(registry._KNOWN), dict(registry._ALIASES)
    yield
    registry._KNOWN.clear()
    registry._KNOWN.update(known)
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)


def pytest_configure(config):
    """A private UNITRACK_HOME for the whole session, set before test modules build their environments."""
    import os
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="unitrack-home-")
    os.environ["UNITRACK_HOME"] = home
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


@pytest.fixture(autouse=True)
def _private_unitrack_home(tmp_path_factory, monkeypatch):
    """Roots registered by a test are remembered in a home of its own, never in the user's ~/.unitrack."""
    monkeypatch.setenv("UNITRACK_HOME", str(tmp_path_factory.mktemp("unitrack-home")))


@pytest.fixture(autouse=True)
def _no_signal_handler_leaks():
    """A test that leaves SIGTERM/SIGUSR1 handled (a run started and never finished) fails here, by name.

    A started TrialLogger or a ``with ex:`` holds the process's SIGTERM handler until its run finishes; one left
    behind makes later tests that check "nobody else handles SIGTERM" fail far from the cause.
    """
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    leaked = {s: h for s, h in ((s, signal.getsignal(s)) for s in before) if h != before[s]}
    for s in leaked:
        signal.signal(s, before[s])
    if leaked:
        names = ", ".join(f"{signal.Signals(s).name} -> {h!r}" for s, h in leaked.items())
        pytest.fail(f"the test left signal handlers installed ({names}); finish the runs it started")
