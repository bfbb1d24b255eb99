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

Three more words are never stored; a reader derives them: ``lost`` (a ``running`` trial whose process is gone),
``damaged`` (a run whose files cannot be read) and ``unknown`` (a run whose state was never recorded: a folder of
stores written by cox, which records tables but no status; nothing says whether it finished, failed or is still
writing). A custom status outside the table shows as its own name, lowercased.

**Liveness.** A process running a trial records, when the run starts, its host, pid and the pid's start time
in ``metadata["process"]``, then beats: ``metadata["heartbeat"]`` (epoch seconds, track's key) is refreshed
every ``UNITRACK_HEARTBEAT_S`` seconds (default 30) by a daemon thread (:class:`HeartbeatThread`), one small write
per beat and none per step. :func:`run_status` turns a stored ``running`` into ``lost`` when that process is
gone: on the host that ran it, when the pid is dead or now belongs to another process (its start time differs);
from any other host, when no beat arrived for ``UNITRACK_HEARTBEAT_TIMEOUT_S`` seconds (default ten beats, at
least 60 s). A running trial with no process record (written by an older version, or straight through a
Protocol) stays ``running``: nothing says it is gone.

Example:
    >>> from unitrack.persistence.structure import Status
    >>> status_word(Status.Completed), parse_status("Exception"), parse_status("finished")
    ('finished', <Status.Exception: 202>, <Status.Completed: 302>)
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from unitrack.errors import ConfigError
from unitrack.persistence.structure import CustomStatus, Status, StatusLike, Trial

__all__ = [
    "DAMAGED",
    "DERIVED_WORDS",
    "UNKNOWN",
    "HEARTBEAT_KEY",
    "PROCESS_KEY",
    "STATUS_WORDS",
    "Heartbeat",
    "HeartbeatThread",
    "Terminated",
    "heartbeat_interval_s",
    "heartbeat_timeout_s",
    "is_lost",
    "parse_status",
    "parse_status_words",
    "process_record",
    "read_heartbeat",
    "run_status",
    "status_word",
    "stored_status",
]

logger = logging.getLogger(__name__)

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
DERIVED_WORDS: tuple[str, ...] = ("lost", "damaged", "unknown")

#: The word for a run whose state was never recorded (a plain cox store: tables, no status).
UNKNOWN = "unknown"

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


# ---------------------------------------------------------------------------------------------- liveness
class Terminated(KeyboardInterrupt):
    """Raised in the main thread by a run's SIGTERM handler, so the run unwinds and records ``stopped``
    (track's ``Interrupted``) before the process ends as the signal would have ended it."""

    #: The signal that was received.
    signum: int = 15


#: Trial metadata key of the last beat (epoch seconds; track's key, so ``metadata.heartbeat`` queries work).
HEARTBEAT_KEY = "heartbeat"
#: Trial metadata key of the process running the trial: ``{"host", "pid", "started", "interval_s"}``.
PROCESS_KEY = "process"
#: Environment variables setting the beat interval and the silence after which another host's run is lost.
INTERVAL_ENV, TIMEOUT_ENV = "UNITRACK_HEARTBEAT_S", "UNITRACK_HEARTBEAT_TIMEOUT_S"
DEFAULT_INTERVAL_S = 30.0
#: A pid whose start time differs from the recorded one by more than this is another process (the clock
#: behind both readings can be adjusted in between, so exact equality is not required).
_START_TOLERANCE_S = 2.0


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"${name}={text!r} is not a number of seconds > 0; unset it or set e.g. 30.")
    return value


def heartbeat_interval_s() -> float:
    """Seconds between beats of a running trial: ``$UNITRACK_HEARTBEAT_S``, else 30.

    Raises:
        ConfigError: when the variable is not a positive number.
    """
    return _env_seconds(INTERVAL_ENV, DEFAULT_INTERVAL_S)


def heartbeat_timeout_s(interval_s: float | None = None) -> float:
    """Seconds without a beat after which a run on another host is ``lost``: ``$UNITRACK_HEARTBEAT_TIMEOUT_S``,
    else ten times the run's beat interval, at least 60.

    Raises:
        ConfigError: when the variable is not a positive number.
    """
    interval = interval_s if interval_s is not None else heartbeat_interval_s()
    return _env_seconds(TIMEOUT_ENV, max(10.0 * interval, 60.0))


