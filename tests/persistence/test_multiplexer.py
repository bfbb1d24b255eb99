"""ProtocolMultiplexer's failure policy (STYLE.md §2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from unitrack.errors import ConfigError, StorageError
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.multiplexer import ProtocolMultiplexer
from unitrack.persistence.structure import Trial


def test_a_backend_failing_later_is_set_aside_once_and_named_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FileProtocol(f"file://{tmp_path}/db.json", strict=False)
    steady = EphemeralProtocol(strict=False)
    both = ProtocolMultiplexer(flaky, steady)
    trial = both.new_trial(Trial(name="run"))
    assert trial is not None
    flaky.close()  # from now on every call to it fails with StorageError
    with caplog.at_level(logging.WARNING, logger="unitrack.persistence.multiplexer"):
        for step in range(3):
            both.log_trial_metrics(trial, step=step, loss=1.0)
    assert steady.fetch_trials(None)[0].metrics["loss"].values == (1.0, 1.0, 1.0)
    assert len([r for r in caplog.records if "set aside" in r.message]) == 1
    assert both.active == [steady]
    assert both.fetch_trials(None)[0].uid == trial.uid  # reads come from the last backend
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unitrack.persistence.multiplexer"):
        both.close()
    assert any("was set aside during this run" in r.message for r in caplog.records)


def test_a_mirror_failing_at_trial_start_is_logged_and_skipped_as_track_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = FileProtocol(f"file://{tmp_path}/db.json", strict=False)
    broken.close()
    last = EphemeralProtocol(strict=False)
    both = ProtocolMultiplexer(broken, last)
    with caplog.at_level(logging.WARNING, logger="unitrack.persistence.multiplexer"):
        trial = both.new_trial(Trial(name="run"))
        assert trial is not None
        both.log_trial_metrics(trial, step=0, loss=1.0)
    assert last.fetch_trials(None)[0].metrics["loss"].values == (1.0,)
    assert both.active == [last]
    assert len([r for r in caplog.records if "set aside" in r.message]) == 1


def test_the_last_backend_answers_reads_and_writes(tmp_path: Path) -> None:
    first, last = EphemeralProtocol(strict=False), EphemeralProtocol(strict=False)
    only_in_last = last.new_trial(Trial(name="only-in-last"))
    assert only_in_last is not None
    both = ProtocolMultiplexer(first, last)
    assert [t.name for t in both.fetch_trials(None)] == ["only-in-last"]
    # the last backend's result is returned: it already holds this trial, so the insert answers None there
    assert both.new_trial(Trial(name="only-in-last")) is None
    assert [t.name for t in first.fetch_trials(None)] == ["only-in-last"]  # the mirror got it too


def test_the_last_backend_failing_at_trial_start_stops_the_run(tmp_path: Path) -> None:
    broken = FileProtocol(f"file://{tmp_path}/db.json", strict=False)
    broken.close()
    both = ProtocolMultiplexer(EphemeralProtocol(strict=False), broken)
    with pytest.raises(StorageError, match="is closed"):
        both.new_trial(Trial(name="run"))


def test_when_the_last_backend_fails_the_error_reaches_the_caller(tmp_path: Path) -> None:
    only = FileProtocol(f"file://{tmp_path}/db.json", strict=False)
    mux = ProtocolMultiplexer(only)
    trial = mux.new_trial(Trial(name="run"))
    assert trial is not None
    only.close()
    with pytest.raises(StorageError):
        mux.log_trial_metrics(trial, step=0, loss=1.0)


def test_needs_protocols() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        ProtocolMultiplexer()
    with pytest.raises(ConfigError, match="takes Protocols"):
        ProtocolMultiplexer("file://x.json")  # type: ignore[arg-type]
