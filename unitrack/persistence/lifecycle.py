"""One status vocabulary for every listing: xmen's words, each mapped to track's statuses one to one.

A trial stores a track status (:class:`~unitrack.persistence.structure.Status`, or a
:class:`~unitrack.persistence.structure.CustomStatus` for xmen's states track has no name for). Every listing
(``unitrack view``, ``unitrack.runs()``, the web view, ``GlobalExperimentManager``) shows the same lowercase
*word* for it, and every input that names a status (``--status``, filters, ``reset --status``) accepts the word
or track's name, in any case:

============  ==============================================  ========================================
word          stored as                                       also accepted as input
============  ==============================================  ========================================
registered    ``CustomStatus('registered', 1)``               ``created``, ``CreatedGroup``, ``new``
running       ``Status.Running``                              ``RunningGroup``
finished      ``Status.Completed``                            ``completed``, ``FinishedGroup``
error         ``Status.Exception``                            ``exception``, ``ErrorGroup``
stopped       ``Status.Interrupted``                          ``interrupted``
broken        ``Status.Broken``
suspended     ``Status.Suspended``
timeout       ``CustomStatus('timeout', 204)``
requeue       ``CustomStatus('requeue', 205)``
deleted       ``CustomStatus('deleted', 303)``
============  ==============================================  ========================================

Two more words are never stored; a reader derives them: ``lost`` (a ``running`` trial whose process is gone)
and ``damaged`` (a run whose files cannot be read). A custom status outside the table shows as its own name,
lowercased.

Example:
    >>> from unitrack.persistence.structure import Status
    >>> status_word(Status.Completed), parse_status("Exception"), parse_status("finished")
    ('finished', <Status.Exception: 202>, <Status.Completed: 302>)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from unitrack.errors import ConfigError
from unitrack.persistence.structure import CustomStatus, Status, StatusLike

__all__ = [
    "DAMAGED",
    "DERIVED_WORDS",
    "STATUS_WORDS",
    "parse_status",
    "parse_status_words",
    "status_word",
    "stored_status",
]

#: The stored statuses by word, in lifecycle order.
_STORED: dict[str, StatusLike] = {
    "registered": CustomStatus("registered", 1),
    "running": Status.Running,
    "finished": Status.Completed,
    "error": Status.Exception,
    "stopped": Status.Interrupted,
    "broken": Status.Broken,
    "suspended": Status.Suspended,
    "timeout": CustomStatus("timeout", 204),
    "requeue": CustomStatus("requeue", 205),
    "deleted": CustomStatus("deleted", 303),
}

#: Words a reader derives and never stores.
DERIVED_WORDS: tuple[str, ...] = ("lost", "damaged")

#: The status a backend gives a run it lists but cannot read (never stored; the trial's
#: ``metadata["damage"]`` says which file and why).
DAMAGED = CustomStatus("damaged", -1)

#: Every word a listing can show, in lifecycle order.
STATUS_WORDS: tuple[str, ...] = (*_STORED, *DERIVED_WORDS)

# track's group values and the names users type for them.
_BY_VALUE: dict[int, str] = {
    Status.CreatedGroup.value: "registered",
    Status.RunningGroup.value: "running",
    Status.ErrorGroup.value: "error",
    Status.FinishedGroup.value: "finished",
}
_ALIASES: dict[str, str] = {
    "created": "registered",
    "createdgroup": "registered",
    "new": "registered",
    "runninggroup": "running",
    "completed": "finished",
    "finishedgroup": "finished",
    "exception": "error",
    "errorgroup": "error",
    "interrupted": "stopped",
}


def status_word(value: StatusLike) -> str:
    """The word every listing shows for a stored status.

    Example:
        >>> from unitrack.persistence.structure import CustomStatus, Status
        >>> [status_word(s) for s in (Status.CreatedGroup, Status.Interrupted, CustomStatus("timeout", 204))]
        ['registered', 'stopped', 'timeout']
    """
    for word, stored in _STORED.items():
        if value == stored:
            return word
    if value.value in _BY_VALUE:
        return _BY_VALUE[value.value]
    return _ALIASES.get(value.name.lower(), value.name.lower())


def _word(text: str) -> str:
    """The canonical word for a word or track name, or raise naming the closest known words."""
    if not isinstance(text, str):
        raise ConfigError(f"A status is a word such as 'finished', not {text!r}.")
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _STORED or key in DERIVED_WORDS:
        return key
    known = sorted({*STATUS_WORDS, *_ALIASES})
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"Unknown status {text!r}.{hint} Known: {', '.join(STATUS_WORDS)}.")


def parse_status(text: str) -> StatusLike:
    """The stored status a word or track name stands for.

    Raises:
        ConfigError: for an unknown word (the message names the closest known ones), or for ``lost`` and
            ``damaged``, which are derived by readers and cannot be stored.
    """
    word = _word(text)
    if word in DERIVED_WORDS:
        raise ConfigError(
            f"Status {text!r} is derived when runs are read and cannot be stored; "
            f"set one of: {', '.join(_STORED)}."
        )
    return _STORED[word]


def stored_status(word: str) -> StatusLike:
    """The stored status for one of the words in :data:`STATUS_WORDS` that is stored (no alias lookup)."""
    return _STORED[word]


def parse_status_words(texts: str | Iterable[str]) -> list[str]:
    """Canonical words for user input such as ``"stopped,lost,Exception"`` (derived words allowed).

    Example:
        >>> parse_status_words("stopped, lost,Exception")
        ['stopped', 'lost', 'error']

    Raises:
        ConfigError: naming an unknown word and the closest known ones.
    """
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    words: list[str] = []
    for item in items:
        for part in item.split(","):
            if part.strip():
                word = _word(part)
                if word not in words:
                    words.append(word)
    return words
