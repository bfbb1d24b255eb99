"""The one status vocabulary: words, track names and stored values map one to one."""

from __future__ import annotations

import pytest

from unitrack.errors import ConfigError
from unitrack.persistence.lifecycle import (
    DERIVED_WORDS,
    STATUS_WORDS,
    parse_status,
    parse_status_words,
    status_word,
)
from unitrack.persistence.structure import CustomStatus, Status


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
