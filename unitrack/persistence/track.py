"""track's user API: ``TrackClient`` (project, group, trial) and ``TrialLogger`` (what one run logs).

**Each execution is a new run.** ``new_trial`` of a trial identical to a stored one (same name, version and
parameters) stores a new revision of it (track's ``auto_increment``): running a script twice gives two runs,
never one overwritten. Continuing a run is explicit: ``new_trial(..., resume=True)`` (the newest revision of
the identical trial), ``set_trial(uid=...)``, or ``$UNITRACK_TRIAL_ID`` (e.g. set for a requeued job).

``new_trial()`` without parameters returns a logger whose trial is created when they arrive
(``log_arguments``): tags, metadata, metric points and timings logged before are kept and written to that trial.
Parameters may be a dict, an ``argparse.Namespace`` or an ``ArgumentParser`` (parsed), wherever one is taken.

**Lifecycle.** A started trial is ``running`` and beats (see :mod:`unitrack.persistence.lifecycle`), so a run
whose process dies is listed as ``lost``. ``with client:`` (or ``with logger:``) ends it ``completed``,
``interrupted`` (Ctrl-C, or SIGTERM, after which the process exits with status 143) or ``exception`` (the
traceback kept; the exception is not swallowed). A run started without ``with`` is finished at interpreter exit:
``completed``, or as the uncaught exception that ended the program.

Example:
    >>> client = TrackClient("ephemeral://")
    >>> project = client.set_project(name="demo")
    >>> trial = client.new_trial(name="run-1")
    >>> client.log_arguments({"lr": 0.1, "epochs": 2})
    {'lr': 0.1, 'epochs': 2}
    >>> with client:
    ...     for epoch in range(2):
    ...         client.log_metrics(step=epoch, loss=1.0 / (epoch + 1))
    >>> stored = client.protocol.fetch_trials({"parameters.lr": 0.1})[0]
    >>> str(stored.status), stored.metrics["loss"].latest
    ('completed', 0.5)
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

from unitrack.errors import NotFoundError, SchemaError, TrialDoesNotExist
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.artifacts import (
    MAX_DIRECTORY_BYTES,
    check_artifact_name,
    list_artifacts,
    log_artifacts,
    read_artifact,
)
from unitrack.persistence.capture import RingOutput
from unitrack.persistence.eta import EstimatedTime, throttled
from unitrack.persistence.lifecycle import (
    HEARTBEAT_KEY,
    PROCESS_KEY,
    HeartbeatThread,
    Terminated,
    heartbeat_interval_s,
    process_record,
)
from unitrack.persistence.protocol import CHRONO_AGGREGATOR, Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.serialization import to_json
from unitrack.persistence.structure import (
    ChronoObservation,
    MetricPoint,
    Project,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_step,
)
from unitrack.persistence.system import SystemSampler, start_trial_sampler, system_metrics_interval

__all__ = ["TrackClient", "TrialDoesNotExist", "TrialLogger", "as_parameters", "get_device"]

logger = logging.getLogger(__name__)

#: Environment variables that pre-select the project, group and trial (track used ORION_*).
PROJECT_ENV, GROUP_ENV, TRIAL_ENV = "UNITRACK_PROJECT", "UNITRACK_GROUP", "UNITRACK_TRIAL_ID"
#: What orion (the optimizer that drove track) sets for each trial it runs; read when ours are unset.
ORION_PROJECT_ENV, ORION_GROUP_ENV, ORION_TRIAL_ENV = "ORION_PROJECT", "ORION_EXPERIMENT", "ORION_TRIAL_ID"
#: The most text of one captured stream recorded in the trial's metadata when the logger finishes.
MAX_CAPTURED_CHARS = 64 * 1024


def get_device() -> Any:
    """Return ``torch.device('cuda')`` when a GPU is available, else ``torch.device('cpu')`` (track's helper).

    Raises:
        MissingDependencyError: torch is not installed.
    """
    try:
        import torch
    except ImportError as exc:
        from unitrack.errors import MissingDependencyError

        raise MissingDependencyError("get_device()", "torch", "torch") from exc
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _env(ours: str, orion: str) -> str | None:
    return os.environ.get(ours) or os.environ.get(orion) or None


#: Metric points a trial waiting for its parameters keeps; past this it is created without them (with a warning).
PENDING_POINTS_LIMIT = 10_000


def as_parameters(args: Any, what: str = "parameters") -> dict[str, Any]:
    """Parameters as a dict, from a mapping, an ``argparse.Namespace``, an ``ArgumentParser`` (parsed from the
    command line) or None (no parameters).

    Example:
        >>> as_parameters(argparse.Namespace(lr=0.1, depth=3))
        {'lr': 0.1, 'depth': 3}

    Raises:
        SchemaError: for anything else.
    """
    if args is None:
        return {}
    if isinstance(args, argparse.ArgumentParser):
        args = args.parse_args()
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    raise SchemaError(
        f"{what} must be a dict, an argparse Namespace or an ArgumentParser, not {type(args).__name__}."
    )


class _Running:
    """The loggers of this process whose trial started and has not finished, finished at interpreter exit.

    track's logger did the same (``atexit`` → completed): a script that logs without ``with`` and simply ends
    must not leave its run ``running`` forever. An uncaught exception that ended the program is recorded as
    the trial's end (the interpreter sets ``sys.last_value`` before exit handlers run).
    """

    def __init__(self) -> None:
        self._loggers: dict[int, TrialLogger] = {}
        self._lock = threading.Lock()

    def add(self, log: TrialLogger) -> None:
        """Remember a started logger, and make :meth:`finish_all` the next exit handler to run.

        Exit handlers run last registered first, and a backend may register its own on its first write (the
        ``hdf5://`` stores close themselves at exit): registering again after the run's first write keeps the
        runs finishing while their stores are still open.
        """
        with self._lock:
            self._loggers[id(log)] = log
            atexit.unregister(self.finish_all)
            atexit.register(self.finish_all)

    def discard(self, log: TrialLogger) -> None:
        with self._lock:
            self._loggers.pop(id(log), None)

    def finish_all(self) -> None:
        with self._lock:
            loggers = list(self._loggers.values())
        exc = getattr(sys, "last_value", None)
        info: tuple[Any, Any, Any] = (
            (type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else (None, None, None)
        )
        for log in reversed(loggers):
            try:
                log._finish_at_exit(*info)
            except Exception:  # noqa: BLE001 - one failing backend must not keep the other runs from finishing
                logger.exception("could not finish trial %s at exit", log._describe())


_RUNNING = _Running()


class TrialLogger:
    """Log to one trial through a Protocol.

    A context manager: entering starts the trial (``running``, with a heartbeat), leaving finishes it
    (``completed``, or ``exception``/``interrupted`` with the error recorded; the exception is not swallowed).

    A logger made by :meth:`TrackClient.new_trial` without parameters has no trial yet (``trial`` is None): what
    is logged is kept until :meth:`log_arguments` creates the trial, and is then written to it.

    ``system_metrics`` (seconds, ``True`` for 10, None for ``$UNITRACK_SYSTEM_METRICS``) samples CPU, memory,
    disk, network and GPU use into ``sys/...`` metric series while the trial runs
    (:mod:`unitrack.persistence.system`).
    """

    #: Handle SIGTERM while the trial runs (record ``interrupted``, then end as the signal would), when nothing
    #: else handles it. Integrations with a framework that manages signals itself (Lightning) turn it off.
    catch_sigterm: bool = True

    def __init__(
        self, trial: Trial | None, protocol: Protocol, system_metrics: float | bool | None = None
    ) -> None:
        self.trial = trial
        self.protocol = protocol
        self._started = False
        self.system_metrics = system_metrics_interval(system_metrics)
        self._sampler: SystemSampler | None = None
        self._heartbeat: HeartbeatThread | None = None
        # Waiting for parameters: the Trial fields and what was logged before the trial existed.
        self._fields: dict[str, Any] | None = None
        self._resume = False
        self._points: list[MetricPoint] = []
        self._chronos: list[ChronoObservation] = []
        self._statuses: list[tuple[Any, Any]] = []
        # SIGTERM while a protocol call is under way is raised once the call returned (never halfway).
        self._busy = False
        self._term_pending = 0
        self._handler_pid = 0
        self._previous_handler: Any = None
        #: The in-process timer of each ``chrono`` name (what ``with logger.chrono(name) as t`` gives).
        self.timers: dict[str, Aggregator] = {}
        self.eta = EstimatedTime(None, 1)
        self._eta_printer: Callable[..., None] | None = None
        self.stdout: RingOutput | None = None
        self.stderr: RingOutput | None = None
        self.code: str | None = None

    @classmethod
    def _delayed(
        cls,
        protocol: Protocol,
        fields: dict[str, Any],
        resume: bool,
        system_metrics: float | bool | None = None,
    ) -> TrialLogger:
        """A logger whose trial is created from ``fields`` when the parameters arrive."""
        log = cls(None, protocol, system_metrics)
        log._fields = {**fields, "tags": dict(fields.get("tags") or {})}
        log._fields["metadata"] = dict(fields.get("metadata") or {})
        log._resume = resume
        return log

    def __repr__(self) -> str:
        if self.trial is not None:
            return f"TrialLogger({self.trial!r}, backend={_backend_text(self.protocol)})"
        name = (self._fields or {}).get("name")
        return f"TrialLogger({name or '-'!r}, waiting for its parameters, backend={_backend_text(self.protocol)})"

    def _describe(self) -> str:
        if self.trial is not None:
            return f"{self.trial.name or '-'} ({self.trial.uid})"
        name = (self._fields or {}).get("name")
        return f"{name or '-'} (waiting for its parameters)"

    @property
    def is_pending(self) -> bool:
        """True while the trial waits for its parameters (:meth:`log_arguments`) to be created."""
        return self.trial is None

    @property
    def uid(self) -> str:
        """The trial's uid.

        Raises:
            NotFoundError: while the trial waits for its parameters.
        """
        return self._created().uid

    def _created(self) -> Trial:
        if self.trial is None:
            raise NotFoundError(
                "The trial is created when its parameters arrive: call log_arguments(...) first (its hash covers "
                "them)."
            )
        return self.trial

    def refresh(self) -> Trial:
        """Read the trial back from the backend (the object held here is a snapshot).

        Raises:
            NotFoundError: when it is not in the backend (or waits for its parameters).
        """
        trial = self._created()
        found = self.protocol.fetch_trials({"uid": trial.uid})
        if not found:
            raise NotFoundError(f"Trial {trial.uid} is no longer in the backend.")
        self.trial = found[0]
        return self.trial

    # ------------------------------------------------------------------------------------ creation
    def _create(self, parameters: Mapping[str, Any]) -> Trial:
        """Create the trial this logger waits for, and write what was logged before it existed."""
        assert self._fields is not None  # only called while pending
        fields, self._fields = self._fields, None
        try:
            self.trial = _insert_trial(self.protocol, Trial(**fields, parameters=parameters), self._resume)
        except BaseException:
            self._fields = fields
            raise
        points, self._points = self._points, []
        chronos, self._chronos = self._chronos, []
        statuses, self._statuses = self._statuses, []
        if self._started:
            self._begin()
        if points:
            self.protocol.log_trial_metric_points(self.trial, points)
        if chronos:
            self.protocol.update_trial(self.trial.uid, TrialUpdate(chronos=tuple(chronos)))
        for status, error in statuses:
            self.protocol.set_trial_status(self.trial, status, error=error)
        return self.trial

    def _create_without_parameters(self, why: str) -> Trial:
        logger.warning(
            "trial %s %s before log_arguments(); it is created without parameters", self._describe(), why
        )
        return self._create({})

    # ------------------------------------------------------------------------------------- logging
    def log_arguments(self, args: Any = None, /, **kwargs: Any) -> None:
        """Record parameters (a dict, Namespace or ArgumentParser, and/or keywords); creates a trial that waits
        for them, else merges them into the trial's parameters (its hash is not recomputed)."""
        values = {**as_parameters(args), **kwargs}
        if self.trial is None:
            self._create(values)
        else:
            self._write(self.protocol.log_trial_arguments, self.trial, **values)

    def log_metrics(
        self, step: Any = None, aggregator: Callable[[], Aggregator] | None = None, **kwargs: Any
    ) -> None:
        """Append metric values (at ``step``); starts the trial on first use."""
        if not self._started:
            self.start()
        trial = self.trial
        if trial is None:
            self._keep_points(step, kwargs)
            return
        self._busy = True
        try:
            self.protocol.log_trial_metrics(trial, step=step, aggregator=aggregator, **kwargs)
        finally:
            self._busy = False
            if self._term_pending:
                self._raise_pending()

    def _keep_points(self, step: Any, values: Mapping[str, Any]) -> None:
        checked = check_step(step)
        self._points.extend(MetricPoint.checked(name, checked, value) for name, value in values.items())
        if len(self._points) > PENDING_POINTS_LIMIT:
            self._create_without_parameters(f"logged more than {PENDING_POINTS_LIMIT} metric points")

    def log_metadata(self, aggregator: Callable[[], Aggregator] | None = None, **kwargs: Any) -> None:
        """Merge metadata into the trial."""
        if self._fields is not None:
            TrialUpdate(metadata=kwargs)  # checked now, as a write would be
            self._fields["metadata"].update(kwargs)
        else:
            self._write(self.protocol.log_trial_metadata, self._created(), aggregator=aggregator, **kwargs)

    def add_tags(self, **kwargs: Any) -> None:
        """Merge tags into the trial."""
        if self._fields is not None:
            TrialUpdate(tags=kwargs)
            self._fields["tags"].update(kwargs)
        else:
            self._write(self.protocol.add_trial_tags, self._created(), **kwargs)

    def set_status(self, status: StatusLike | str, error: Any = None) -> None:
        """Set the trial's status (and record an error)."""
        if self.trial is None:
            self._statuses.append((status, error))
        else:
            self._write(self.protocol.set_trial_status, self.trial, status, error=error)

    def _write(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._busy = True
        try:
            return method(*args, **kwargs)
        finally:
            self._busy = False
            if self._term_pending:
                self._raise_pending()

    @contextmanager
    def chrono(
        self,
        name: str,
        aggregator: Callable[[], Aggregator] = CHRONO_AGGREGATOR,
        start_callback: Callable[[], Any] | None = None,
        end_callback: Callable[[], Any] | None = None,
    ) -> Iterator[Aggregator]:
        """Time the ``with`` block into the chrono ``name`` (the first observation is skipped by default).

        ``with logger.chrono("batch") as t`` gives the timer, as track did: an aggregator of this process's
        observations of ``name`` (``t.avg``, ``t.sd``, ``t.total``, ``t.count``), updated when the block ends
        without an exception, and what :meth:`show_eta` takes. A trial waiting for its parameters is timed here
        and the observation written when the trial is created.
        """
        timer = self.timers.get(name)
        if timer is None:
            timer = self.timers[name] = aggregator()
        if self.trial is None:  # timed here, written when the trial is created
            spec = aggregator().spec()
            ChronoObservation(name, 0.0, spec)  # checks the name now
            if start_callback is not None:
                start_callback()
            t0 = time.perf_counter()
            ok = False
            try:
                yield timer
                ok = True
            finally:
                if end_callback is not None:
                    end_callback()
                seconds = time.perf_counter() - t0
                if ok:
                    timer.append(seconds)
                observation = ChronoObservation(name, seconds, spec)
                if self.trial is None:
                    self._chronos.append(observation)
                else:
                    self.protocol.update_trial(self.trial.uid, TrialUpdate(chronos=(observation,)))
            return
        trial = self.trial
        self.protocol.log_trial_chrono_start(trial, name, aggregator, start_callback, end_callback)
        exc_info: tuple[Any, Any, Any] = (None, None, None)
        started = time.perf_counter()
        try:
            yield timer
        except BaseException:
            exc_info = sys.exc_info()
            raise
        finally:
            if exc_info[0] is None:
                timer.append(time.perf_counter() - started)
            self.protocol.log_trial_chrono_finish(trial, name, *exc_info)

    get_device = staticmethod(get_device)

    def capture_output(self, output_size: int = 50) -> TrialLogger:
        """Keep the last ``output_size`` writes to stdout and stderr (they still reach the terminal).

        ``logger.stdout.raw()`` lists them, as track's did; when the logger finishes, the streams are put back
        and the kept text is recorded in the trial's metadata (``stdout``, ``stderr``; the last 64 kB each).
        """
        if self.stdout is None:
            self.stdout = RingOutput(sys.stdout, output_size)
            sys.stdout = self.stdout  # a text stream wrapping the real one
        if self.stderr is None and sys.stderr is not sys.stdout:
            self.stderr = RingOutput(sys.stderr, output_size)
            sys.stderr = self.stderr
        return self

    def _release_output(self) -> None:
        captured: dict[str, str] = {}
        for name in ("stdout", "stderr"):
            ring: RingOutput | None = getattr(self, name)
            if ring is None:
                continue
            if getattr(sys, name) is ring and ring.file is not None:
                setattr(sys, name, ring.file)
            captured[name] = ring.out()[-MAX_CAPTURED_CHARS:]
            setattr(self, name, None)
        if captured:
            self.protocol.log_trial_metadata(self._created(), None, **captured)

    def set_eta_total(self, total: int | Sequence[int]) -> TrialLogger:
        """Set the number of iterations :meth:`show_eta` counts down (one count per nested loop)."""
        self.eta.set_totals(total)
        return self

    def show_eta(
        self,
        step: int | Sequence[int],
        timer: Any,
        msg: str = "",
        throttle: float | None = None,
        every: int | None = None,
        no_print: bool = False,
        file: IO[str] | None = None,
    ) -> TrialLogger:
        """Print track's ETA line for ``step`` (``[ 3/10] | ETA     0.12 min <msg>``) to ``file`` (stdout).

        Args:
            step: The step just done (one index per nested loop).
            timer: The per-step timer, e.g. ``t`` from ``with logger.chrono('step') as t``.
            msg: Text appended to the line.
            throttle: Print at most once per this many seconds (fixed by the first call).
            every: Print once per this many calls (fixed by the first call).
            no_print: Print nothing.
            file: Where to print (default ``sys.stdout`` at the time of the call).
        """
        self.eta.timer = timer
        if self._eta_printer is None:
            self._eta_printer = throttled(self.eta.show_eta, throttle, every)
        if not no_print:
            self._eta_printer(step, msg, file=file)
        return self

    def log_file(self, file_name: str | os.PathLike[str], name: str | None = None) -> TrialLogger:
        """Store a file with the run as an artifact named ``name`` (default: its file name).

        Raises:
            SchemaError: the file is larger than ``MAX_ARTIFACT_BYTES`` or the name is unsafe.
            NotFoundError: the file does not exist.
        """
        path = Path(file_name)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"No file {path} to log as an artifact.", path=str(path)) from exc
        log_artifacts(
            self.protocol, self._created(), {check_artifact_name(path.name if name is None else name): data}
        )
        return self

    def log_directory(
        self, name: str | os.PathLike[str], recursive: bool = False, prefix: str | None = None
    ) -> TrialLogger:
        """Store the files of folder ``name`` as artifacts ``<folder name>/<relative path>``.

        Hidden files and folders (``.git``) are left out; with ``recursive`` sub-folders are included.

        Raises:
            SchemaError: a file is larger than ``MAX_ARTIFACT_BYTES``, or all of them than ``MAX_DIRECTORY_BYTES``.
            NotFoundError: the folder does not exist.
        """
        folder = Path(name)
        if not folder.is_dir():
            raise NotFoundError(f"No folder {folder} to log as artifacts.", path=str(folder))
        base = prefix if prefix is not None else folder.resolve().name
        pattern = "**/*" if recursive else "*"
        files: dict[str, bytes] = {}
        total = 0
        for path in sorted(folder.glob(pattern)):
            relative = path.relative_to(folder)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            data = path.read_bytes()
            total += len(data)
            if total > MAX_DIRECTORY_BYTES:
                raise SchemaError(
                    f"{folder} holds more than {MAX_DIRECTORY_BYTES:,} bytes; log fewer files (log_file) or a "
                    "sub-folder.",
                    path=str(folder),
                )
            files[check_artifact_name(f"{base}/{relative.as_posix()}")] = data
        if files:
            log_artifacts(self.protocol, self._created(), files)
        return self

    def log_code(self, file_name: str | os.PathLike[str] | None = None) -> TrialLogger:
        """Store the source of the running script (or ``file_name``) as the artifact ``code/<file name>``.

        The text is also kept in :attr:`code`, as track kept it.
        """
        if file_name is None:
            main = sys.modules.get("__main__")
            file_name = getattr(main, "__file__", None)
            if not file_name:
                raise NotFoundError(
                    "The running program has no script file (an interactive session?); "
                    "pass log_code(file_name=...)."
                )
        path = Path(file_name)
        data = path.read_bytes()
        self.code = data.decode("utf-8", "replace")
        log_artifacts(self.protocol, self._created(), {check_artifact_name(f"code/{path.name}"): data})
        return self

    def artifacts(self) -> dict[str, int]:
        """``{name: size}`` of the trial's artifacts."""
        return list_artifacts(self.protocol, self._created())

    def read_artifact(self, name: str) -> bytes:
        """The bytes of one artifact (checked against its checksum; never executed or unpickled)."""
        return read_artifact(self.protocol, self._created(), name)

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Mark the trial running: record this process, start its heartbeat and its runtime timer.

        SIGTERM is handled while it runs (when nothing else handles it): the run records ``interrupted``, then
        the process ends as the signal would have ended it. A trial waiting for its parameters starts when
        they arrive.
        """
        if self._started:
            return
        self._started = True
        _RUNNING.add(self)
        self._catch_sigterm()
        if self.trial is not None:
            try:
                self._begin()
            except BaseException:  # the backend refused: not started, nothing left to finish at exit
                self._started = False
                _RUNNING.discard(self)
                self._restore_sigterm()
                raise

    def _begin(self) -> None:
        """Write the process record and the running status, then beat."""
        trial = self._created()
        interval = heartbeat_interval_s()
        now = time.time()
        # The process first, the status second: a crash in between leaves a trial that never looked running.
        self.protocol.update_trial(
            trial.uid, TrialUpdate(metadata={PROCESS_KEY: process_record(interval), HEARTBEAT_KEY: now})
        )
        self.protocol.log_trial_start(trial)
        _RUNNING.add(self)  # again, after the first writes (see _Running.add)
        uid, protocol = trial.uid, self.protocol
        self._heartbeat = HeartbeatThread(
            lambda at: protocol.update_trial(uid, TrialUpdate(metadata={HEARTBEAT_KEY: at})),
            interval,
            name=f"unitrack-heartbeat-{uid[:8]}",
        ).start()
        if self.system_metrics is not None and self._sampler is None:
            self._sampler = start_trial_sampler(protocol, uid, self.system_metrics, metrics=trial.metrics)

    def finish(self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None) -> None:
        """Mark the trial completed, or failed with the given exception (``interrupted`` for Ctrl-C/SIGTERM).

        A trial still waiting for its parameters is created without them, so nothing logged is lost.
        """
        if not self._started:
            self.start()
        if self.trial is None:
            self._create_without_parameters("finished")
        self._started = False
        _RUNNING.discard(self)
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()
        if self._heartbeat is not None:
            self._heartbeat.stop()  # before the final status: no beat lands after it
            self._heartbeat = None
        try:
            self._release_output()
            self.protocol.log_trial_finish(self._created(), exc_type, exc_val, exc_tb)
        finally:
            self._restore_sigterm()

    def _finish_at_exit(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        if self._started:
            self.finish(exc_type, exc_val, exc_tb)

    def __enter__(self) -> TrialLogger:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        owned = self._previous_handler is not None
        self.finish(exc_type, exc_val, exc_tb)
        if owned and isinstance(exc_val, Terminated):
            # Nobody else handled SIGTERM: end the process as the signal would have, now that the run is recorded.
            raise SystemExit(128 + exc_val.signum) from exc_val

    # ---------------------------------------------------------------------------------------- signals
    def _catch_sigterm(self) -> None:
        if not self.catch_sigterm or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            return  # another handler (the program's, a framework's, another run's) decides
        self._handler_pid = os.getpid()
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _restore_sigterm(self) -> None:
        previous, self._previous_handler = self._previous_handler, None
        if previous is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._handler_pid or not self._started:
            # A process forked by the run (a data-loading worker) is not the run, and a run that has finished
            # has nothing to record (a framework that stacked its own handler on ours puts ours back after our
            # run ended): the process ends as the signal says.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self._busy:
            self._term_pending = signum
            return
        raise _terminated(signum)

    def _raise_pending(self) -> None:
        signum, self._term_pending = self._term_pending, 0
        raise _terminated(signum)


def _terminated(signum: int) -> Terminated:
    exc = Terminated(f"received signal {signum}")
    exc.signum = signum
    return exc


def _insert_trial(protocol: Protocol, trial: Trial, resume: bool) -> Trial:
    """Store ``trial`` as a new run (a new revision when an identical one exists), or with ``resume`` continue
    the newest revision of the identical trial (created when there is none)."""
    if resume:
        found = protocol.fetch_trials({"hash": trial.hash})
        if found:
            newest = max(found, key=lambda t: t.revision)
            logger.info("resuming trial %s", newest.uid)
            return newest
    stored = protocol.new_trial(trial, auto_increment=True)
    if stored is None:  # pragma: no cover - auto_increment always inserts
        raise NotFoundError(f"The backend did not store trial {trial.name!r}.")
    return stored


class TrackClient:
    """Choose a project, group and trial, then log to the trial (track's ``TrackClient``).

    Args:
        backend: a URI (default: ``$UNITRACK_URI``, then the embedded default) or a Protocol.
        system_metrics: sample system metrics into the trial's ``sys/...`` series every so many seconds while
            it runs (``True``: 10 s; None: ``$UNITRACK_SYSTEM_METRICS``, else never); see :class:`TrialLogger`.

    Unknown attributes are forwarded to the current :class:`TrialLogger` (``client.log_metrics(...)``).
    ``$UNITRACK_PROJECT``, ``$UNITRACK_GROUP`` and ``$UNITRACK_TRIAL_ID`` pre-select the project, group and the
    trial to continue.
    """

    get_device = staticmethod(get_device)

    def __init__(
        self, backend: str | Protocol | None = None, *, system_metrics: float | bool | None = None
    ) -> None:
        self.system_metrics = system_metrics_interval(system_metrics)  # checked before anything is opened
        self.protocol: Protocol = backend if isinstance(backend, Protocol) else get_protocol(backend)
        self.project: Project | None = None
        self.group: TrialGroup | None = None
        self.logger: TrialLogger | None = None
        self.version: str | None = None
        # UNITRACK_* first, then what orion sets for the trials it runs (track read those).
        project, group, trial = (
            _env(PROJECT_ENV, ORION_PROJECT_ENV),
            _env(GROUP_ENV, ORION_GROUP_ENV),
            _env(TRIAL_ENV, ORION_TRIAL_ENV),
        )
        if project:
            self.set_project(name=project)
        if group:
            self.set_group(name=group)
        if trial:
            self.set_trial(uid=trial)

    @property
    def trial(self) -> Trial | None:
        """The current trial (a snapshot; see :meth:`TrialLogger.refresh`); None until it is created."""
        return self.logger.trial if self.logger is not None else None

    def set_version(self, version: str | None = None, version_fun: Callable[[], str] | None = None) -> None:
        """Set the code version recorded in new trials (part of their hash)."""
        self.version = version_fun() if version_fun is not None else version

    def set_project(
        self, project: Project | str | None = None, force: bool = False, get_only: bool = False, **kwargs: Any
    ) -> Project:
        """Select (creating it unless ``get_only``) the project; kwargs are Project fields (``name=``...).

        Raises:
            NotFoundError: with ``get_only`` when it does not exist.
        """
        if self.project is not None and not force:
            return self.project
        if isinstance(project, str):
            kwargs.setdefault("name", project)
            project = None
        wanted = project if project is not None else Project(**kwargs)
        found = self.protocol.get_project(wanted)
        if found is None:
            if get_only:
                raise NotFoundError(f"Project {wanted.uid!r} does not exist (get_only=True).")
            found = self.protocol.new_project(wanted)
        self.project = found
        return found

    def set_group(
        self,
        group: TrialGroup | str | None = None,
        force: bool = False,
        get_only: bool = False,
        **kwargs: Any,
    ) -> TrialGroup:
        """Select (creating it unless ``get_only``) a group of the current project.

        Raises:
            NotFoundError: with ``get_only`` when it does not exist.
        """
        if self.group is not None and not force:
            return self.group
        if isinstance(group, str):
            kwargs.setdefault("name", group)
            group = None
        if group is None:
            kwargs.setdefault("project_id", self._project().uid)
            group = TrialGroup(**kwargs)
        found = self.protocol.get_trial_group(group)
        if found is None:
            if get_only:
                raise NotFoundError(f"Group {group.name!r} does not exist (get_only=True).")
            self.protocol.new_trial_group(group)
            found = self.protocol.get_trial_group(group)
            if found is None:  # pragma: no cover - only if another process deleted it in between
                raise NotFoundError(f"Group {group.name!r} vanished while being created; retry.")
        self.group = found
        return found

    def _project(self) -> Project:
        if self.project is None:
            return self.set_project(name="orphan")
        return self.project

    def set_trial(self, trial: Trial | None = None, force: bool = False, **kwargs: Any) -> TrialLogger:
        """Continue an existing trial, given as an object or ``uid=`` / ``hash=`` and ``revision=``.

        Raises:
            TrialDoesNotExist: (a NotFoundError) when it does not exist.
        """
        if self.logger is not None and not force:
            return self.logger
        if trial is not None:
            uid = trial.uid
        elif "uid" in kwargs:
            uid = str(kwargs["uid"])
        elif "hash" in kwargs:
            uid = f"{kwargs['hash']}_{int(kwargs.get('revision', 0))}"
        else:
            raise SchemaError("set_trial needs a Trial, uid= or hash= (with revision=).")
        found = self.protocol.fetch_trials({"uid": uid})
        if not found:
            raise TrialDoesNotExist(uid)
        self.logger = TrialLogger(found[0], self.protocol, self.system_metrics or False)
        return self.logger

    def new_trial(self, force: bool = False, *, resume: bool = False, **kwargs: Any) -> TrialLogger:
        """Start a new run in the current project/group and make it the current trial.

        kwargs are Trial fields; ``arguments=`` is an alias of ``parameters=``, and either may be a dict, an
        ``argparse.Namespace`` or an ``ArgumentParser``. A trial identical to a stored one (same name, version
        and parameters) is stored as its next revision: every execution is its own run. ``resume=True``
        continues the newest revision instead (the run is created when there is none). ``force`` is accepted for
        track compatibility: a new trial always replaces the current one.

        Without parameters the returned logger waits for :meth:`log_arguments` to create the trial (its hash
        covers them); what is logged meanwhile is kept for it.
        """
        del force  # track's "replace a trial already set": new_trial always does
        if "arguments" in kwargs:
            if "parameters" in kwargs:
                raise SchemaError(
                    "new_trial got both arguments= and parameters=; they are the same, pass one."
                )
            kwargs["parameters"] = kwargs.pop("arguments")
        kwargs.setdefault("version", self.version)
        kwargs.setdefault("project_id", self._project().uid)
        if self.group is not None:
            kwargs.setdefault("group_id", self.group.uid)
        parameters = kwargs.pop("parameters", None)
        log = TrialLogger._delayed(self.protocol, kwargs, resume, self.system_metrics or False)
        if parameters is not None:
            log.log_arguments(as_parameters(parameters))
        self.logger = log
        return log

    def log_arguments(self, args: Any = None, show: bool = False, **kwargs: Any) -> Any:
        """Record parameters from a dict, an argparse Namespace or ArgumentParser (parsed), or keywords.

        Creates the trial a :meth:`new_trial` without parameters waits for. Returns ``args`` (parsed, for a
        parser).
        """
        if isinstance(args, argparse.ArgumentParser):
            args = args.parse_args()
        values = {**as_parameters(args, "log_arguments' argument"), **kwargs}
        self._logger().log_arguments(values)
        if show:
            self.show_arguments(values)
        return args if args is not None else values

    get_arguments = log_arguments

    @staticmethod
    def show_arguments(values: Mapping[str, Any], file: IO[str] | None = None) -> None:
        """Write the parameters as an aligned two-column table (to stdout by default)."""
        out = file if file is not None else sys.stdout
        width = max((len(k) for k in values), default=0)
        for key, value in values.items():
            out.write(f"{key:<{width}} : {value}\n")

    def _logger(self) -> TrialLogger:
        if self.logger is None:
            raise NotFoundError("No trial selected; call new_trial() or set_trial() first.")
        return self.logger

    def add_tags(self, **kwargs: Any) -> None:
        """Merge tags into the current trial (kept for it while it waits for its parameters)."""
        self._logger().add_tags(**kwargs)

    def start(self) -> None:
        """Mark the current trial running."""
        self._logger().start()

    def finish(self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None) -> None:
        """Mark the current trial finished (or failed with the given exception)."""
        self._logger().finish(exc_type, exc_val, exc_tb)

    def save(self, file_name_override: str | None = None) -> None:
        """Commit the backend (``file_name_override`` is passed to backends that write a file)."""
        if file_name_override is not None:
            self.protocol.commit(file_name_override=file_name_override)
        else:
            self.protocol.commit()

    def report(self, short: bool = True, file: IO[str] | None = None) -> str:
        """Finish the trial, write its JSON to ``file`` (stdout by default) and return that JSON."""
        log = self._logger()
        if log._started:
            log.finish()
        if log.trial is None:
            log._create_without_parameters("was reported")
        text = json.dumps(to_json(log.refresh(), short=short), indent=2, default=str)
        (file if file is not None else sys.stdout).write(text + "\n")
        return text

    def close(self) -> None:
        """Close the backend."""
        self.protocol.close()

    def __enter__(self) -> TrackClient:
        self._logger().__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._logger().__exit__(exc_type, exc_val, exc_tb)

    def __repr__(self) -> str:
        parts = [_backend_text(self.protocol)]
        if self.project is not None:
            parts.append(f"project={self.project.name!r}")
        if self.group is not None:
            parts.append(f"group={self.group.name!r}")
        if self.logger is not None:
            parts.append(f"trial={self.logger.trial!r}")
        return f"TrackClient({', '.join(parts)})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("protocol", "logger", "project", "group", "system_metrics"):
            raise AttributeError(name)
        return getattr(self._logger(), name)


def _backend_text(protocol: Protocol) -> str:
    """The backend's URI without its password, else its class name."""
    uri = getattr(protocol, "uri", None)
    redacted = getattr(uri, "redacted", None)
    return str(redacted()) if callable(redacted) else type(protocol).__name__
