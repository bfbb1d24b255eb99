"""``Experiment``: parameters from ``# @p`` comments, a folder with ``params.yml``, and a trial in a backend.

An experiment is defined by its parameters (class attributes tagged ``# @p``) and its ``run`` method::

    class AnExperiment(Experiment):
        '''Say hello.'''
        a: str = 'Hello'   # @p a parameter
        b: str = 'World!'  # @p another parameter

        def run(self):
            print(f'{self.a} {self.b}')

    if __name__ == '__main__':
        AnExperiment().main()   # python an_experiment.py --update "{a: Bye}" --execute runs/ex1

Registering (``register(root, name)`` or ``Experiment(root, name)``) creates ``{root}/{name}/params.yml`` and a
trial in the backend (:mod:`unitrack.experiment.link`); running it (``with ex:`` or ``ex()``) records the status
``running`` then ``finished``, ``error`` (traceback kept in the trial's errors) or ``stopped`` (Ctrl-C or
SIGTERM); SIGUSR1 (Slurm's warning before a time limit) ends it with ``timeout``, or ``requeue`` when its job
script asked for requeueing and Slurm accepted (:mod:`unitrack.experiment.slurm`). Signals another handler
already claims are left to it (see :meth:`Experiment.catch_sigterm`).
``message()`` is durable in the backend when it returns; ``params.yml`` is refreshed at most about once a second
while messages arrive, and on every status change.

Example:
    >>> class Exp(Experiment):
    ...     pass
    >>> ex = Exp()
    >>> ex.status
    'default'
    >>> ex.register('runs', 'ex1', backend='ephemeral://').status
    'registered'
    >>> ex.message({'acc': 0.5}); ex.messages
    {'acc': 0.5}
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import errno
import logging
import os
import re
import shlex
import signal
import socket
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from types import FrameType, TracebackType
from typing import IO, Any, ClassVar, Literal

from ruamel.yaml.comments import CommentedMap

from unitrack.errors import (
    AlreadyExistsError,
    ConfigError,
    ExperimentStateError,
    IncompatibleYmlException,
    InvalidNameError,
    InvalidParameterError,
    StorageError,
    UnitrackError,
)
from unitrack.experiment.link import TrialLink, holds_run
from unitrack.experiment.meta import ENVIRON_ALLOW_LIST, _user, get_meta, get_version, version_string
from unitrack.experiment.paramfile import (
    atomic_write_text,
    commented_to_py,
    dic_from_yml,
    dic_to_yaml,
    load_param,
    now_iso,
    parse_user_yaml,
    set_keys,
    to_iso,
    to_yaml_value,
)
from unitrack.experiment.params import Param, TypedMeta, coerce
from unitrack.persistence.lifecycle import Terminated
from unitrack.persistence.structure import check_name
from unitrack.persistence.system import start_trial_sampler, system_metrics_interval

__all__ = ["STATUSES", "Experiment", "Terminated", "TimedOut"]

logger = logging.getLogger(__name__)

#: Every status an experiment can have (xmen's strings).
STATUSES = (
    "default",
    "registered",
    "running",
    "finished",
    "error",
    "stopped",
    "timeout",
    "detached",
    "requeue",
    "deleted",
    "debug",
)
_EDITABLE = ("default", "detached")
_TIMESTAMPS = ("created", "start", "stopped", "last", "registered")
_SPECIAL_HELP = {
    "_host": "The host the experiment was registered on",
    "_messages": "Messages left by the experiment (the kept values)",
    "_meta": "The machine the experiment last ran on (never the environment)",
    "_notes": "Notes attached to the experiment",
    "_purpose": "The purpose of the experiment",
    "_root": "The directory of the experiment",
    "_status": "One of " + ", ".join(STATUSES),
    "_timestamps": "Times the experiment was created, registered, started, stopped and last saved",
    "_user": "The user who registered the experiment",
    "_version": "The code the experiment runs (module, class, path, git)",
}
#: Seconds between params.yml refreshes caused by messages (status changes always write).
SAVE_INTERVAL_S = 1.0

#: Serializes params.yml saves between the main thread and the flusher thread.
_SAVE_LOCK = threading.RLock()


class _Flusher:
    """Save, about :data:`SAVE_INTERVAL_S` after their last save, the params.yml of experiments whose messages
    arrived since, from one daemon thread; and all of them at interpreter exit.

    ``message()`` is durable in the backend when it returns, but params.yml is rewritten at most about once a
    second: without this, the last messages of a burst reached the file only at the next status change, which
    an experiment messaged outside ``with ex:`` (xmen's messenger examples) never has.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, Experiment] = {}
        self._thread: threading.Thread | None = None
        atexit.register(self.flush_all)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def due(self, ex: Experiment) -> None:
        with self._cond:
            self._due[id(ex)] = ex
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="unitrack-params-flush", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                now = time.monotonic()
                ready = [
                    ex for ex in self._due.values() if now - ex.__dict__["_last_save"] >= SAVE_INTERVAL_S
                ]
                if not ready:
                    first = min(ex.__dict__["_last_save"] for ex in self._due.values())
                    self._cond.wait(max(first + SAVE_INTERVAL_S - now, 0.01))
                    continue
                for ex in ready:
                    self._due.pop(id(ex), None)
            for ex in ready:
                self._save(ex)

    @staticmethod
    def _save(ex: Experiment) -> None:
        try:
            ex._save_if_unsaved()
        except Exception:  # noqa: BLE001 - a failed refresh must not end the thread: the backend has the messages
            logger.warning("could not refresh %s/params.yml", ex.root, exc_info=True)

    def flush_all(self) -> None:
        with self._cond:
            pending, self._due = list(self._due.values()), {}
        for ex in pending:
            self._save(ex)

    def _forget(self) -> None:
        """In a forked child: the parent's experiments and thread are not this process's."""
        global _SAVE_LOCK
        _SAVE_LOCK = threading.RLock()
        self._cond = threading.Condition()
        self._due = {}
        self._thread = None


_FLUSHER: _Flusher | None = None


def _flusher() -> _Flusher:
    """The flusher, made on first use (nothing runs at import)."""
    global _FLUSHER
    if _FLUSHER is None:
        _FLUSHER = _Flusher()
    return _FLUSHER


class TimedOut(Terminated):
    """Raised in the main thread by the SIGUSR1 handler (Slurm's ``--signal=B:USR1@N`` warning before the time
    limit); the experiment ends with status ``timeout``, or ``requeue`` when its job was requeued."""


#: The signals :meth:`Experiment.catch_sigterm` handles (SIGUSR1 does not exist on Windows).
_CAUGHT = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


def _read_only(name: str, doc: str) -> property:
    def getter(self: Experiment) -> Any:
        return getattr(self, f"_get_{name}")()

    def setter(self: Experiment, value: Any) -> None:
        raise AttributeError(f"Property {name} cannot be set.")

    return property(getter, setter, doc=doc)


_MESSAGE_TYPES = frozenset({str, int, float})


def _convert_message(value: Any) -> Any:
    """A message as xmen stores it: str, int and float as they are; anything else float if it can be, else str.

    Subclasses are converted too (numpy's float64 and str_, bool, IntEnum), so params.yml and the backend only
    ever see plain values.
    """
    if type(value) in _MESSAGE_TYPES:
        return value
    if isinstance(value, str):
        return str(value)
    detach = getattr(value, "detach", None)  # a tensor that requires grad: convert its value, no warning
    if callable(detach):
        value = detach()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _wins(stored: Mapping[str, Any], key: str, value: Any, keep: str) -> bool:
    if key not in stored or keep == "latest":
        return True
    try:
        return bool(value < stored[key]) if keep == "min" else bool(value > stored[key])
    except TypeError:  # e.g. a str compared with a float: the newer value is kept
        return True


class _Tee:
    """Write to a stream and to a file (``stdout_to_txt``)."""

    def __init__(self, stream: IO[str], file: IO[str]) -> None:
        self.stream = stream
        self.file = file

    def write(self, text: str) -> int:
        self.file.write(text)
        self.file.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class ExperimentMeta(TypedMeta):
    """Finish construction after the subclass ``__init__``: apply overrides, then register when asked.

    A subclass ``__init__`` that sets ``self.x = 3  # @p`` after ``super().__init__()`` would otherwise overwrite
    the overrides given to the constructor (and fail once registered).
    """

    def __init__(cls, name: str, bases: tuple[type, ...], attr_dict: dict[str, Any]) -> None:
        super().__init__(name, bases, attr_dict)
        base = next(
            (b for b in cls.__mro__[1:] if b.__name__ == "Experiment" and b.__module__ == __name__), None
        )
        if base is None:
            return  # Experiment itself
        clashes = sorted(p for p in cls._params if p in vars(base))
        if clashes:
            raise InvalidParameterError(
                clashes[0],
                f"of {name} has the name of Experiment.{clashes[0]}, which the experiment needs (its "
                f"{'method' if callable(getattr(base, clashes[0])) else 'property'}); rename the parameter.",
            )

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        finish = getattr(obj, "_finish_init", None)
        if finish is not None:
            finish()
        return obj


class Experiment(metaclass=ExperimentMeta):
    """Base class of experiments: ``# @p`` parameters and a ``run`` method.

    Args:
        root: when given, register the experiment to ``{root}/{name}`` (see :meth:`register`).
        name: the experiment folder's name inside ``root`` (None: ``root`` is the experiment folder).
        purpose: why the experiment is run.
        copy_params: deep-copy mutable defaults to the instance, so instances never share a list or dict.
        backend: the backend URI (default ``$UNITRACK_URI``, then the embedded default at ``root``).
        system_metrics: while the experiment runs, sample CPU, memory, disk, network and GPU use into its trial's
            ``sys/...`` series every so many seconds (``True``: 10 s; None: ``$UNITRACK_SYSTEM_METRICS``, else
            never; see :mod:`unitrack.persistence.system`).
        **kwargs: parameter overrides (checked against the annotations).

    Raises:
        InvalidParameterError: for an unknown parameter or a value of the wrong type.
        InvalidNameError: for a name with ``/``, ``..`` or control characters.
    """

    #: The base class declares no parameters, so its (long) source is not read for ``# @p`` comments.
    __unitrack_params__: ClassVar[list[Param]] = []

    _params: ClassVar[dict[str, Param]]
    _root: str | None
    _status: str
    _messages: dict[str, Any]
    _notes: list[str]
    _timestamps: dict[str, Any]
    _meta: dict[str, Any] | None
    _link: TrialLink | None
    _purpose: str
    _version: dict[str, Any] | None
    _user: str
    _host: str
    _is_debug: bool

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        name: str | None = None,
        purpose: str = "",
        copy_params: bool = True,
        *,
        backend: str | None = None,
        system_metrics: float | bool | None = None,
        **kwargs: Any,
    ) -> None:
        state = self.__dict__
        state.update(
            _system_metrics=system_metrics_interval(system_metrics),
            _sampler=None,
            _root=None,
            _status="default",
            _purpose=purpose or "",
            _messages={},
            _notes=[],
            _timestamps={},
            _version=None,
            _meta=None,
            _user=_user(),
            _host=socket.gethostname(),
            _link=None,
            _doc=None,
            _last_save=0.0,
            _unsaved=False,
            _is_debug=False,
            _catch_sigterm=None,
            _previous_handlers={},
            _auto_handlers=(),
            _handler_pid=0,
            _in_message=False,
            _term_pending=0,
            _tee=None,
            _pending=(root, name, purpose, dict(kwargs), backend),
        )
        if copy_params:
            cls = type(self)
            for key, param in self._params.items():
                if not param.in_init and hasattr(cls, key):
                    state[key] = copy.deepcopy(getattr(cls, key))

    def _finish_init(self) -> None:
        pending = self.__dict__.pop("_pending", None)
        if pending is None:
            return
        root, name, purpose, overrides, backend = pending
        if overrides:
            self.update(overrides)
        if root is not None:
            self.register(root, name, purpose=purpose, backend=backend)
        elif name is not None:
            raise ConfigError(f"Experiment(name={name!r}) needs a root to register into; pass root too.")

    # --------------------------------------------------------------------------------------- properties
    start = _read_only("start", "The time the experiment last started running.")
    registered = _read_only("registered", "The time the experiment was last registered.")
    stopped = _read_only("stopped", "The time the experiment was last stopped.")
    last = _read_only("last", "The time the experiment state was last saved.")
    created = _read_only("created", "The time the experiment was first registered (or its defaults written).")
    notes = _read_only("notes", "The notes attached to the experiment (a list), or None.")
    root = _read_only("root", "The experiment's directory ``{root}/{name}`` (None until registered).")
    directory = _read_only("directory", "The experiment's directory (the same as root).")
    status = _read_only("status", "One of " + ", ".join(STATUSES) + ".")
    purpose = _read_only("purpose", "Why the experiment is run.")
    messages = _read_only("messages", "The kept messages, ``{subject: value}``.")
    version = _read_only("version", "The code the experiment runs: module, class, path and git information.")
    user = _read_only("user", "The user who created the experiment.")
    host = _read_only("host", "The host the experiment was created on.")
    is_debug = _read_only("is_debug", "True when run with ``--debug``.")
    trial_uid = _read_only(
        "trial_uid", "The uid of the experiment's trial in the backend (None until registered)."
    )
    backend = _read_only(
        "backend", "The backend ``Protocol`` the experiment writes to (None until registered)."
    )

    def _get_start(self) -> str | None:
        return self._timestamps.get("start")

    def _get_registered(self) -> str | None:
        return self._timestamps.get("registered")

    def _get_stopped(self) -> str | None:
        return self._timestamps.get("stopped")

    def _get_last(self) -> str | None:
        return self._timestamps.get("last")

    def _get_created(self) -> str | None:
        return self._timestamps.get("created")

    def _get_notes(self) -> list[str] | None:
        return list(self._notes) or None

    def _get_root(self) -> str | None:
        return self._root

    def _get_directory(self) -> str | None:
        return self._root

    def _get_status(self) -> str:
        return self._status

    def _get_purpose(self) -> str:
        return self._purpose

    def _get_messages(self) -> dict[str, Any]:
        return dict(self._messages)

    def _get_version(self) -> dict[str, Any] | None:
        return self._version

    def _get_user(self) -> str:
        return self._user

    def _get_host(self) -> str:
        return self._host

    def _get_is_debug(self) -> bool:
        return self._is_debug

    def _get_trial_uid(self) -> str | None:
        link = self.__dict__["_link"]
        return link.uid if link is not None else None

    def _get_backend(self) -> Any:
        link = self.__dict__["_link"]
        return link.protocol if link is not None else None

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self._params and self.__dict__.get("_status", "default") not in _EDITABLE:
            raise AttributeError('Parameters can only be changed when status = "default" or "detached"')
        super().__setattr__(key, value)

    # -------------------------------------------------------------------------------------- parameters
    def param_keys(self) -> list[str]:
        """The names of the parameters, in declaration order (bases first)."""
        return list(self._params)

    def params(self) -> dict[str, Any]:
        """The current parameter values."""
        return {k: getattr(self, k, None) for k in self._params}

    def get_param_helps(self) -> dict[str, str]:
        """Return the help of every parameter (inherited included) and of the private specials."""
        helps = {k: p.help for k, p in self._params.items()}
        helps.update(_SPECIAL_HELP)
        return helps

    def update(self, kwargs: Mapping[str, Any]) -> None:
        """Set parameters from a mapping (only while the status is ``default`` or ``detached``).

        Raises:
            ExperimentStateError: when the experiment is registered or running (a ValueError, as in xmen).
            InvalidParameterError: for an unknown name or a value of the wrong type (naming the expected type).
        """
        if self._status not in _EDITABLE:
            raise ExperimentStateError(
                f"The parameters of a {self._status} experiment cannot change (they are in its params.yml and its "
                "trial); make a new instance, update it, then register it."
            )
        checked = {}
        for key, value in kwargs.items():
            param = self._params.get(key)
            if param is None:
                known = ", ".join(self._params) or "none"
                raise InvalidParameterError(
                    str(key), f"is not a parameter of {type(self).__name__}; known: {known}."
                )
            checked[key] = coerce(param, value)
        for key, value in checked.items():
            setattr(self, key, value)

    def debug(self) -> Experiment:
        """Shrink the experiment for a quick check; called by ``--debug`` before registration. Override it."""
        return self

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The experiment itself. Override it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run().")

    # ------------------------------------------------------------------------------------------- notes
    def note(self, string: str, remove: bool = False) -> None:
        """Attach a note (``remove=True`` removes it); saved to params.yml and the trial's tags."""
        if remove:
            if string in self._notes:
                self._notes.remove(string)
        else:
            self._notes.append(string)
        if self._link is not None:
            self._link.update(tags={"notes": list(self._notes)})
        self._save()

    # ----------------------------------------------------------------------------------------- files
    def _state(self, *, defaults: bool = False) -> dict[str, Any]:
        """The specials and parameters as plain data, in xmen's layout (SEED_NOTES A10)."""
        if defaults:
            specials: dict[str, Any] = {
                "_created": self._timestamps.get("created"),
                "_host": self.host,
                "_meta": self._meta or {},
                "_user": self.user,
                "_version": self.__dict__["_version"] or {},
            }
        else:
            specials = {
                "_host": self.host,
                "_messages": dict(self._messages),
                "_meta": self._meta or {},
                "_notes": list(self._notes),
                "_purpose": self.purpose,
                "_root": self._root,
                "_status": self._status,
                "_timestamps": {k: self._timestamps.get(k) for k in _TIMESTAMPS},
                "_user": self.user,
                "_version": self.__dict__["_version"] or {},
            }
        for key in self._params:
            specials[key] = to_yaml_value(getattr(self, key, None))
        return specials

    def _new_doc(self, state: Mapping[str, Any]) -> CommentedMap:
        doc = CommentedMap()
        for key, value in state.items():
            doc[key] = value
            param = self._params.get(key)
            if param is not None:
                comment = f"{param.help} (default={param.default!s})" if param.help else ""
                if comment and "\n" not in comment:
                    doc.yaml_add_eol_comment(comment, key)
            elif key in _SPECIAL_HELP:
                doc.yaml_add_eol_comment(_SPECIAL_HELP[key], key)
        return doc

    def as_yaml(self, as_string: bool = True) -> str | CommentedMap:
        """The params.yml content (a string, or the CommentedMap)."""
        doc = self._new_doc(self._state())
        return dic_to_yaml(doc) if as_string else doc

    def _save(self, force: bool = True) -> None:
        """Rewrite params.yml atomically (when registered and not detached)."""
        with _SAVE_LOCK:  # the flusher thread saves too
            if self._root is None or self._status in ("default", "detached"):
                return
            self._timestamps["last"] = now_iso()
            state = self._state()
            doc = self.__dict__["_doc"]
            if doc is None:
                doc = self.__dict__["_doc"] = self._new_doc(state)
            else:
                set_keys(doc, state)
            atomic_write_text(os.path.join(self._root, "params.yml"), dic_to_yaml(doc), fsync=force)
            self.__dict__["_last_save"] = time.monotonic()
            self.__dict__["_unsaved"] = False

    def _save_if_unsaved(self) -> None:
        """Save params.yml when messages arrived since it was last written (the flusher's call)."""
        with _SAVE_LOCK:
            if self.__dict__.get("_unsaved"):
                self._save(force=False)

    def to_defaults(self, defaults_dir: str | os.PathLike[str]) -> None:
        """Write ``{defaults_dir}/defaults.yml`` (parameters with their help as comments, version and meta).

        Raises:
            ExperimentStateError: unless the status is ``default``.
        """
        if self._status != "default":
            raise ExperimentStateError(
                f"to_defaults writes the defaults of an unregistered experiment; this one is {self._status!r}. "
                "Call it on a new instance."
            )
        os.makedirs(defaults_dir, exist_ok=True)
        self.__dict__["_version"] = get_version(cls=type(self))
        self.__dict__["_meta"] = get_meta()
        self._timestamps.setdefault("created", now_iso())
        doc = self._new_doc(self._state(defaults=True))
        atomic_write_text(os.path.join(defaults_dir, "defaults.yml"), dic_to_yaml(doc))

    #: The seed's example spelling of :meth:`to_defaults` (``MyExperiment().to_yaml('/dir/to/defaults/root')``).
    to_yaml = to_defaults

    def from_yml(self, path: str | os.PathLike[str], copy: bool = False) -> Experiment:
        """Load parameters and state from a params.yml or defaults.yml file.

        Only parameters the experiment declares are taken. ``copy=True`` takes the parameters only. Without a
        ``_status`` in the file, the status is ``default`` for a defaults.yml and ``registered`` otherwise.
        xmen's older keys (``_name`` joined into ``_root``, ``_created``) and date format are read.

        An old xmen file's ``_meta.environ`` (every environment variable, secrets included) is cut down to
        :data:`~unitrack.experiment.meta.ENVIRON_ALLOW_LIST`, so it is never recorded again.

        Raises:
            IncompatibleYmlException: for a file that cannot be read, or a special key of the wrong shape.
            InvalidParameterError: for a value of the wrong type.
            ExperimentStateError: when the experiment is registered or running (its parameters cannot change).
        """
        if self._status not in (*_EDITABLE, "debug"):
            raise ExperimentStateError(
                f"from_yml changes the parameters, and this experiment is already {self._status!r}; load the file "
                "into a new instance."
            )
        folder, file = os.path.split(os.path.abspath(os.fspath(path)))
        doc = load_param(folder, file)
        values = {k: commented_to_py(v) for k, v in doc.items()}
        _check_special_keys(os.fspath(path), values)
        coerced = {
            key: coerce(self._params[key], value) for key, value in values.items() if key in self._params
        }
        self.__dict__.update(coerced)  # all or nothing: every value was checked first
        if copy:
            return self
        state = self.__dict__
        timestamps = {k: to_iso(v) for k, v in (values.get("_timestamps") or {}).items()}
        if "_created" in values and not timestamps.get("created"):
            timestamps["created"] = to_iso(values["_created"])
        root = values.get("_root")
        if root is not None and values.get("_name"):
            root = os.path.join(str(root), str(values["_name"]))
        state.update(
            _root=root,
            _messages=dict(values.get("_messages") or {}),
            _notes=list(values.get("_notes") or []),
            _purpose=str(values.get("_purpose") or ""),
            _timestamps=timestamps,
            _version=values.get("_version") or None,
            _meta=_without_environment(values.get("_meta")) or None,
        )
        for key in ("_user", "_host"):
            if values.get(key):
                state[key] = str(values[key])
        status = values.get("_status") or ("default" if file == "defaults.yml" else "registered")
        if status not in STATUSES:
            raise ConfigError(f"{path} has _status {status!r}; expected one of {', '.join(STATUSES)}.")
        state["_status"] = status
        if file != "defaults.yml":
            state["_doc"] = doc  # later saves keep this file's comments
        return self

    # ------------------------------------------------------------------------------------- registration
    def _new_link(
        self, backend: str | None, root: str, name: str, version: dict[str, Any], *, restart: bool
    ) -> TrialLink:
        """This experiment's trial in the backend (created, or the newest one of its name when ``restart``).

        A continued trial's kept messages come from the backend, the source of truth: params.yml may be older
        (it is refreshed about once a second, and not at all when the process was killed).
        """
        link = TrialLink(
            backend,
            root,
            name,
            parameters={k: to_yaml_value(v) for k, v in self.params().items()},
            version=version_string(version),
            description=self.purpose,
            metadata=self._trial_metadata(),
            tags={"notes": list(self._notes), "user": self.user, "host": self.host},
            status=self._status,
            restart=restart,
        )
        if link.messages is not None:
            self.__dict__["_messages"] = link.messages
        return link

    def register(
        self,
        root: str | os.PathLike[str],
        name: str | None = None,
        purpose: str = "",
        force: bool = True,
        same_names: int = 100,
        restart: bool = False,
        *,
        backend: str | None = None,
        **_: Any,
    ) -> Experiment:
        """Register the experiment to ``{root}/{name}``: status ``registered``, params.yml and a trial.

        ``name=None`` registers to ``root`` itself. When ``{root}/{name}/params.yml`` exists: ``restart=True``
        loads it (status back to registered, messages kept, the same trial continued); else ``force=True``
        tries ``{name}_1``, ``{name}_2``, … up to ``same_names``; else an error.

        A failed registration (a bad name, a folder that cannot be made, a backend that refuses) leaves the
        experiment as it was, and no empty folder behind.

        Raises:
            InvalidNameError: for a name with ``/``, ``..``, control characters or a leading ``.`` (hidden
                folders such as the backend's ``.unitrack`` are not experiments).
            AlreadyExistsError: (a ValueError) when the folder is taken and ``force`` is False, or all
                ``same_names`` alternatives are taken.
            ExperimentStateError: when the experiment is already registered or running.
            StorageError: when the folder cannot be created.
        """
        if self._status not in (*_EDITABLE, "debug"):
            raise ExperimentStateError(
                f"The experiment is already {self._status!r}; register a new instance instead."
            )
        if name is None and PurePath(os.fspath(root)).name == "..":
            raise InvalidNameError(
                "experiment", "..", "is a relative folder reference; give the folder itself"
            )
        root_path = os.path.abspath(os.fspath(root))
        if name is None:
            root_path, name = os.path.split(root_path)
        check_name("experiment", name)
        if name.startswith("."):
            raise InvalidNameError("experiment", name, "starts with '.' (a hidden folder)")
        before = {**self.__dict__, "_timestamps": dict(self._timestamps)}
        try:
            return self._register(root_path, name, purpose, force, same_names, restart, backend)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _register(
        self,
        root_path: str,
        name: str,
        purpose: str,
        force: bool,
        same_names: int,
        restart: bool,
        backend: str | None,
    ) -> Experiment:
        if restart and os.path.exists(os.path.join(root_path, name, "params.yml")):
            return self._restart(root_path, name, purpose, backend)
        candidates = [name]
        if force:
            candidates += [f"{name}_{i}" for i in range(1, same_names + 1)]
        state = self.__dict__
        if purpose:
            state["_purpose"] = purpose
        now = now_iso()
        self._timestamps.setdefault("created", now)
        self._timestamps["registered"] = now
        version = get_version(cls=type(self))
        state["_version"] = version
        if state["_meta"] is None:
            state["_meta"] = get_meta()
        state["_status"] = "registered"
        # Registration is atomic as seen from any reader (#12): the folder is claimed by creating its params.yml,
        # complete, in one step that fails when another params.yml is there; only then is the trial created, named
        # after that folder. A crash in between leaves a registered experiment with no trial yet, which gets one
        # when it runs (configure/_attach); never a trial without its params.yml, which would make the backend
        # file the next registration's results under another folder than its params.yml.
        for candidate in candidates:
            directory = os.path.join(root_path, candidate)
            if holds_run(directory):
                continue
            created = _make_folder(directory)
            state["_root"] = directory
            doc = state["_doc"] = self._new_doc(self._state())
            if _create_exclusive(os.path.join(directory, "params.yml"), dic_to_yaml(doc)):
                state["_last_save"] = time.monotonic()
                name = candidate
                break
            if created:  # another process claimed it first
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        else:
            directory = os.path.join(root_path, name)
            if not force:
                raise AlreadyExistsError(
                    f"{directory} already holds a params.yml or a run; pass force=True for a new name or "
                    "restart=True."
                )
            raise AlreadyExistsError(
                f"{directory} and {name}_1 … {name}_{same_names} all hold a params.yml or a run; "
                "choose another name or pass restart=True."
            )
        try:
            link = state["_link"] = self._new_link(backend, root_path, name, version, restart=False)
            link.commit()  # registered, not running: hdf5:// then lets the process that runs it write
        except BaseException:
            # The backend refused: the folder is given back (the params.yml we wrote, and the folder if we made it
            # and it is empty).
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, "params.yml"))
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            raise
        return self

    def _restart(self, root_path: str, name: str, purpose: str, backend: str | None) -> Experiment:
        """Continue the experiment registered in ``{root_path}/{name}``: its params.yml, its trial."""
        directory = os.path.join(root_path, name)
        self.from_yml(os.path.join(directory, "params.yml"))
        state = self.__dict__
        state["_root"] = directory
        state["_status"] = "registered"
        if purpose:
            state["_purpose"] = purpose
        self._timestamps.setdefault("created", now_iso())
        self._timestamps["registered"] = now_iso()
        version = get_version(cls=type(self))
        state["_version"] = version
        if state["_meta"] is None:
            state["_meta"] = get_meta()
        link = state["_link"] = self._new_link(backend, root_path, name, version, restart=True)
        link.set_status("registered", messages=dict(self._messages))
        link.commit()
        self._save()
        return self

    link = register

    def _trial_metadata(self) -> dict[str, Any]:
        return {
            "messages": dict(self._messages),
            "timestamps": dict(self._timestamps),
            "version": self.__dict__["_version"] or {},
            "meta": self._meta or {},
            "status": self._status,
            "directory": self._root,
        }

    def detach(self) -> Experiment:
        """Run without a folder or a backend (``--execute`` without a value): nothing is written."""
        self.__dict__.update(_root=None, _status="detached", _link=None)
        return self

    def to_root(self, root_dir: str | os.PathLike[str], shell: str = "/bin/bash") -> None:
        """Write ``defaults.yml`` and an executable ``script.sh`` (run with a params.yml path) into ``root_dir``.

        The script runs ``python <file of the class> --execute "$1"`` when the class lives in a script, else
        ``python -m unitrack.experiment.launch module:Class --execute "$1"``; every value is shell-quoted and
        no Python is generated (xmen's launcher interpolated paths into Python source).
        """
        command, pythonpath = self._launch_command()  # before anything is written: it may refuse
        self.to_defaults(root_dir)
        lines = [f"#!{shell}", f"# unitrack: run {type(self).__qualname__} with the params.yml given as $1"]
        if pythonpath is not None:  # the package's folder first, the caller's PYTHONPATH kept after it
            lines.append(f'export PYTHONPATH={shlex.quote(pythonpath)}"${{PYTHONPATH:+:$PYTHONPATH}}"')
        lines.append(f'exec {" ".join(shlex.quote(p) for p in command)} --execute "$1"')
        script = os.path.join(os.fspath(root_dir), "script.sh")
        atomic_write_text(script, "\n".join(lines) + "\n")
        os.chmod(script, 0o755)  # noqa: S103 - a script the user runs, like xmen's

    def _launch_command(self) -> tuple[list[str], str | None]:
        """The command that runs this experiment's class, and the folder to put first on PYTHONPATH (or None).

        Raises:
            ConfigError: when the class cannot be launched by reference (not at module level, no file).
        """
        cls = type(self)
        target = cls.__dict__.get("fn")  # functional experiments: (module, function name)
        if isinstance(target, tuple) and len(target) == 2:
            module, qualname = target
        else:
            module, qualname = cls.__module__, cls.__qualname__
        module_obj = sys.modules.get(module)
        file = getattr(module_obj, "__file__", None)
        if module == "__main__" or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
            if not file:
                raise ConfigError(
                    f"Cannot tell which file defines {qualname}; run to_root from a script or module."
                )
            return [sys.executable, os.path.abspath(file)], None
        if not re.fullmatch(r"[A-Za-z_]\w*", qualname):
            raise ConfigError(
                f"{qualname} is not a module-level class or function; to_root cannot launch it. Define it at the "
                "top level of a module."
            )
        command = [sys.executable, "-m", "unitrack.experiment.launch", f"{module}:{qualname}"]
        if not file:
            return command, None
        depth = module.count(".") + (1 if os.path.basename(file) == "__init__.py" else 0)
        return command, str(Path(os.path.abspath(file)).parents[depth])

    # ---------------------------------------------------------------------------------------- messages
    def message(
        self,
        messages: Mapping[str, Any],
        keep: str = "latest",
        leader: str | None = None,
        *,
        step: Any = None,
    ) -> None:
        """Leave messages: keep the latest, min or max value per subject; store every number as a metric.

        A no-op until the experiment is registered. Values that are not str, int or float become float when
        possible, else str. With ``leader``, all messages are kept only when the leader's value is kept. When
        this returns the messages are durable in the backend; params.yml is refreshed about once a second.

        Raises:
            ConfigError: for an unknown ``keep`` or a ``leader`` missing from ``messages``.
            SchemaError: for a subject that is not a valid metric name, or a number beyond float64; nothing of
                the call is recorded.
        """
        if self._root is None:
            return
        if keep not in ("latest", "min", "max"):
            raise ConfigError(f"keep={keep!r}; use 'latest', 'min' or 'max'.")
        values = {k: v if type(v) in _MESSAGE_TYPES else _convert_message(v) for k, v in messages.items()}
        # Work on a copy: a value the backend refuses (e.g. a metric name with '..') changes nothing.
        if keep == "latest" and leader is None:
            stored = {**self._messages, **values}
        elif leader is not None:
            stored = dict(self._messages)
            if leader not in values:
                raise ConfigError(f"leader {leader!r} is not among the messages {sorted(values)}.")
            if _wins(stored, leader, values[leader], keep):
                stored.update(values)
        else:
            stored = dict(self._messages)
            for key, value in values.items():
                if _wins(stored, key, value, keep):
                    stored[key] = value
        state = self.__dict__
        state["_in_message"] = True  # SIGTERM waits until this write is complete (see _on_sigterm)
        try:
            link = self._link
            if link is not None:
                link.message(stored, values, step)
            with _SAVE_LOCK:  # the flusher must see these messages or save them itself
                state["_messages"] = stored
                if time.monotonic() - state["_last_save"] >= SAVE_INTERVAL_S:
                    self._save(force=False)
                elif not state["_unsaved"]:
                    # Saved about a second after the last save whether more messages come or not (a Monitor
                    # messaging an experiment outside `with ex:` has no status change to save them), and at exit.
                    state["_unsaved"] = True
                    _flusher().due(self)
        finally:
            state["_in_message"] = False
        if state["_term_pending"]:
            signum, state["_term_pending"] = state["_term_pending"], 0
            raise _interruption(signum)

    def log_metrics(self, values: Mapping[str, Any], *, step: int) -> None:
        """Append ``(step, value)`` to the trial's metric series of each name (a Monitor's scalar summaries).

        A no-op until the experiment is registered. Unlike :meth:`message`, nothing is kept in ``messages``.

        Raises:
            SchemaError: for a value that is not a number or an invalid metric name.
        """
        link = self._link
        if link is not None and values:
            link.log_metrics(values, step)

    def log_metadata(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the trial's metadata, key by key (a Monitor's checkpoints and resource use).

        A no-op until the experiment is registered. The keys the experiment maintains itself (messages,
        timestamps, version, meta, status, directory) are refused.

        Raises:
            ConfigError: for one of the experiment's own keys.
        """
        reserved = sorted(set(values) & set(self._trial_metadata()))
        if reserved:
            raise ConfigError(f"metadata keys {reserved} are kept by the experiment itself; use other names.")
        link = self._link
        if link is not None and values:
            link.log_metadata(values)

    # ------------------------------------------------------------------------------------------- running
    def catch_sigterm(self, enable: bool | None = True) -> Experiment:
        """Turn SIGTERM into a ``stopped`` status and SIGUSR1 into ``timeout`` (data flushed either way) while the
        experiment runs (``with ex:``), by raising :class:`Terminated` / :class:`TimedOut` in the main thread.

        SIGUSR1 is what Slurm sends before a time limit when asked (``#SBATCH --signal=B:USR1@120``; ``unitrack
        run --slurm --requeue`` writes it). When ``$UNITRACK_REQUEUE`` is 1 the job is then requeued with
        ``scontrol requeue`` and the status is ``requeue``, so the experiment runs again.

        ``enable=None`` (the default) handles only the signals nobody else handles (their handler is the
        default, which kills the process at once): the run records its status, flushes, then exits with status
        128 + signal, as the signal would have ended it. A handler installed by the program or another library
        is left alone. ``True`` always handles them and lets the exception propagate (what :meth:`main` does);
        ``False`` never does. The previous handlers come back when the run ends.
        """
        self.__dict__["_catch_sigterm"] = enable
        return self

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Never interrupt a backend write halfway (a lock or a journal line could be left half done):
        # inside message() the signal is noted and raised when the write has completed.
        state = self.__dict__
        if os.getpid() != state["_handler_pid"] or state.get("_status") != "running":
            # A process forked inside the run (e.g. a data-loading worker) is not the experiment, and a run that
            # has ended has nothing to record (a framework that stacked its own handler on ours can put ours back
            # after the run): the process ends as the signal would have ended it.
            previous = (state.get("_previous_handlers") or {}).get(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if state["_in_message"]:
            state["_term_pending"] = signum
            return
        raise _interruption(signum)

    def __enter__(self) -> Experiment:
        if self._status == "default":
            raise ExperimentStateError(
                "An experiment must be registered before it runs: call register(root, name) or use --execute."
            )
        if self._status not in (
            "registered",
            "detached",
            "timeout",
            "requeue",
            "stopped",
            "error",
            "finished",
        ):
            raise ExperimentStateError(
                f"Cannot start an experiment whose status is {self._status!r}; register a new instance."
            )
        state = self.__dict__
        if self._root is not None:
            state["_meta"] = get_meta(
                get_platform=True,
                get_cpu=True,
                get_memory=True,
                get_disk=True,
                get_slurm=True,
                get_conda=True,
                get_gpu=True,
                disk_path=self._root,
            )
        state["_status"] = "running"
        self._timestamps["start"] = now_iso()
        mode = state["_catch_sigterm"]
        if mode is not False and _in_main_thread():
            chosen = [s for s in _CAUGHT if mode or signal.getsignal(s) == signal.SIG_DFL]
            state["_auto_handlers"] = () if mode else tuple(chosen)
            state["_handler_pid"] = os.getpid()
            state["_previous_handlers"] = {
                signum: signal.signal(signum, self._on_sigterm) for signum in chosen
            }
        if self._link is not None:
            # Running, with this process and a heartbeat: a run whose process dies is then listed as lost.
            record = self._link.start(
                timestamps=dict(self._timestamps), meta=self._meta or {}, start_time=time.time()
            )
            state["_meta"] = {**(self._meta or {}), "process": record}
            interval = state.get("_system_metrics")
            if interval is not None and state.get("_sampler") is None:
                state["_sampler"] = start_trial_sampler(
                    self._link.protocol, self._link.uid, interval, disk_path=self._root
                )
        self._save()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        state = self.__dict__
        sampler, state["_sampler"] = state.get("_sampler"), None
        if sampler is not None:
            sampler.stop()
        previous, state["_previous_handlers"] = state.get("_previous_handlers") or {}, {}
        auto, state["_auto_handlers"] = state.get("_auto_handlers") or (), ()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        error = None
        if exc_type is None:
            status = "finished"
        elif issubclass(exc_type, TimedOut):
            status = self._requeue()
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "stopped"
        elif issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (0, None):
            status = "finished"
        else:
            status = "error"
            error = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip()
        state["_status"] = status
        self._timestamps["stopped"] = now_iso()
        if self._link is not None:
            self._link.stop()
            self._link.set_status(status, error, timestamps=dict(self._timestamps), end_time=time.time())
        self._save()
        if self._link is not None:
            self._link.commit()
        self._restore_stdout()
        if isinstance(exc, Terminated) and exc.signum in auto:
            # Nobody else handled this signal: end the process as the signal would have, now that it is flushed.
            raise SystemExit(128 + exc.signum) from exc
        return False

    @staticmethod
    def _requeue() -> str:
        """The status of a timed-out run: ``requeue`` when its job script asked for it and Slurm took it."""
        from unitrack.experiment.slurm import SlurmRequeueError, requeue_current_job, requeue_requested

        if not requeue_requested():
            return "timeout"
        try:
            requeue_current_job()
        except SlurmRequeueError as exc:
            sys.stderr.write(f"WARNING: {exc}; the status stays 'timeout' (unitrack run runs it again).\n")
            return "timeout"
        return "requeue"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the experiment inside its context (status running → finished/error/stopped).

        Raises:
            ExperimentStateError: when the experiment is not registered (status ``default``).
        """
        if self._status == "default":
            raise ExperimentStateError(
                "An experiment must be registered before it is run: call register(root, name) or use --execute."
            )
        with self:
            return self.run(*args, **kwargs)

    def stdout_to_txt(self) -> None:
        """Also write stdout and stderr to ``{directory}/out.txt`` (appended) until the experiment stops."""
        if self._root is None or self.__dict__["_tee"] is not None:
            return
        file = open(os.path.join(self._root, "out.txt"), "a", encoding="utf-8")  # noqa: SIM115 - closed in _restore_stdout
        self.__dict__["_tee"] = (sys.stdout, sys.stderr, file)
        sys.stdout = _Tee(sys.stdout, file)
        sys.stderr = _Tee(sys.stderr, file)

    def _restore_stdout(self) -> None:
        tee = self.__dict__["_tee"]
        if tee is None:
            return
        sys.stdout, sys.stderr, file = tee
        file.close()
        self.__dict__["_tee"] = None

    # --------------------------------------------------------------------------------------- command line
    def _parser(self) -> argparse.ArgumentParser:
        cls = type(self)
        return build_parser(cls.__name__, cls.__doc__ or "")

    def parse_args(self, args: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse the command line and configure the experiment: debug → update → execute/register.

        On a bad value (unsafe or invalid YAML, an unknown parameter, a wrong type, a bad name) the parser
        prints the error and exits with status 2; nothing runs.
        """
        parser = self._parser()
        ns = parser.parse_args(args)
        try:
            configure(self, ns)
        except (UnitrackError, ValueError) as exc:
            parser.error(str(exc))
        ns.configured = True
        return ns

    def main(self, args: Sequence[str] | argparse.Namespace | None = None) -> Experiment:
        """Run the experiment's command line (see :func:`build_parser` for the flags).

        ``args`` may be a list of strings (default ``sys.argv[1:]``) or the namespace returned by
        :meth:`parse_args`. SIGTERM stops a run cleanly (status ``stopped``), exiting with status 143; SIGUSR1
        ends it with ``timeout`` or ``requeue`` (see :meth:`catch_sigterm`), exiting with status 138.
        """
        ns = args if isinstance(args, argparse.Namespace) else self.parse_args(args)
        if not getattr(ns, "configured", False):
            configure(self, ns)
        if not any(
            getattr(ns, f, None) for f in ("update", "to_root", "debug", "txt", "restart", "purpose")
        ) and (ns.execute is None):
            sys.stdout.write(f"{type(self).__doc__ or ''}\n\nFor more help use --help.\n")
            return self
        if ns.to_root:
            sys.stdout.write(f"Generating experiment root at {ns.to_root}\n")
            self.to_root(ns.to_root)
        if ns.execute is not None:
            if type(self).run is Experiment.run:
                sys.stderr.write(
                    f"WARNING: The --execute flag was passed but run is not implemented for {type(self).__name__}\n"
                )
                return self
            self.catch_sigterm()
            try:
                self()
            except TimedOut:
                sys.exit(128 + signal.SIGUSR1)
            except Terminated:
                sys.exit(128 + signal.SIGTERM)
        return self

    def __repr__(self) -> str:
        lines = []
        for key, value in self._state().items():
            if key.startswith("_") and value not in (None, {}, [], ""):
                lines.append(f"{key[1:]}: {value}")
        lines.append("parameters:")
        lines += [f"  {k}: {v!r}" for k, v in self.params().items()]
        return "\n".join(lines)


#: The special keys of a params.yml that must be mappings, and those that must be text (when present and not null).
_MAPPING_KEYS = ("_timestamps", "_messages", "_version", "_meta")
_TEXT_KEYS = ("_root", "_name", "_purpose", "_status", "_user", "_host")


def _check_special_keys(path: str, values: Mapping[str, Any]) -> None:
    """Refuse a params.yml whose special keys have the wrong shape, naming the key (before anything is loaded)."""

    def bad(key: str, expected: str) -> IncompatibleYmlException:
        return IncompatibleYmlException(
            f"{path}: {key} is {values[key]!r} ({type(values[key]).__name__}); expected {expected}. Fix or delete "
            "the line."
        )

    for key in _MAPPING_KEYS:
        if values.get(key) is not None and not isinstance(values[key], Mapping):
            raise bad(key, "a mapping")
    for key in _TEXT_KEYS:
        if values.get(key) is not None and not isinstance(values[key], str):
            raise bad(key, "text")
    notes = values.get("_notes")
    if notes is not None and not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        raise bad("_notes", "a list of text")


def _without_environment(meta: Any) -> Any:
    """xmen's ``_meta`` with its ``environ`` (all environment variables) cut down to the allow-list."""
    if not isinstance(meta, Mapping) or "environ" not in meta:
        return meta
    environ = meta["environ"] if isinstance(meta["environ"], Mapping) else {}
    kept = {k: v for k, v in environ.items() if k in ENVIRON_ALLOW_LIST}
    return {**{k: v for k, v in meta.items() if k != "environ"}, **({"environ": kept} if kept else {})}


def _create_exclusive(path: str, text: str) -> bool:
    """Create ``path`` holding ``text``, complete or not at all, unless it exists; False when it exists.

    The text is written to a temporary file (fsynced), then linked to ``path``, which fails if ``path`` exists:
    a reader sees no file or the whole file, and of two processes claiming one folder exactly one wins.

    Raises:
        StorageError: when the folder is not writable.
    """
    tmp = f"{os.path.join(os.path.dirname(path), '.' + os.path.basename(path))}.{os.getpid()}.{time.time_ns()}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # a file system without hard links: exclusive create, then the text
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                with open(path, "x", encoding="utf-8") as handle:
                    handle.write(text)
            except FileExistsError:
                return False
        return True
    except OSError as exc:
        raise StorageError(f"Cannot write {path}: {exc}. Check the folder exists and is writable.") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _make_folder(directory: str) -> bool:
    """Create an experiment folder (and its parents); True when it did not exist.

    Raises:
        StorageError: when it cannot be created (a file in the way, no permission), saying which path.
    """
    existed = os.path.isdir(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"Cannot create the experiment folder {directory}: {exc.strerror or exc}. Choose a root you can write."
        ) from exc
    return not existed


def _interruption(signum: int) -> Terminated:
    exc = (
        TimedOut(f"received signal {signum} (SIGUSR1: the time limit is near)")
        if signum == getattr(signal, "SIGUSR1", None)
        else Terminated(f"received signal {signum}")
    )
    exc.signum = signum
    return exc


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------------------- command line
_USAGE = "%(prog)s [-h] [-u YML [YML ...]] [-p PURPOSE] [-x [DIR|PARAMS]] [-r DIR] [-d] [-t] [-f]"


def build_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The command line of an experiment; its epilog is the class docstring with every parameter's type,
    default and help.

    Flags: ``--update/-u YML...`` (YAML mappings, or paths to params.yml/defaults.yml), ``--purpose/-p``,
    ``--execute/-x [DIR|params.yml]`` (no value: run detached, writing nothing), ``--to_root/-r DIR``,
    ``--debug/-d``, ``--txt/-t`` (tee stdout/stderr to out.txt), ``--restart/-f`` (with ``-x DIR``: continue
    the experiment in DIR).
    """
    epilog = textwrap.dedent(doc)
    if "%(prog)" in epilog:  # argparse %-formats such a text: keep every '%' of the docstring as written
        epilog = epilog.replace("%", "%%")
    parser = argparse.ArgumentParser(
        description=f"Run the experiment {name}.",
        usage=_USAGE,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--update",
        "-u",
        nargs="+",
        metavar="YML",
        help='Parameter overrides: YAML mappings such as "{lr: 0.01}" or paths to a params.yml/defaults.yml '
        "(parameter values only are copied). Applied in order.",
    )
    parser.add_argument("--purpose", "-p", nargs="+", metavar="PURPOSE", help="Why the experiment is run.")
    parser.add_argument(
        "--execute",
        "-x",
        nargs="?",
        const="",
        metavar="DIR|PARAMS",
        help="Run the experiment: registered to DIR, or from a registered params.yml, or (no value) detached, "
        "writing nothing.",
    )
    parser.add_argument(
        "--to_root",
        "-r",
        metavar="DIR",
        help="Write defaults.yml and script.sh into DIR (an experiment root).",
    )
    parser.add_argument("--debug", "-d", action="store_true", help="Call debug() before anything else.")
    parser.add_argument("--txt", "-t", action="store_true", help="Also write stdout and stderr to out.txt.")
    parser.add_argument(
        "--restart",
        "-f",
        action="store_true",
        help="With --execute DIR: continue the experiment already in DIR.",
    )
    return parser


def read_update(item: str, param_names: Sequence[str]) -> dict[str, Any]:
    """Read one ``--update`` item: a path to a params.yml/defaults.yml (parameters only) or a YAML mapping.

    Raises:
        UnsafeYAMLError: for YAML with python tags (nothing is constructed).
        IncompatibleYmlException: for anything that is neither.
    """
    from unitrack.errors import IncompatibleYmlException

    if os.path.isfile(item):
        data = dic_from_yml(path=item)
        return {k: v for k, v in data.items() if not str(k).startswith("_") and k in param_names}
    data = parse_user_yaml(item, what="--update value")
    if not isinstance(data, dict):
        raise IncompatibleYmlException(
            f"{item!r} is either not a valid yaml string or is not a path to a defaults.yml or params.yml file"
        )
    return data


def configure(ex: Experiment, ns: argparse.Namespace) -> None:
    """Apply parsed flags to ``ex`` in xmen's order: debug → update → execute (register/load).

    Raises:
        ConfigError: for flags that contradict each other (``-r`` with ``-x``; ``-u`` with ``-x`` of an experiment
            already registered, whose params.yml fixes its parameters), before anything is written.
    """
    if ns.to_root and ns.execute is not None:
        raise ConfigError(
            "--to_root and --execute are separate steps: generate the root with -r ROOT, then register "
            "experiments into it (unitrack register, or -x ROOT/NAME)."
        )
    if ns.update and ns.execute:
        loaded = ns.execute if os.path.isfile(ns.execute) else os.path.join(ns.execute, "params.yml")
        if os.path.isfile(loaded) and (loaded == ns.execute or ns.restart):
            raise ConfigError(
                f"--update cannot change the experiment registered in {loaded}: its params.yml fixes its "
                "parameters. Edit that file before running it, or register a new experiment (-u ... -x NEWDIR)."
            )
    if ns.debug:
        sys.stdout.write("Running as debug\n")
        ex.__dict__["_is_debug"] = True
        ex.debug()
    for item in ns.update or ():
        ex.update(read_update(item, ex.param_keys()))
    purpose = " ".join(ns.purpose) if ns.purpose else ""
    if ns.execute is None:
        return
    if ns.execute == "":
        ex.detach()
    elif os.path.isfile(ns.execute):
        ex.from_yml(ns.execute)
        if ex.status not in ("registered", "detached", "timeout", "requeue"):
            raise ConfigError(f"File {ns.execute} is not a valid params.yml file (status {ex.status!r}).")
        # The folder holding the file is the experiment, even when it was moved since _root was written.
        root, name = os.path.split(os.path.dirname(os.path.abspath(ns.execute)))
        ex.__dict__["_root"] = os.path.join(root, name)
        ex.__dict__["_status"] = "registered"
        _attach(ex, root, name, purpose)
    else:
        ex.register(ns.execute, purpose=purpose, restart=ns.restart)
    if ns.txt:
        ex.stdout_to_txt()


def _attach(ex: Experiment, root: str, name: str, purpose: str) -> None:
    """Link an experiment loaded from a registered params.yml to its trial (created when missing)."""
    state = ex.__dict__
    if purpose:
        state["_purpose"] = purpose
    version = state["_version"] or get_version(cls=type(ex))
    state["_version"] = version
    state["_link"] = ex._new_link(None, root, name, version, restart=True)
