"""The run a framework integration writes to: one trial, created on first use, on the main process only.

Every integration (:mod:`unitrack.integrations.lightning`, ``.transformers``, ``.keras``, ``.optuna``) writes
through an :class:`IntegrationRun`. Its *target* is where the trial lives:

- ``None``, a URI or a ``Protocol``: a new trial in that backend (None: ``$UNITRACK_URI``, then the embedded
  default ``hdf5://runs``), in project ``project`` (default ``$UNITRACK_PROJECT``, else ``default``) and group
  ``group`` (default none). Each run is a new trial (a new revision when its name and parameters repeat);
- a :class:`~unitrack.persistence.track.TrackClient`: its current trial, or a new one in its project and group;
- a :class:`~unitrack.persistence.track.TrialLogger`: that trial;
- a registered ``unitrack.experiment.Experiment``: its trial. When the experiment is already running (``with ex:``)
  it keeps its own status; otherwise the integration runs it (``running`` at the first write, then ``finished``,
  ``error`` or ``stopped``).

Parameters are plain data: :func:`plain_parameters` turns ``argparse.Namespace``, OmegaConf containers,
dataclasses, enums, paths and dtypes into dicts, lists, numbers and text (nested dicts stay nested, so
``parameters.optimizer.lr`` finds them). The trial's uid covers the parameters it is created with.

A framework whose callbacks never see an exception (Hugging Face's Trainer, Keras) relies on
:func:`finish_open_runs_on_crash`: an uncaught exception ends every open run with status ``error`` and its
traceback (``stopped`` for Ctrl-C) before the interpreter reports it. In a notebook, or around code that catches
the exception, use the callback as a context manager (``with UnitrackCallback() as cb: trainer.train()``).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from types import TracebackType
from typing import Any

from unitrack.errors import ConfigError
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.system import SystemSampler, start_trial_sampler, system_metrics_interval
from unitrack.persistence.track import PROJECT_ENV, TrackClient, TrialLogger

__all__ = ["IntegrationRun", "RunCallback", "env_rank", "finish_open_runs_on_crash", "plain_parameters"]

logger = logging.getLogger(__name__)

#: Longest text kept for one parameter value (a tensor's or a model's repr is not a parameter).
MAX_TEXT = 1000
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
_NO_EXC: ExcInfo = (None, None, None)


def plain_parameters(value: Any, _depth: int = 0) -> Any:
    """Return ``value`` as plain data for a trial's parameters.

    Mappings (dicts, OmegaConf ``DictConfig``, Lightning's ``AttributeDict``) become dicts with str keys,
    ``argparse.Namespace`` and dataclasses become dicts, sequences and sets become lists, enums their value,
    numpy/torch scalars numbers, paths, dtypes, devices and other objects their text (at most 1,000 characters),
    and classes and functions their qualified name.

    Example:
        >>> import argparse, enum, pathlib
        >>> class Act(enum.Enum):
        ...     RELU = "relu"
        >>> plain_parameters({"opt": argparse.Namespace(lr=0.1, betas=(0.9, 0.99)), "act": Act.RELU,
        ...                   "out": pathlib.Path("/tmp/x"), 3: None})
        {'opt': {'lr': 0.1, 'betas': [0.9, 0.99]}, 'act': 'relu', 'out': '/tmp/x', '3': None}
    """
    if _depth > 32:
        return _text(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value if not isinstance(value, str) or len(value) <= MAX_TEXT else _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return plain_parameters(value.value, _depth + 1)
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain_parameters(v, _depth + 1) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return plain_parameters(item(), _depth + 1)
    if isinstance(value, (list, tuple, set, frozenset)) or (
        isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray, PurePath))
    ):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [plain_parameters(v, _depth + 1) for v in items]
    if isinstance(value, type) or callable(value):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        module = getattr(value, "__module__", None)
        if name:
            return f"{module}.{name}" if module else str(name)
    return _text(value)


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def env_rank() -> int:
    """This process's global rank as launchers announce it (``RANK``, ``SLURM_PROCID``, ``LOCAL_RANK``...); 0
    when none does."""
    for name in (
        "RANK",
        "PMI_RANK",
        "OMPI_COMM_WORLD_RANK",
        "SLURM_PROCID",
        "JSM_NAMESPACE_RANK",
        "LOCAL_RANK",
    ):
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return int(text)
    return 0


def _is_experiment(target: Any) -> bool:
    """An ``unitrack.experiment.Experiment`` (checked by capability: integrations sit above experiment, and
    this keeps a framework adapter from importing it when it is not used)."""
    return all(hasattr(target, a) for a in ("trial_uid", "backend", "message", "log_metrics", "directory"))


def _wins(stored: Mapping[str, Any], key: str, value: Any, keep: str) -> bool:
    if key not in stored or keep == "latest":
        return True
    try:
        return bool(value < stored[key]) if keep == "min" else bool(value > stored[key])
    except TypeError:
        return True


class IntegrationRun:
    """One trial written by a framework integration (see the module docstring for ``target``).

    Args:
        target: where the trial lives: None, a URI, a Protocol, a TrackClient, a TrialLogger or an Experiment.
        framework: the integration's name, recorded in the trial's tags (``{'framework': 'lightning'}``) and the
            default trial name (``lightning-20250101-120000``).
        name, project, group, description, tags: the new trial's fields (ignored for a given trial).
        system_metrics: sample ``sys/...`` series every so many seconds while the run is open (``True``: 10 s;
            None: ``$UNITRACK_SYSTEM_METRICS``).
        catch_sigterm: let the run's own trial record SIGTERM as ``stopped`` (False where the framework handles
            signals itself).

    Raises:
        ConfigError: for a target of another type, an unregistered experiment, or a bad ``system_metrics``.
    """

    def __init__(
        self,
        target: Any = None,
        *,
        framework: str,
        name: str | None = None,
        project: str | None = None,
        group: str | None = None,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        system_metrics: float | bool | None = None,
        catch_sigterm: bool = True,
    ) -> None:
        if not (
            target is None
            or isinstance(target, (str, Protocol, TrackClient, TrialLogger))
            or _is_experiment(target)
        ):
            raise ConfigError(
                f"cannot log to a {type(target).__name__}: pass a backend URI, a Protocol, a TrackClient, a "
                "TrialLogger or a registered unitrack Experiment (or nothing for $UNITRACK_URI)",
                parameter="target",
            )
        self.target = target
        self.framework = framework
        #: Whether the run's own trial handles SIGTERM (see TrialLogger.catch_sigterm).
        self.catch_sigterm = catch_sigterm
        self.experiment = target if _is_experiment(target) else None
        if self.experiment is not None and self.experiment.trial_uid is None:
            raise ConfigError(
                "the experiment is not registered: call register(root, name) (or Experiment(root, name)) first",
                parameter="target",
            )
        if self.experiment is not None:
            name = os.path.basename(str(self.experiment.directory))
        self.name = name or f"{framework}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.project, self.group, self.description = project, group, description
        self.tags = {"framework": framework, **(tags or {})}
        self.system_metrics = system_metrics_interval(system_metrics)
        self.trial_logger: TrialLogger | None = target if isinstance(target, TrialLogger) else None
        self.client: TrackClient | None = target if isinstance(target, TrackClient) else None
        self._owns_experiment = False
        self._open = False
        self._sampler: SystemSampler | None = None
        self._messages: dict[str, Any] = {}
        self._checkpoints: dict[str, str] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------------------ identity
    @property
    def protocol(self) -> Protocol | None:
        """The backend (None until the trial exists, unless it was given)."""
        if self.experiment is not None:
            backend: Protocol = self.experiment.backend
            return backend
        if self.trial_logger is not None:
            return self.trial_logger.protocol
        if self.client is not None:
            return self.client.protocol
        return self.target if isinstance(self.target, Protocol) else None

    @property
    def uid(self) -> str | None:
        """The trial's uid (None until it exists)."""
        if self.experiment is not None:
            uid: str = self.experiment.trial_uid
            return uid
        return self.trial_logger.uid if self.trial_logger is not None else None

    @property
    def started(self) -> bool:
        """True once the trial exists (it is created at the first write)."""
        return self.uid is not None and (self.experiment is None or self._open or self._running_experiment())

    @property
    def is_open(self) -> bool:
        """True between the start and the end of the run."""
        return self._open

    def _running_experiment(self) -> bool:
        return self.experiment is not None and self.experiment.status == "running"

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, parameters: Mapping[str, Any] | None = None) -> None:
        """Create the trial (``parameters`` are part of its identity) and mark it running; later calls merge
        ``parameters`` into it."""
        with self._lock:
            params = plain_parameters(dict(parameters or {}))
            if self._open:
                if params:
                    self.log_parameters(params)
                return
            if self.experiment is not None:
                ex = self.experiment
                if params:
                    ex.backend.log_trial_arguments(ex.trial_uid, **params)
                if ex.status != "running":
                    ex.__enter__()
                    self._owns_experiment = True
                ex.backend.add_trial_tags(ex.trial_uid, **self.tags)
            else:
                trial_logger = self._trial_logger(params)
                if not trial_logger._started:
                    trial_logger.catch_sigterm = self.catch_sigterm
                    trial_logger.start()
            self._open = True
            _OPEN_RUNS.add(self)
            self._start_sampler()

    def _trial_logger(self, params: dict[str, Any]) -> TrialLogger:
        if self.trial_logger is not None:
            if params:
                self.trial_logger.log_arguments(**params)
            return self.trial_logger
        client = self.client
        if client is None:
            backend = self.target if isinstance(self.target, (str, Protocol)) else None
            client = self.client = TrackClient(backend, system_metrics=False)
        if client.logger is not None:  # the client's current trial
            self.trial_logger = client.logger
            if params:
                client.logger.log_arguments(**params)
            client.logger.add_tags(**self.tags)
            return client.logger
        client.set_project(name=self.project or client.project or os.environ.get(PROJECT_ENV) or "default")
        if self.group is not None:
            client.set_group(name=self.group)
        fields: dict[str, Any] = {"name": self.name, "parameters": params, "tags": dict(self.tags)}
        if self.description is not None:
            fields["description"] = self.description
        created = client.new_trial(force=True, **fields)
        assert created is not None  # parameters were given
        self.trial_logger = created
        return created

    def _start_sampler(self) -> None:
        interval = self.system_metrics
        protocol, uid = self.protocol, self.uid
        if interval is None or self._sampler is not None or protocol is None or uid is None:
            return
        given = self.trial_logger
        if given is not None and given._sampler is not None:  # the TrackClient samples already
            return
        if self.experiment is not None and self.experiment.__dict__.get("_sampler") is not None:
            return
        disk = self.experiment.directory if self.experiment is not None else None
        self._sampler = start_trial_sampler(protocol, uid, interval, disk_path=disk)

    def finish(self, status: str = "finished", exc_info: ExcInfo | None = None) -> None:
        """End the run: ``finished``, ``error`` (with ``exc_info``'s traceback) or ``stopped``.

        With an exception in ``exc_info`` the status follows it: ``stopped`` for KeyboardInterrupt/SystemExit,
        ``error`` otherwise. A run that never wrote anything is created first, so its end is recorded. An
        experiment that was already running keeps its own status (its ``with`` block records it).

        Raises:
            ConfigError: for a status other than finished, error and stopped.
        """
        if status not in ("finished", "error", "stopped"):
            raise ConfigError(f"status {status!r}: use 'finished', 'error' or 'stopped'", parameter="status")
        with self._lock:
            if not self._open:
                self.start()
            exc_type, exc, tb = exc_info or _NO_EXC
            sampler, self._sampler = self._sampler, None
            if sampler is not None:
                sampler.stop()
            self._open = False
            _OPEN_RUNS.discard(self)
            if self.experiment is not None:
                self._finish_experiment(status, exc_type, exc, tb)
                return
            trial_logger = self.trial_logger
            assert trial_logger is not None  # started above
            if exc_type is None and status == "stopped":
                exc_type, exc = KeyboardInterrupt, KeyboardInterrupt(f"{self.framework} stopped the run")
            elif exc_type is None and status == "error":
                exc_type, exc = RuntimeError, RuntimeError(f"{self.framework} reported that the run failed")
            trial_logger.finish(exc_type, exc, tb)
            trial_logger.protocol.commit()

    def _finish_experiment(self, status: str, exc_type: Any, exc: Any, tb: Any) -> None:
        ex = self.experiment
        if ex is None or not self._owns_experiment:
            return
        self._owns_experiment = False
        if exc_type is None and status == "stopped":
            exc_type, exc = KeyboardInterrupt, KeyboardInterrupt(f"{self.framework} stopped the run")
        elif exc_type is None and status == "error":
            exc_type, exc = RuntimeError, RuntimeError(f"{self.framework} reported that the run failed")
        ex.__exit__(exc_type, exc, tb)

    # ------------------------------------------------------------------------------------------ writes
    def log_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Merge parameters into the trial (starting the run when it has not started)."""
        params = plain_parameters(dict(parameters))
        if not self._open:
            self.start(params)
            return
        if not params:
            return
        if self.experiment is not None:
            self.experiment.backend.log_trial_arguments(self.experiment.trial_uid, **params)
        else:
            assert self.trial_logger is not None
            self.trial_logger.log_arguments(**params)

    def log_metrics(self, values: Mapping[str, Any], step: int | float | None = None) -> None:
        """Append one point per number at ``step`` (non-numbers are skipped) as one write."""
        numbers = _numbers(values)
        if not self._open:
            self.start()
        if not numbers:
            return
        if self.experiment is not None and step is not None:
            self.experiment.log_metrics(numbers, step=step)
        else:
            protocol, uid = self.protocol, self.uid
            assert protocol is not None and uid is not None
            protocol.log_trial_step(uid, step, numbers)

    def log_metadata(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` (made plain) into the trial's metadata."""
        if not self._open:
            self.start()
        plain = {k: plain_parameters(v) for k, v in values.items()}
        if self.experiment is not None:
            self.experiment.log_metadata(plain)
        else:
            assert self.trial_logger is not None
            self.trial_logger.log_metadata(**plain)

    def record_checkpoints(self, paths: Mapping[str, str | os.PathLike[str]]) -> None:
        """Merge ``{role: path}`` into ``metadata['checkpoints']`` (as the Monitor does: the newest per role)."""
        self._checkpoints.update({k: os.fspath(v) for k, v in paths.items() if v})
        if self._checkpoints:
            self.log_metadata({"checkpoints": dict(self._checkpoints)})

    def message(
        self, values: Mapping[str, Any], keep: str = "latest", leader: str | None = None, *, step: Any = None
    ) -> None:
        """xmen's message: keep the latest/min/max value per key in ``metadata['messages']`` and append the
        numbers to the metric series (for an experiment: its own :meth:`message`)."""
        if not self._open:
            self.start()
        if self.experiment is not None:
            self.experiment.message(values, keep=keep, leader=leader, step=step)
            return
        if keep not in ("latest", "min", "max"):
            raise ConfigError(f"keep={keep!r}; use 'latest', 'min' or 'max'", parameter="keep")
        stored = dict(self._messages)
        if leader is not None:
            if leader not in values:
                raise ConfigError(f"leader {leader!r} is not among the messages {sorted(values)}")
            if _wins(stored, leader, values[leader], keep):
                stored.update(values)
        else:
            stored.update({k: v for k, v in values.items() if _wins(stored, k, v, keep)})
        plain = {k: plain_parameters(v) for k, v in stored.items()}
        protocol, uid = self.protocol, self.uid
        assert protocol is not None and uid is not None
        protocol.log_trial_step(uid, step, _numbers(values), {"messages": plain})
        self._messages = stored

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        if self.experiment is not None:
            where = f"experiment {self.experiment.directory}"
        elif self.trial_logger is not None:
            where = repr(self.trial_logger.trial)
        else:
            where = "no trial yet"
        return f"IntegrationRun({self.framework}, {self.name!r}, {state}, {where})"


