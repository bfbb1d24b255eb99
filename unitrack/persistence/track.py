"""track's user API: ``TrackClient`` (project, group, trial) and ``TrialLogger`` (what one run logs).

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
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
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
from unitrack.persistence.protocol import CHRONO_AGGREGATOR, Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.serialization import to_json
from unitrack.persistence.structure import Project, StatusLike, Trial, TrialGroup

__all__ = ["TrackClient", "TrialDoesNotExist", "TrialLogger", "get_device"]

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


class TrialLogger:
    """Log to one trial through a Protocol. A context manager: entering starts the trial, leaving finishes it
    (``Completed``, or ``Exception``/``Interrupted`` with the error recorded; the exception is not swallowed).
    """

    def __init__(self, trial: Trial, protocol: Protocol) -> None:
        self.trial = trial
        self.protocol = protocol
        self._started = False
        #: The in-process timer of each ``chrono`` name (what ``with logger.chrono(name) as t`` gives).
        self.timers: dict[str, Aggregator] = {}
        self.eta = EstimatedTime(None, 1)
        self._eta_printer: Callable[..., None] | None = None
        self.stdout: RingOutput | None = None
        self.stderr: RingOutput | None = None
        self.code: str | None = None

    @property
    def uid(self) -> str:
        """The trial's uid."""
        return self.trial.uid

    def refresh(self) -> Trial:
        """Read the trial back from the backend (the object held here is a snapshot)."""
        found = [t for t in self.protocol.get_trial(self.trial) if t.uid == self.trial.uid]
        if not found:
            raise NotFoundError(f"Trial {self.trial.uid} is no longer in the backend.")
        self.trial = found[0]
        return self.trial

    def log_arguments(self, **kwargs: Any) -> None:
        """Merge parameters into the trial."""
        self.protocol.log_trial_arguments(self.trial, **kwargs)

    def log_metrics(
        self, step: Any = None, aggregator: Callable[[], Aggregator] | None = None, **kwargs: Any
    ) -> None:
        """Append metric values (at ``step``); starts the trial on first use."""
        if not self._started:
            self.start()
        self.protocol.log_trial_metrics(self.trial, step=step, aggregator=aggregator, **kwargs)

    def log_metadata(self, aggregator: Callable[[], Aggregator] | None = None, **kwargs: Any) -> None:
        """Merge metadata into the trial."""
        self.protocol.log_trial_metadata(self.trial, aggregator=aggregator, **kwargs)

    def add_tags(self, **kwargs: Any) -> None:
        """Merge tags into the trial."""
        self.protocol.add_trial_tags(self.trial, **kwargs)

    def set_status(self, status: StatusLike | str, error: Any = None) -> None:
        """Set the trial's status (and record an error)."""
        self.protocol.set_trial_status(self.trial, status, error=error)

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
        without an exception, and what :meth:`show_eta` takes.
        """
        timer = self.timers.get(name)
        if timer is None:
            timer = self.timers[name] = aggregator()
        self.protocol.log_trial_chrono_start(self.trial, name, aggregator, start_callback, end_callback)
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
            self.protocol.log_trial_chrono_finish(self.trial, name, *exc_info)

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
            self.protocol.log_trial_metadata(self.trial, None, **captured)

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
            self.protocol, self.trial, {check_artifact_name(path.name if name is None else name): data}
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
            log_artifacts(self.protocol, self.trial, files)
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
        log_artifacts(self.protocol, self.trial, {check_artifact_name(f"code/{path.name}"): data})
        return self

    def artifacts(self) -> dict[str, int]:
        """``{name: size}`` of the trial's artifacts."""
        return list_artifacts(self.protocol, self.trial)

    def read_artifact(self, name: str) -> bytes:
        """The bytes of one artifact (checked against its checksum; never executed or unpickled)."""
        return read_artifact(self.protocol, self.trial, name)

    def start(self) -> None:
        """Mark the trial running and start its runtime timer."""
        if not self._started:
            self._started = True
            self.protocol.log_trial_start(self.trial)

    def finish(self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None) -> None:
        """Mark the trial completed, or failed with the given exception."""
        if not self._started:
            self.start()
        self._started = False
        self._release_output()
        self.protocol.log_trial_finish(self.trial, exc_type, exc_val, exc_tb)

    def __enter__(self) -> TrialLogger:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.finish(exc_type, exc_val, exc_tb)


