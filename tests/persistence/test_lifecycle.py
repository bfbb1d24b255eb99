"""The one status vocabulary: words, track names and stored values map one to one."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from tests.conftest import wait_until
from unitrack.errors import ConfigError
from unitrack.persistence.lifecycle import (
    DAMAGED,
    DERIVED_WORDS,
    STATUS_WORDS,
    Heartbeat,
    HeartbeatThread,
    heartbeat_interval_s,
    is_lost,
    parse_status,
    parse_status_words,
    process_record,
    read_heartbeat,
    run_status,
    status_word,
)
from unitrack.persistence.structure import CustomStatus, Status, Trial


@pytest.mark.parametrize("word", [w for w in STATUS_WORDS if w not in DERIVED_WORDS])
def test_every_stored_word_round_trips(word):
    assert status_word(parse_status(word)) == word


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Completed", Status.Completed),
        ("finished", Status.Completed),
        ("Exception", Status.Exception),
        ("ERROR", Status.Exception),
        ("Interrupted", Status.Interrupted),
        ("stopped", Status.Interrupted),
        ("registered", CustomStatus("registered", 1)),
        ("timeout", CustomStatus("timeout", 204)),
    ],
)
def test_track_names_and_xmen_words_are_both_accepted(text, expected):
    assert parse_status(text) == expected


def test_track_groups_and_unknown_customs_show_a_word():
    assert status_word(Status.CreatedGroup) == "registered"
    assert status_word(Status.FinishedGroup) == "finished"
    assert status_word(CustomStatus("Paused", 42)) == "paused"


def test_unknown_word_names_the_closest_ones():
    with pytest.raises(ConfigError, match="Did you mean 'error'"):
        parse_status("eror")


@pytest.mark.parametrize("word", DERIVED_WORDS)
def test_derived_words_cannot_be_stored(word):
    with pytest.raises(ConfigError, match="derived"):
        parse_status(word)


def test_word_lists_parse_commas_and_dedupe():
    assert parse_status_words(["stopped,lost", "Interrupted", "exception"]) == ["stopped", "lost", "error"]
    with pytest.raises(ConfigError, match="Unknown status 'nope'"):
        parse_status_words("finished,nope")


def test_a_damaged_run_shows_as_damaged():
    from unitrack.persistence.lifecycle import DAMAGED

    assert status_word(DAMAGED) == "damaged"


# ------------------------------------------------------------------------------------------------ liveness
def me(**changes: object) -> Heartbeat:
    record = process_record(30.0)
    beat = Heartbeat(record["host"], record["pid"], record["started"], time.time(), 30.0)
    return replace(beat, **changes)


def test_this_process_is_alive_and_a_dead_or_reused_pid_is_lost() -> None:
    assert not is_lost(me())
    assert is_lost(me(pid=_dead_pid()))
    assert is_lost(me(started=me().started - 3600))  # the pid now names a later process
    assert not is_lost(me(started=None))  # no start time recorded: the pid alone decides


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_another_hosts_run_is_lost_only_after_the_timeout_without_a_beat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    beat = Heartbeat("elsewhere", 1, 5.0, last_seen=1000.0, interval_s=2.0)
    assert not is_lost(beat, now=1010.0)  # default timeout: ten beats, at least 60 s
    assert is_lost(beat, now=1061.0)
    monkeypatch.setenv("UNITRACK_HEARTBEAT_TIMEOUT_S", "5")
    assert is_lost(beat, now=1006.0) and not is_lost(beat, now=1004.0)
    assert not is_lost(replace(beat, interval_s=None), now=10**9)  # it never promised to beat
    assert not is_lost(replace(beat, last_seen=None), now=10**9)


@pytest.mark.parametrize(
    "metadata",
    [{}, {"process": "node1:7"}, {"process": {"host": "n", "pid": "7"}}, {"process": {"host": 3, "pid": 7}}],
)
def test_a_missing_or_malformed_process_record_reads_as_none_and_stays_running(metadata: dict) -> None:
    assert read_heartbeat(metadata) is None
    assert run_status(Trial(name="t", status=Status.Running, metadata=metadata), now=10**12) == "running"


def test_run_status_keeps_every_other_word() -> None:
    gone = {"process": {"host": "elsewhere", "pid": 1, "interval_s": 1.0}, "heartbeat": 0.0}
    assert run_status(Trial(name="t", status=Status.Completed, metadata=gone)) == "finished"
    assert run_status(Trial(name="t", status=DAMAGED)) == "damaged"
    assert run_status(Trial(name="t", status=Status.Running, metadata=gone)) == "lost"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_interval_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UNITRACK_HEARTBEAT_S", value)
    with pytest.raises(ConfigError, match="UNITRACK_HEARTBEAT_S"):
        heartbeat_interval_s()


def test_the_heartbeat_thread_beats_and_outlives_a_failing_beat(caplog: pytest.LogCaptureFixture) -> None:
    beats: list[float] = []

    def beat(at: float) -> None:
        beats.append(at)
        if len(beats) in (2, 3):
            raise OSError("backend unreachable")

    caplog.set_level(logging.INFO, logger="unitrack.persistence.lifecycle")
    thread = HeartbeatThread(beat, 0.01).start()
    try:
        wait_until(lambda: len(beats) >= 6, what="six beats")
    finally:
        thread.stop()
    assert beats == sorted(beats)
    assert caplog.text.count("heartbeat failed") == 1 and caplog.text.count("heartbeat restored") == 1
    assert not thread._thread.is_alive()  # stop() returned after the last beat: none can follow