class RunCallback:
    """What a framework callback owning an :class:`IntegrationRun` (``self.run``) shares: used as a context
    manager, it ends the run when the block does (an exception: ``error``, or ``stopped`` for Ctrl-C)."""

    run: IntegrationRun

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """End an open run with the exception that left the block (error, or stopped for Ctrl-C)."""
        if self.run.is_open:
            self.run.finish("error" if exc_type is not None else "finished", (exc_type, exc, tb))

    def __repr__(self) -> str:
        return f"UnitrackCallback({self.run!r})"


def _numbers(values: Mapping[str, Any]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if type(value) in (float, int):
            out[key] = value
            continue
        item = getattr(value, "item", None)
        if callable(item) and getattr(value, "ndim", None) == 0:
            value = item()
        elif callable(item) and getattr(value, "numel", None) is not None and value.numel() == 1:
            value = item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = int(value)
    return out


# ------------------------------------------------------------------------------------------ crashes
_OPEN_RUNS: weakref.WeakSet[IntegrationRun] = weakref.WeakSet()
_HOOKED = False
_PREVIOUS_HOOK: Any = None


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    for run in list(_OPEN_RUNS):
        try:
            run.finish("error", (exc_type, exc, tb))
        except Exception:  # noqa: BLE001 - the original error is what the user must see
            logger.warning("could not record the crash of %r", run, exc_info=True)
    previous = _PREVIOUS_HOOK if _PREVIOUS_HOOK is not None else sys.__excepthook__
    previous(exc_type, exc, tb)


def finish_open_runs_on_crash() -> None:
    """Chain a ``sys.excepthook`` (once per process) that ends every open run with the uncaught exception's
    traceback (``error``; ``stopped`` for Ctrl-C), then lets the previous hook report it."""
    global _HOOKED, _PREVIOUS_HOOK
    if _HOOKED:
        return
    _HOOKED = True
    _PREVIOUS_HOOK = sys.excepthook
    sys.excepthook = _excepthook