class TrackClient:
    """Choose a project, group and trial, then log to the trial (track's ``TrackClient``).

    Args:
        backend: a URI (default: ``$UNITRACK_URI``, then the embedded default) or a Protocol.

    Unknown attributes are forwarded to the current :class:`TrialLogger` (``client.log_metrics(...)``).
    """

    get_device = staticmethod(get_device)

    def __init__(self, backend: str | Protocol | None = None) -> None:
        self.protocol: Protocol = backend if isinstance(backend, Protocol) else get_protocol(backend)
        self.project: Project | None = None
        self.group: TrialGroup | None = None
        self.logger: TrialLogger | None = None
        self.version: str | None = None
        self._pending: dict[str, Any] | None = None
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
        """The current trial (a snapshot; see :meth:`TrialLogger.refresh`)."""
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
            assert found is not None  # just inserted
        self.group = found
        return found

    def _project(self) -> Project:
        if self.project is None:
            self.set_project(name="orphan")
        assert self.project is not None
        return self.project

    def set_trial(self, trial: Trial | None = None, force: bool = False, **kwargs: Any) -> TrialLogger:
        """Select an existing trial, by object or ``uid=`` / ``hash=`` and ``revision=``.

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
        self.logger = TrialLogger(found[0], self.protocol)
        return self.logger

    def new_trial(self, force: bool = False, **kwargs: Any) -> TrialLogger | None:
        """Create a trial in the current project/group (kwargs are Trial fields; ``arguments=`` is an alias of
        ``parameters=``).

        Without parameters the trial is created when :meth:`log_arguments` supplies them (its hash covers
        them) and None is returned. An identical trial is resumed, or with ``force`` gets a new revision.
        """
        if "arguments" in kwargs:
            kwargs["parameters"] = kwargs.pop("arguments")
        kwargs.setdefault("version", self.version)
        kwargs.setdefault("project_id", self._project().uid)
        if self.group is not None:
            kwargs.setdefault("group_id", self.group.uid)
        if "parameters" not in kwargs:
            self._pending = {"force": force, **kwargs}
            self.logger = None
            return None
        return self._create(force, kwargs)

    def _create(self, force: bool, fields: dict[str, Any]) -> TrialLogger:
        trial = Trial(**fields)
        stored = self.protocol.new_trial(trial, auto_increment=force)
        if stored is None:
            stored = [t for t in self.protocol.get_trial(trial) if t.uid == trial.uid][0]
            logger.info("trial %s exists; resuming it", stored.uid)
        self.logger = TrialLogger(stored, self.protocol)
        self._pending = None
        return self.logger

    def log_arguments(self, args: Any = None, show: bool = False, **kwargs: Any) -> Any:
        """Record parameters from a dict, an argparse Namespace or ArgumentParser (parsed), or keywords.

        Creates a trial delayed by :meth:`new_trial`. Returns ``args`` (parsed, for a parser).
        """
        if isinstance(args, argparse.ArgumentParser):
            args = args.parse_args()
        if args is None:
            values: dict[str, Any] = {}
        elif isinstance(args, argparse.Namespace):
            values = dict(vars(args))
        elif isinstance(args, Mapping):
            values = dict(args)
        else:
            raise SchemaError(
                f"log_arguments takes a dict, Namespace or ArgumentParser, not {type(args).__name__}."
            )
        values.update(kwargs)
        if self._pending is not None:
            pending = dict(self._pending)
            force = pending.pop("force")
            pending["parameters"] = values
            self._create(force, pending)
        else:
            self._logger().log_arguments(**values)
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
            if self._pending is not None:  # logging before parameters: create it with none
                pending = dict(self._pending)
                force = pending.pop("force")
                pending["parameters"] = {}
                return self._create(force, pending)
            raise NotFoundError("No trial selected; call new_trial() or set_trial() first.")
        return self.logger

    def add_tags(self, **kwargs: Any) -> None:
        """Merge tags into the current trial."""
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
        text = json.dumps(to_json(log.refresh(), short=short), indent=2, default=str)
        (file if file is not None else sys.stdout).write(text + "\n")
        return text

    def close(self) -> None:
        """Close the backend."""
        self.protocol.close()

    def __enter__(self) -> TrackClient:
        self._logger().start()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self._logger().finish(exc_type, exc_val, exc_tb)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("protocol", "logger", "project", "group"):
            raise AttributeError(name)
        return getattr(self._logger(), name)
