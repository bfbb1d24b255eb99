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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from unitrack.errors import NotFoundError, SchemaError
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.protocol import CHRONO_AGGREGATOR, Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.serialization import to_json
from unitrack.persistence.structure import Project, StatusLike, Trial, TrialGroup
from unitrack.persistence.system import SystemSampler, start_trial_sampler, system_metrics_interval

__all__ = ["TrackClient", "TrialLogger"]

logger = logging.getLogger(__name__)

#: Environment variables that pre-select the project, group and trial (track used ORION_*).
PROJECT_ENV, GROUP_ENV, TRIAL_ENV = "UNITRACK_PROJECT", "UNITRACK_GROUP", "UNITRACK_TRIAL_ID"


class TrialLogger:
    """Log to one trial through a Protocol. A context manager: entering starts the trial, leaving finishes it
    (``Completed``, or ``Exception``/``Interrupted`` with the error recorded; the exception is not swallowed).

    ``system_metrics`` (seconds, ``True`` for 10, None for ``$UNITRACK_SYSTEM_METRICS``) samples CPU, memory,
    disk, network and GPU use into ``sys/...`` metric series while the trial runs
    (:mod:`unitrack.persistence.system`).
    """

    def __init__(self, trial: Trial, protocol: Protocol, system_metrics: float | bool | None = None) -> None:
        self.trial = trial
        self.protocol = protocol
        self._started = False
        self.system_metrics = system_metrics_interval(system_metrics)
        self._sampler: SystemSampler | None = None

    def __repr__(self) -> str:
        return f"TrialLogger({self.trial!r}, backend={_backend_text(self.protocol)})"

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
    ) -> Iterator[None]:
        """Time the ``with`` block into the chrono ``name`` (the first observation is skipped by default)."""
        self.protocol.log_trial_chrono_start(self.trial, name, aggregator, start_callback, end_callback)
        exc_info: tuple[Any, Any, Any] = (None, None, None)
        try:
            yield
        except BaseException:
            exc_info = sys.exc_info()
            raise
        finally:
            self.protocol.log_trial_chrono_finish(self.trial, name, *exc_info)

    def start(self) -> None:
        """Mark the trial running and start its runtime timer."""
        if not self._started:
            self._started = True
            self.protocol.log_trial_start(self.trial)
            if self.system_metrics is not None and self._sampler is None:
                self._sampler = start_trial_sampler(
                    self.protocol, self.trial.uid, self.system_metrics, metrics=self.trial.metrics
                )

    def finish(self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None) -> None:
        """Mark the trial completed, or failed with the given exception."""
        if not self._started:
            self.start()
        self._started = False
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()
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
        system_metrics: sample system metrics into the trial's ``sys/...`` series every so many seconds while
            it runs (``True``: 10 s; None: ``$UNITRACK_SYSTEM_METRICS``, else never); see :class:`TrialLogger`.

    Unknown attributes are forwarded to the current :class:`TrialLogger` (``client.log_metrics(...)``).
    """

    def __init__(
        self, backend: str | Protocol | None = None, *, system_metrics: float | bool | None = None
    ) -> None:
        self.system_metrics = system_metrics_interval(system_metrics)  # checked before anything is opened
        self.protocol: Protocol = backend if isinstance(backend, Protocol) else get_protocol(backend)
        self.project: Project | None = None
        self.group: TrialGroup | None = None
        self.logger: TrialLogger | None = None
        self.version: str | None = None
        self._pending: dict[str, Any] | None = None
        if os.environ.get(PROJECT_ENV):
            self.set_project(name=os.environ[PROJECT_ENV])
        if os.environ.get(GROUP_ENV):
            self.set_group(name=os.environ[GROUP_ENV])
        if os.environ.get(TRIAL_ENV):
            self.set_trial(uid=os.environ[TRIAL_ENV])

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
            NotFoundError: when it does not exist.
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
            raise NotFoundError(f"Trial {uid!r} does not exist.")
        self.logger = TrialLogger(found[0], self.protocol, self.system_metrics or False)
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
        self.logger = TrialLogger(stored, self.protocol, self.system_metrics or False)
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
