"""An Experiment IS a Trial: write an experiment's lifecycle through the persistence ``Protocol``.

Mapping (DESIGN.md §2, SEED_NOTES C24–C26):

- **Project**: ``$UNITRACK_PROJECT``, else ``default``.
- **TrialGroup**: the experiment's root folder (the parent of ``{root}/{name}``). In the root's own backend (the
  default) it is named after the root's folder and found by a mark, so nothing records where the root is and a
  copied or moved root keeps its runs; in a backend shared by many roots it is named by the root's absolute path
  with the separators replaced by ``:`` (``/runs/lr`` → ``runs:lr``; see :func:`group_name`), so two roots with
  the same basename never share a group (see :func:`experiment_group`).
- **Trial**: name = the experiment folder's name, parameters = the ``@p`` parameters, version = the git commit
  (else ``module:Class``), description = purpose; tags = notes, user and host; metadata = messages (the kept
  values), timestamps, version, meta (never the environment), the xmen status string and the folder.
- **Status** (C25): registered → ``CustomStatus('registered', 1)``, running → Running, finished → Completed,
  error → Exception, stopped → Interrupted, timeout/requeue/deleted → custom; default/detached/debug are not
  persisted.
- **Liveness**: while the experiment runs (``with ex:``) its trial holds this process (``metadata["process"]``)
  and a heartbeat, so a run whose process died is listed as ``lost``
  (:func:`unitrack.persistence.lifecycle.run_status`).
- **Messages** (C26): every numeric message value is appended to the trial's metric series (step = the step
  passed in, else a per-trial counter) in the same write that stores the kept values in ``metadata['messages']``
  — one atomic, durable write per ``message()``.

The backend is ``get_protocol(resolve_uri(uri, root))``: an explicit URI, then ``$UNITRACK_URI``, then the
embedded default at the experiment's root.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from unitrack.persistence.catalog import remember_root
from unitrack.persistence.lifecycle import (
    HEARTBEAT_KEY,
    PROCESS_KEY,
    HeartbeatThread,
    heartbeat_interval_s,
    process_record,
)
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol, resolve_uri
from unitrack.persistence.structure import (
    MAX_NAME_CHARS,
    CustomStatus,
    Project,
    Status,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
)

__all__ = [
    "PROJECT_ENV",
    "TrialLink",
    "embedded_at",
    "experiment_group",
    "group_name",
    "holds_run",
    "newest_trial",
    "project_name",
    "to_status",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the project experiments are filed under.
PROJECT_ENV = "UNITRACK_PROJECT"

_STATUS: dict[str, StatusLike] = {
    "registered": CustomStatus("registered", 1),
    "running": Status.Running,
    "finished": Status.Completed,
    "error": Status.Exception,
    "stopped": Status.Interrupted,
    "timeout": CustomStatus("timeout", 204),
    "requeue": CustomStatus("requeue", 205),
    "deleted": CustomStatus("deleted", 303),
}


def to_status(xmen_status: str) -> StatusLike | None:
    """The track status for an xmen status string; None for those never persisted (default, detached, debug)."""
    return _STATUS.get(xmen_status)


def project_name() -> str:
    """``$UNITRACK_PROJECT`` or ``'default'``."""
    return os.environ.get(PROJECT_ENV) or "default"


def group_name(root: str | os.PathLike[str]) -> str:
    """Name the group of experiments in folder ``root``: its absolute path with separators replaced by ``:``.

    Paths longer than the name limit keep their last 200 characters and a hash of the whole path.

    Example:
        >>> group_name("/runs/lr-sweep")
        'runs:lr-sweep'
    """
    path = os.path.abspath(os.fspath(root))
    name = path.replace(os.sep, ":").replace("\\", ":").strip(":") or ":"
    if len(name) > MAX_NAME_CHARS:
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]
        name = f"{digest}~{name[-200:]}"
    return name


def embedded_at(uri: str, root: str | os.PathLike[str]) -> bool:
    """Whether backend ``uri`` is the one inside ``root`` itself (``hdf5://ROOT``, the default): it then moves and
    is copied with the root."""
    from unitrack.persistence.uri import as_uri

    parsed = as_uri(uri)
    if parsed.scheme not in ("hdf5", "cox") or not parsed.file_path:
        return False
    here = os.path.realpath(os.path.expanduser(parsed.file_path))
    return here == os.path.realpath(os.fspath(root))


#: Group metadata marking the group of a root's experiments inside the root's own backend.
ROOT_GROUP = "experiment_root"


def experiment_group(protocol: Protocol, root: str | os.PathLike[str], uri: str | None = None) -> TrialGroup:
    """The group of the experiments in folder ``root``, in project :func:`project_name`; both are created when
    missing.

    In the root's own backend (``uri``, by default the protocol's own, is ``hdf5://ROOT``) the group records
    nothing of where the root is: it is named after the root's folder when first made and found again by a mark
    in its metadata, so a root copied (``cp -r``) or moved (``mv``, ``unitrack move``) keeps its runs whole. A group of a root written
    before roots were relocatable (named by its absolute path, :func:`group_name`) is adopted and marked. In a
    backend shared by many roots the group is named by the root's absolute path, which the backend (not the
    root) records.
    """
    if uri is None:  # the protocol knows where it is (a backend opened by the caller)
        where: Any = getattr(protocol, "uri", None)
        to_uri = getattr(where, "to_uri", None)
        uri = str(to_uri()) if callable(to_uri) else where if isinstance(where, str) else None
    project = protocol.new_project(Project(name=project_name()))
    if uri is not None and embedded_at(uri, root):
        group = _root_group(protocol, project.uid, root)
    else:
        group = TrialGroup(name=group_name(root), project_id=project.uid)
        protocol.new_trial_group(group)  # None when it exists: fine, it is the same group
    remember_root(root)  # GlobalExperimentManager() finds the experiments registered here
    return group


def _root_group(protocol: Protocol, project_id: str, root: str | os.PathLike[str]) -> TrialGroup:
    groups = protocol.fetch_groups({"project_id": project_id})
    for group in groups:
        if group.metadata.get(ROOT_GROUP):
            return group
    legacy = [g for g in groups if g.name == group_name(root)] or [
        g for g in groups if ":" in (g.name or "") and g.trials
    ]
    if len(legacy) == 1:  # an older root: its group was named by the path it had then
        protocol.set_group_metadata(legacy[0], **{ROOT_GROUP: True})
        return legacy[0]
    name = os.path.basename(os.path.abspath(os.fspath(root))) or "root"
    group = TrialGroup(name=name, project_id=project_id, metadata={ROOT_GROUP: True})
    protocol.new_trial_group(group)  # None when another process made it first: the same group (same name)
    return group


def holds_run(directory: str | os.PathLike[str]) -> bool:
    """Whether a folder already holds an experiment (its params.yml) or a run of any backend (a trial's summary,
    a cox store): a new registration must not share it, or its results would be filed under another name.

    Example:
        >>> holds_run("/nonexistent/folder")
        False
    """
    # Imported here: the default backend's modules load when an experiment registers, not with the package.
    from unitrack.persistence.backends.hdf5 import SUMMARY as TRIAL_SUMMARY
    from unitrack.store.contents import is_store_dir

    path = os.fspath(directory)
    return (
        os.path.exists(os.path.join(path, "params.yml"))
        or os.path.exists(os.path.join(path, TRIAL_SUMMARY))
        or is_store_dir(path)
    )


def newest_trial(protocol: Protocol, group: TrialGroup, name: str) -> Trial | None:
    """The trial called ``name`` in ``group`` created last (the experiment now in ``{root}/{name}``).

    A database keeps the trial of an experiment whose folder was deleted; one registered again under that name is
    a later trial (``fetch_trials`` lists trials in the order they were created), whatever its revision.
    """
    found = protocol.fetch_trials({"group_id": group.uid, "name": name})
    return found[-1] if found else None


class TrialLink:
    """The trial of one registered experiment in one backend.

    Args:
        uri: backend URI (None: ``$UNITRACK_URI``, then the default at ``root``).
        root: the folder holding the experiment folder (the group).
        name: the experiment folder's name (the trial name).
        parameters, version, description, metadata, tags: the trial's fields.
        status: the xmen status a new trial is created with (default ``registered``), in the same write.
        restart: continue the newest trial of this group with this name when there is one.

    Attributes:
        messages: the kept messages the backend holds for a continued trial (None for a new one). The backend is
            the source of truth: params.yml is refreshed about once a second and not at all after a SIGKILL, so a
            resumed experiment takes these rather than its file's.
    """

    def __init__(
        self,
        uri: str | None,
        root: str,
        name: str,
        *,
        parameters: Mapping[str, Any],
        version: str,
        description: str,
        metadata: Mapping[str, Any],
        tags: Mapping[str, Any],
        status: str = "registered",
        restart: bool = False,
    ) -> None:
        self.uri = resolve_uri(uri, root)
        self.protocol: Protocol = get_protocol(self.uri)
        self.messages: dict[str, Any] | None = None
        self._heartbeat: HeartbeatThread | None = None
        group = experiment_group(self.protocol, root, self.uri)
        trial = newest_trial(self.protocol, group, name) if restart else None
        if trial is None:
            created = self.protocol.new_trial(
                Trial(
                    name=name,
                    version=version,
                    parameters=parameters,
                    description=description,
                    project_id=group.project_id,
                    group_id=group.uid,
                    tags=tags,
                    metadata={**metadata, "status": status},
                    status=to_status(status) or Status.CreatedGroup,
                ),
                auto_increment=True,  # a folder registered again (or elsewhere) is a new revision
            )
            if created is None:  # pragma: no cover - auto_increment always inserts
                raise RuntimeError(f"backend {self.uri} did not create trial {name!r}")
            self.uid = created.uid
            self.step = 0
            return
        self.uid = trial.uid
        # A restarted trial continues its step counter, so new points never replace old ones.
        self.step = max(
            (int(s) for m in trial.metrics.values() for s in m.steps if isinstance(s, int)),
            default=0,
        )
        stored = trial.metadata.get("messages")
        if isinstance(stored, Mapping):
            self.messages = dict(stored)
            metadata = {k: v for k, v in metadata.items() if k != "messages"}
        # A restarted trial takes the parameters and purpose its params.yml holds now (edited before the run, or
        # a new purpose given with -p).
        changed = {
            k: v for k, v in parameters.items() if k not in trial.parameters or trial.parameters[k] != v
        }
        self.protocol.update_trial(
            self.uid,
            TrialUpdate(
                parameters=changed,
                metadata=metadata,
                tags=tags,
                description=description if description != trial.description else None,
            ),
        )

    def set_status(self, xmen_status: str, error: str | None = None, **metadata: Any) -> None:
        """Record a status change (and metadata such as timestamps) in one write."""
        status = to_status(xmen_status)
        metadata["status"] = xmen_status
        self.protocol.update_trial(
            self.uid,
            TrialUpdate(status=status, metadata=metadata, errors=(error,) if error else ()),
        )

    def message(self, kept: Mapping[str, Any], values: Mapping[str, Any], step: Any = None) -> None:
        """Append the numeric ``values`` to the metric series and store the ``kept`` messages, in one write."""
        counted = step is None
        if counted:
            step = self.step + 1  # taken only once the write succeeded: a refused message leaves no gap
        numbers = {k: v for k, v in values.items() if type(v) is float or (type(v) is int)}
        if len(numbers) != len(values):  # int/float subclasses (not bool) count too; str does not
            numbers = {
                k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        self.protocol.log_trial_step(self.uid, step, numbers, {"messages": kept})
        if counted:
            self.step = step

    def log_metrics(self, values: Mapping[str, Any], step: int) -> None:
        """Append one point per name at ``step`` (``log_trial_metrics``); later unstepped messages count on from it."""
        if isinstance(step, int) and step > self.step:
            self.step = step
        self.protocol.log_trial_metrics(self.uid, step=step, **values)

    def log_metadata(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the trial's metadata (``log_trial_metadata``)."""
        self.protocol.log_trial_metadata(self.uid, **values)

    def update(
        self, *, metadata: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> None:
        """Merge metadata and tags."""
        self.protocol.update_trial(self.uid, TrialUpdate(metadata=metadata or {}, tags=tags or {}))

    def start(self, **metadata: Any) -> dict[str, Any]:
        """Record status ``running`` with this process and ``metadata`` in one write, then beat until :meth:`stop`.

        Returns:
            The process record written (``metadata["process"]``; see :mod:`unitrack.persistence.lifecycle`).
        """
        interval = heartbeat_interval_s()
        record = process_record(interval)
        metadata[PROCESS_KEY] = record
        metadata[HEARTBEAT_KEY] = time.time()
        self.set_status("running", **metadata)
        uid, protocol = self.uid, self.protocol
        self._heartbeat = HeartbeatThread(
            lambda at: protocol.update_trial(uid, TrialUpdate(metadata={HEARTBEAT_KEY: at})),
            interval,
            name=f"unitrack-heartbeat-{uid[:8]}",
        ).start()
        return record

    def stop(self) -> None:
        """Stop beating (before the final status is written, so no beat lands after it)."""
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.stop()

    def commit(self) -> None:
        """Fold buffered writes into the backend's main storage (at exit)."""
        self.protocol.commit()