def _process_start_time(pid: int) -> float | None:
    """The start time (epoch seconds) of process ``pid`` on this host; None when there is no such process."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:  # ZombieProcess is a subclass: a zombie has exited
        return None
    except psutil.AccessDenied:  # it exists, but belongs to someone we may not inspect
        return math.nan


def process_record(interval_s: float | None = None) -> dict[str, Any]:
    """What a trial records about the process running it (``metadata["process"]``).

    Example:
        >>> record = process_record(30.0)
        >>> sorted(record), record["pid"] == os.getpid()
        (['host', 'interval_s', 'pid', 'started'], True)
    """
    started = _process_start_time(os.getpid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started if started is not None and math.isfinite(started) else None,
        "interval_s": float(interval_s if interval_s is not None else heartbeat_interval_s()),
    }


@dataclass(frozen=True)
class Heartbeat:
    """The process a running trial recorded and when it last beat.

    Attributes:
        host: the host name of the process.
        pid: its process id there.
        started: its start time (epoch seconds), which tells it from a later process given the same pid.
        last_seen: the last beat (epoch seconds), None when it never beat.
        interval_s: how often it beats, None when it does not.
    """

    host: str
    pid: int
    started: float | None = None
    last_seen: float | None = None
    interval_s: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_heartbeat(source: Trial | Mapping[str, Any] | None) -> Heartbeat | None:
    """The heartbeat a trial (or its metadata) holds; None when it recorded no process.

    Example:
        >>> read_heartbeat({"process": {"host": "n1", "pid": 7, "started": 1.0}, "heartbeat": 5.0})
        Heartbeat(host='n1', pid=7, started=1.0, last_seen=5.0, interval_s=None)
    """
    metadata = source.metadata if isinstance(source, Trial) else source
    if not isinstance(metadata, Mapping):
        return None
    record = metadata.get(PROCESS_KEY)
    if not isinstance(record, Mapping):
        return None
    host, pid = record.get("host"), record.get("pid")
    if not isinstance(host, str) or isinstance(pid, bool) or not isinstance(pid, int):
        return None
    return Heartbeat(
        host=host,
        pid=pid,
        started=_number(record.get("started")),
        last_seen=_number(metadata.get(HEARTBEAT_KEY)),
        interval_s=_number(record.get("interval_s")),
    )


def is_lost(
    beat: Heartbeat, now: float | None = None, *, timeout_s: float | None = None, host: str | None = None
) -> bool:
    """Whether the process ``beat`` describes is gone.

    Args:
        beat: the recorded process and its last beat.
        now: the time to judge at (epoch seconds; default now), for the timeout rule.
        timeout_s: silence after which a process on another host is gone (default :func:`heartbeat_timeout_s`).
        host: the host this judgement runs on (default this one).
    """
    if beat.host == (host if host is not None else socket.gethostname()):
        started = _process_start_time(beat.pid)
        if started is None:
            return True  # no such process
        if math.isnan(started) or beat.started is None:
            return False  # it exists and cannot be told apart from the one recorded
        return abs(started - beat.started) > _START_TOLERANCE_S  # the pid now names a later process
    if beat.interval_s is None:
        return False  # it never promised to beat: silence says nothing
    last = beat.last_seen
    if last is None:
        return False
    limit = timeout_s if timeout_s is not None else heartbeat_timeout_s(beat.interval_s)
    return (now if now is not None else time.time()) - last > limit


def run_status(
    trial: Trial, now: float | None = None, *, timeout_s: float | None = None, host: str | None = None
) -> str:
    """The word every listing shows for a trial: :func:`status_word` of its status, or ``lost`` for a
    ``running`` trial whose process is gone (see :func:`is_lost`).

    Example:
        >>> from unitrack.persistence.structure import Trial
        >>> gone = {"process": {"host": "elsewhere", "pid": 1, "interval_s": 30.0}, "heartbeat": 1000.0}
        >>> trial = Trial(name="t", status=Status.Running, metadata=gone)
        >>> run_status(trial, now=1010.0), run_status(trial, now=5000.0)
        ('running', 'lost')
    """
    word = status_word(trial.status)
    if word != "running":
        return word
    beat = read_heartbeat(trial)
    if beat is not None and is_lost(beat, now, timeout_s=timeout_s, host=host):
        return "lost"
    return word


class HeartbeatThread:
    """Call ``beat(now)`` every ``interval_s`` seconds from a daemon thread, until :meth:`stop`.

    A beat that fails is logged (once until one succeeds again) and the thread goes on: a backend that is
    briefly unreachable must not end the run's liveness, nor the run. The thread does not survive a fork, so a
    worker process forked by the run never beats for it.

    Args:
        beat: writes one beat (e.g. ``metadata["heartbeat"]`` of the trial) at the time given.
        interval_s: seconds between beats (default :func:`heartbeat_interval_s`).
        name: the thread's name.
    """

    def __init__(
        self,
        beat: Callable[[float], None],
        interval_s: float | None = None,
        *,
        name: str = "unitrack-heartbeat",
    ) -> None:
        self.interval_s = float(interval_s if interval_s is not None else heartbeat_interval_s())
        self._beat = beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._failing = False

    def start(self) -> HeartbeatThread:
        """Start beating (the first beat comes one interval from now: the caller records the start itself)."""
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat(time.time())
            except Exception:  # noqa: BLE001 - a beat must never end the thread: logged, retried next interval
                if not self._failing:
                    logger.warning("heartbeat failed; retrying every %.0f s", self.interval_s, exc_info=True)
                self._failing = True
            else:
                if self._failing:
                    logger.info("heartbeat restored")
                self._failing = False

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop beating; a beat being written is completed first (waiting at most ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
