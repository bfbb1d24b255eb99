"""The run catalog: one row per run, from a folder or any backend — what every listing reads.

``unitrack view``, ``unitrack run`` (which runs to start), ``GlobalExperimentManager.find``, the web view and
scripts all list runs through this module, so they agree on which runs exist and what each one's status is:

- **A folder** lists the runs its backend holds: the embedded default (``hdf5://FOLDER``: one trial per
  sub-folder), or, when ``$UNITRACK_URI`` names another backend and the folder has none of its own, the trials
  that backend holds for experiments in this folder. Experiment folders with a ``params.yml`` but no trial (an
  xmen folder, or one registered with ``--backend ephemeral://``) are listed from that file, and one whose
  ``params.yml`` cannot be read is listed as ``damaged`` with the file and the reason. A folder holding a store
  and no trial (``FOLDER/<exp_id>/store.h5`` written by cox, or by :class:`unitrack.store.Store`) is listed as a
  run too (see :func:`store_row`), so ``unitrack view`` on a cox out-dir shows its experiments. ``FOLDER`` and
  ``hdf5://FOLDER`` list the same runs.
- **A URI** lists every trial of that backend.
- Runs are read with :meth:`~unitrack.persistence.protocol.Protocol.find_trial_summaries`: a listing never reads
  a metric series, and never creates a file (a folder or database that does not exist is an error).

A row (:func:`list_runs`) maps each column to a value: the fields :data:`~unitrack.persistence.filters.FIELDS`
(``uid``, ``name``, ``status`` — one word for every entry point, see :mod:`~unitrack.persistence.lifecycle` —,
``project``, ``group``, ``description``, ``created``, ``started``, ``ended``, ``last_seen`` (datetimes),
``host``, ``pid``, ``error`` (the last line of the run's last error), ``notes``, ``tags``, ``version``,
``revision``), then ``parameters.<key>`` (nested dicts flattened with dots) and ``metrics.<name>`` (latest
value): the dotted paths queries use. :func:`runs` returns the same rows as a pandas DataFrame indexed by uid.

Roots registered by ``unitrack register``, ``ExperimentManager`` or ``Experiment.register`` are remembered in
``$UNITRACK_HOME/config.yml`` (default ``~/.unitrack/config.yml``) under ``roots``, so
``GlobalExperimentManager()`` finds them without being told.

Example:
    >>> import tempfile
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Trial
    >>> folder = tempfile.mkdtemp()
    >>> with get_protocol(f"hdf5://{folder}", strict=False) as db:
    ...     t = db.new_trial(Trial(name="a", parameters={"lr": 0.1, "opt": {"m": 0.9}}))
    ...     db.log_trial_metrics(t, step=1, loss=0.5)
    >>> frame = runs(folder)
    >>> frame[["name", "status", "parameters.lr", "parameters.opt.m", "metrics.loss"]].values.tolist()
    [['a', 'registered', 0.1, 0.9, 0.5]]
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError, UnitrackError
from unitrack.persistence import lifecycle
from unitrack.persistence.filters import FIELDS, KeySpace, compile_filters
from unitrack.persistence.lifecycle import DAMAGED, parse_status_words
from unitrack.persistence.protocol import Protocol, Query
from unitrack.persistence.structure import Trial
from unitrack.store.contents import H5_NAME, JOURNAL_NAME, is_store_dir, writer_alive

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "HOME_ENV",
    "Listing",
    "aggregate",
    "config_path",
    "group_members",
    "group_rows",
    "known_roots",
    "list_runs",
    "remember_root",
    "run_status",
    "runs",
    "store_row",
    "to_frame",
]

logger = logging.getLogger(__name__)

#: The columns of every listing before its parameters and metrics (the DataFrame's index is ``uid``).
COLUMNS: tuple[str, ...] = FIELDS
HOME_ENV = "UNITRACK_HOME"
#: Schemes whose URI names a local file or folder: reading one that does not exist is an error, never a create.
_LOCAL_SCHEMES = {"hdf5": "folder", "cox": "folder", "file": "file", "pickled": "file"}
_INDEX_DIR = ".unitrack"
_SUMMARY = "trial.json"
#: Opens the backend of a URI for a listing that keeps it open (a server reading many listings): the listing
#: reads through it and leaves it open. Without one, each listing opens the backend and closes it.
Opener = Callable[[str], Protocol]


# ------------------------------------------------------------------------------------------------- status
def run_status(trial: Trial, now: float | None = None) -> str:
    """The status word every listing shows for ``trial``: the one place a trial becomes its word.

    ``damaged`` for a run its backend could not read; otherwise the lifecycle's word, ``lost`` for a running trial
    whose process is gone (:func:`unitrack.persistence.lifecycle.run_status`).
    """
    if trial.status == DAMAGED:
        return "damaged"
    return lifecycle.run_status(trial, now)


# --------------------------------------------------------------------------------------------------- rows
def _time(value: Any) -> datetime | None:
    """A datetime from an ISO text (xmen's timestamps) or seconds since the epoch (track's start/end times)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone().replace(tzinfo=None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value))
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return when if when.tzinfo is None else when.astimezone().replace(tzinfo=None)
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _flatten(prefix: str, values: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            _flatten(f"{prefix}{key}.", value, out)
        else:
            out[f"{prefix}{key}"] = value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _liveness(trial: Trial) -> tuple[Any, Any, Any]:
    """(host, pid, last seen) of a trial: its heartbeat when it has one, else what its metadata says."""
    metadata = _mapping(trial.metadata)
    stamps = _mapping(metadata.get("timestamps"))
    beat = lifecycle.read_heartbeat(metadata)
    host = _mapping(trial.tags).get("host") or _mapping(metadata.get("meta")).get("host")
    last = stamps.get("last") or metadata.get("end_time") or metadata.get("start_time")
    if beat is None:
        return host, None, last
    return beat.host, beat.pid, beat.last_seen if beat.last_seen is not None else last


def row_of(trial: Trial, groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The catalog row of one trial (see the module docstring for its columns)."""
    metadata = _mapping(trial.metadata)
    stamps = _mapping(metadata.get("timestamps"))
    tags = _mapping(trial.tags)
    host, pid, last = _liveness(trial)
    status = run_status(trial)
    error = _last_line(trial.errors[-1]) if trial.errors else ""
    if status == "damaged":
        damage = _mapping(metadata.get("damage"))
        error = f"{damage.get('file', '?')}: {damage.get('reason', 'cannot be read')}"
    notes = tags.get("notes")
    row: dict[str, Any] = {
        "uid": trial.uid,
        "name": trial.name if trial.name is not None else trial.uid,
        "status": status,
        "project": trial.project_id,
        "group": (groups or {}).get(trial.group_id or "", trial.group_id),
        "description": trial.description or "",
        "created": _time(stamps.get("created") or stamps.get("registered") or metadata.get("start_time")),
        "started": _time(stamps.get("start") or metadata.get("start_time")),
        "ended": _time(stamps.get("stopped") or metadata.get("end_time")),
        "last_seen": _time(last),
        "host": host,
        "pid": pid,
        "error": error,
        "notes": [str(n) for n in notes] if isinstance(notes, list) else [],
        "tags": dict(tags),
        "version": trial.version,
        "revision": trial.revision,
    }
    _flatten("parameters.", trial.parameters, row)
    for name, metric in trial.metrics.items():
        row[f"metrics.{name}"] = metric.latest
    return row


# ------------------------------------------------------------------------------------------- params.yml
def _yaml_row(folder: str) -> dict[str, Any]:
    """The row of an experiment folder that has a ``params.yml`` but no trial (xmen's own folders)."""
    from ruamel.yaml.error import YAMLError

    from unitrack.persistence.yamlsafe import describe, safe_yaml

    name = os.path.basename(folder)
    path = os.path.join(folder, "params.yml")
    reason = None
    data: Any = None
    try:
        with open(path, encoding="utf-8") as handle:
            data = safe_yaml().load(handle)  # aliases and nesting bounded (#12 item 11)
    except YAMLError as exc:
        reason = describe(exc)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as exc:
        reason = _last_line(str(exc)) or type(exc).__name__
    if reason is None and not isinstance(data, dict):
        reason = "empty" if data is None else f"not a mapping but {type(data).__name__}"
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(uid=f"params.yml:{name}", name=name, notes=[], tags={}, error="", description="")
    if reason is not None:
        logger.warning("%s cannot be read (%s); listed as damaged", path, reason)
        row.update(status="damaged", error=f"{path}: {reason}")
        return row
    assert isinstance(data, dict)  # checked above
    try:
        words = parse_status_words([str(data.get("_status") or "registered")])
        status = words[0]
    except ConfigError:
        status = str(data.get("_status"))
    meta = _mapping(data.get("_meta"))
    beat = lifecycle.read_heartbeat({lifecycle.PROCESS_KEY: meta.get(lifecycle.PROCESS_KEY)})
    if status == "running" and beat is not None and lifecycle.is_lost(beat):
        status = "lost"  # its process (recorded in _meta) is gone
    stamps = _mapping(data.get("_timestamps"))
    notes = data.get("_notes")
    row.update(
        status=status,
        description=str(data.get("_purpose") or ""),
        created=_time(stamps.get("created") or stamps.get("registered")),
        started=_time(stamps.get("start")),
        ended=_time(stamps.get("stopped")),
        last_seen=_time(stamps.get("last")),
        host=data.get("_host"),
        notes=[str(n) for n in notes] if isinstance(notes, list) else [],
    )
    _flatten("parameters.", {str(k): v for k, v in data.items() if not str(k).startswith("_")}, row)
    for key, value in _mapping(data.get("_messages")).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[f"metrics.{key}"] = value
    return row


# ------------------------------------------------------------------------------------------ cox stores
#: The table cox's walkthroughs (and ``cox-tensorboard --metadata-table``) keep a run's hyper-parameters in.
_METADATA_TABLE = "metadata"
_SCALAR_KINDS = ("float", "int", "bool", "str")
_NUMBER_KINDS = ("float", "int")


def _pick_rows(table: str, nrows: int) -> slice:
    """The rows a listing reads of a store's table: the first of ``metadata``, the last of the others."""
    return slice(0, min(nrows, 1)) if table == _METADATA_TABLE else slice(max(nrows - 1, 0), nrows)


def _created_from_events(folder: str) -> datetime | None:
    """When the store's TensorBoard writer was first opened: the time tensorboardX writes into the name of each
    event file (``events.out.tfevents.<epoch seconds>.<host>``) when the store opens it for writing."""
    times = []
    try:
        with os.scandir(os.path.join(folder, "tensorboard")) as entries:
            for entry in entries:
                parts = entry.name.split(".")
                if entry.name.startswith("events.out.tfevents.") and len(parts) > 3 and parts[3].isdigit():
                    times.append(int(parts[3]))
    except OSError:  # no tensorboard folder (a store opened read-only only, or written by another tool)
        return None
    return _time(min(times)) if times else None


def store_row(folder: str) -> dict[str, Any]:
    """The catalog row of a folder holding a store and no trial: ``<exp_id>/store.h5`` written by cox 0.2 (or by
    :class:`unitrack.store.Store`).

    - ``uid`` and ``name``: the folder's name (cox's ``exp_id``).
    - ``status``: ``unknown`` (cox records no state: nothing says whether the run finished, failed or is still
      writing), ``running`` for a unitrack store whose writer holds its lock on this host, ``damaged`` (with the
      file and the reason in ``error``) when ``store.h5`` cannot be read.
    - ``created``: when the store's TensorBoard writer was first opened (the time in its event file's name);
      ``last_seen``: the last write of ``store.h5`` or the journal (their mtime). ``started`` and ``ended`` stay
      empty: no file records them.
    - ``tags["tables"]``: each table's row count; ``parameters.<column>``: the first row of the ``metadata``
      table (where cox's walkthroughs and ``cox-tensorboard`` keep hyper-parameters); ``metrics.<table>.<column>``:
      the last row of every other table's int and float columns. Serialized cells (OBJECT, PICKLE,
      PYTORCH_STATE) are not shown.

    ``store.h5`` is read by :func:`unitrack.store.h5read.read_store_h5`, one or two rows per table whatever their
    length, and nothing in it is unpickled beyond plain data or executed. When unitrack's writer is between
    rebuilds of ``store.h5``, its newest rows are in the journal only and show at the next rebuild.
    """
    from unitrack.errors import CorruptStoreError, ForeignStoreError
    from unitrack.store.h5read import read_store_h5

    name = os.path.basename(folder)
    h5 = os.path.join(folder, H5_NAME)
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(uid=name, name=name, notes=[], tags={}, error="", description="")
    row["status"] = "running" if writer_alive(folder) else lifecycle.UNKNOWN
    row["created"] = _created_from_events(folder)
    stamps = []
    for file in (h5, os.path.join(folder, JOURNAL_NAME)):
        with contextlib.suppress(OSError):
            stamps.append(os.stat(file).st_mtime)
    row["last_seen"] = _time(max(stamps)) if stamps else None
    if not os.path.isfile(h5):
        return row  # a journal only: a unitrack store being created
    reason: str | None = None
    try:
        tables = read_store_h5(h5, pick=_pick_rows)
    except ForeignStoreError as exc:
        reason = f"node /{exc.fields['node']} cannot be read safely: {exc.fields['reason']}"
    except CorruptStoreError as exc:
        reason = str(exc.fields["reason"])
    if reason is not None:
        logger.warning("%s cannot be read (%s); listed as damaged", h5, reason)
        row.update(status="damaged", error=f"{h5}: {reason}")
        return row
    row["tags"] = {"tables": {t: tables[t].nrows for t in sorted(tables)}}
    for table_name in sorted(tables):
        table = tables[table_name]
        metadata = table_name == _METADATA_TABLE
        for column, kind, values in zip(table.columns, table.kinds, table.values, strict=True):
            if not values or kind.value not in (_SCALAR_KINDS if metadata else _NUMBER_KINDS):
                continue
            if metadata:
                row[f"parameters.{column}"] = values[0]
            else:
                row[f"metrics.{table_name}.{column}"] = values[-1]
    return row


# ---------------------------------------------------------------------------------------------- listing
@dataclass
class Listing:
    """What one listing read: the trials (summaries), their rows, and where they came from."""

    target: str
    uri: str | None
    trials: list[Trial] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: name -> folder of each experiment folder (a folder listing only).
    folders: dict[str, str] = field(default_factory=dict)
    #: uid -> folder of each run listed from a store with no trial (:func:`store_row`): no backend holds it.
    stores: dict[str, str] = field(default_factory=dict)

    def columns(self) -> list[str]:
        """The fields, then every parameter and metric column in the order first seen."""
        params: dict[str, None] = {}
        metrics: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key.startswith("parameters."):
                    params[key] = None
                elif key.startswith("metrics."):
                    metrics[key] = None
        return [*FIELDS, *params, *metrics]


def _check_local(uri: str) -> None:
    """Refuse to read a local backend that does not exist (opening it would create it)."""
    from unitrack.persistence.uri import as_uri

    parsed = as_uri(uri)
    kind = _LOCAL_SCHEMES.get(parsed.scheme)
    if kind is None:
        return
    path = os.path.expanduser(parsed.file_path)
    exists = os.path.isdir(path) if kind == "folder" else os.path.isfile(path)
    if not exists:
        raise ConfigError(
            f"No {kind} at {path} ({parsed.redacted()}): nothing to list. Check the path; reading never creates it."
        )


def _read_trials(uri: str, query: Query, opener: Opener | None = None) -> tuple[list[Trial], dict[str, str]]:
    if opener is not None:
        return _summaries(opener(uri), query)
    from unitrack.persistence.registry import get_protocol

    protocol = get_protocol(uri)
    try:
        return _summaries(protocol, query)
    finally:
        protocol.close()


def _summaries(protocol: Protocol, query: Query) -> tuple[list[Trial], dict[str, str]]:
    trials = protocol.find_trial_summaries(query)
    return trials, {g.uid: g.name or g.uid for g in protocol.find_groups(None)}


def _external_uri(folder: str) -> str | None:
    """``$UNITRACK_URI`` when it names a backend other than the folder's own (the folder has no index)."""
    from unitrack.persistence.registry import URI_ENV

    uri = os.environ.get(URI_ENV)
    if not uri or os.path.isdir(os.path.join(folder, _INDEX_DIR)):
        return None
    return uri


def _list_folder(folder: str, query: Query, opener: Opener | None = None) -> Listing:
    root = os.path.abspath(folder)
    try:
        entries = sorted(
            (e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")),
            key=lambda e: e.name,
        )
    except NotADirectoryError as exc:
        raise ConfigError(f"{folder!r} is a file, not a folder of runs or a backend URI.") from exc
    folders = {e.name: e.path for e in entries}
    external = _external_uri(root)
    listing = Listing(folder, external or f"hdf5://{root}", folders=folders)
    indexed = os.path.isdir(os.path.join(root, _INDEX_DIR))
    groups: dict[str, str] = {}
    if external is not None:
        trials, groups = _read_trials(external, query, opener)
        # The backend holds many roots: keep the trials of experiments in this folder (their directory).
        listing.trials = [
            t for t in trials if os.path.dirname(str(_mapping(t.metadata).get("directory") or "")) == root
        ]
    elif indexed or any(os.path.isfile(os.path.join(p, _SUMMARY)) for p in folders.values()):
        listing.trials, groups = _read_trials(f"hdf5://{root}", query, opener)
    listing.rows = [row_of(t, groups) for t in listing.trials]
    # A folder whose name is no trial's: an xmen experiment with only its params.yml (or a trial the query left
    # out, which has a summary). Usually none, so a listing stats no file per run.
    named = {t.name for t in listing.trials}
    for name, path in folders.items():
        if name in named or external is None and os.path.isfile(os.path.join(path, _SUMMARY)):
            continue
        if os.path.isfile(os.path.join(path, "params.yml")):
            row = _yaml_row(path)
        elif is_store_dir(path):  # a store with no trial: cox's own, or unitrack.store.Store's
            row = store_row(path)
            listing.stores[row["uid"]] = path
        else:
            continue
        if query is None or row["status"] == "damaged":
            listing.rows.append(row)
        else:
            logger.debug("%s has no trial; not listed under a query", path)
    return listing


def read_listing(
    root_or_uri: str | os.PathLike[str] | None = None, query: Query = None, *, opener: Opener | None = None
) -> Listing:
    """Read the runs of a folder or a backend URI (default: ``$UNITRACK_URI``, else ``./runs``).

    ``opener`` gives the open backend of a URI to read through (and leave open), for a caller that lists
    often (the web view); by default the backend is opened for this listing and closed.

    Raises:
        ConfigError: for a folder or backend file that does not exist, or a target that is neither.
        UnitrackError: whatever the backend raises when it cannot be read.
    """
    from unitrack.persistence.registry import resolve_uri

    target = resolve_uri(None) if root_or_uri is None else os.fspath(root_or_uri)
    if "://" in target:
        _check_local(target)
        trials, groups = _read_trials(target, query, opener)
        return Listing(target, target, trials, [row_of(t, groups) for t in trials])
    if not os.path.exists(target):
        raise ConfigError(
            f"{target!r} is neither a folder nor a backend URI (e.g. hdf5://runs, file://db.json)."
        )
    if _is_run(target):
        return _list_run(target, query, opener)
    return _list_folder(target, query, opener)


def _is_run(folder: str) -> bool:
    """Whether ``folder`` is one run (its own params.yml, trial summary or store), not a folder of runs."""
    return (
        os.path.isfile(os.path.join(folder, "params.yml"))
        or os.path.isfile(os.path.join(folder, _SUMMARY))
        or is_store_dir(folder)
    )


def _list_run(folder: str, query: Query, opener: Opener | None = None) -> Listing:
    """One run's folder: its row in the listing of the folder holding it."""
    run = os.path.abspath(folder)
    parent = _list_folder(os.path.dirname(run), query, opener)
    name = os.path.basename(run)
    rows = [r for r in parent.rows if r["name"] == name]
    trials = [t for t in parent.trials if t.name == name]
    if not rows and os.path.isfile(os.path.join(run, "params.yml")):
        rows = [_yaml_row(run)]
    elif not rows and is_store_dir(run):
        rows = [store_row(run)]
    stores = {r["uid"]: run for r in rows if not trials}
    return Listing(folder, parent.uri, trials, rows, {name: run}, stores)


def list_runs(
    root_or_uri: str | os.PathLike[str] | None = None,
    query: Query = None,
    *,
    filters: Sequence[str] | str | None = None,
    status: str | Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """The catalog rows of a folder or backend (see the module docstring), without pandas.

    Args:
        root_or_uri: a folder or a backend URI (default ``$UNITRACK_URI``, else ``./runs``).
        query: a backend query (``{"parameters.lr": {"$lt": 0.1}}``), run by the backend.
        filters: ``unitrack view -f`` filters (:mod:`~unitrack.persistence.filters`), all of which must hold.
        status: keep runs with one of these status words (``"stopped,lost"``; track's names accepted).

    Raises:
        ConfigError: for a missing folder or file, an unknown status word, or a filter that names no key
            (:class:`~unitrack.errors.UnknownKeyError`, naming the closest ones).
    """
    listing = read_listing(root_or_uri, query)
    return select(listing.rows, listing.columns(), filters=filters, status=status)


def select(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    *,
    filters: Sequence[str] | str | None = None,
    status: str | Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Keep the rows with one of the ``status`` words that pass every filter (bound to ``columns``)."""
    if status is not None:
        words = set(parse_status_words(status))
        rows = [r for r in rows if r.get("status") in words]
    if filters:
        bound = compile_filters(filters).bind(KeySpace(columns), strict=bool(rows) or bool(status))
        rows = [r for r in rows if bound.matches(r)]
    return rows


def runs(
    root_or_uri: str | os.PathLike[str] | None = None,
    query: Query = None,
    *,
    filters: Sequence[str] | str | None = None,
    status: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per run of a folder or backend, as a pandas DataFrame indexed by ``uid``.

    Columns: ``name, status, project, group, description, created, started, ended, last_seen, host, pid, error,
    notes, tags, version, revision``, then ``parameters.<key>`` (nested keys dotted) and ``metrics.<name>``
    (latest value). Arguments as :func:`list_runs`.

    Example:
        >>> import tempfile
        >>> runs(tempfile.mkdtemp()).columns.tolist()[:4]
        ['name', 'status', 'project', 'group']

    Raises:
        ConfigError: as :func:`list_runs`.
    """
    listing = read_listing(root_or_uri, query)
    columns = listing.columns()
    frame = to_frame(select(listing.rows, columns, filters=filters, status=status), columns)
    frame.attrs["source"] = listing.target  # unitrack.plot(frame, "loss") knows where the runs are
    return frame


def to_frame(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Catalog rows as :func:`runs` returns them: a DataFrame of ``columns`` indexed by ``uid``."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    return frame.set_index("uid")


# ---------------------------------------------------------------------------------------------- group by
def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def group_members(
    rows: Sequence[Mapping[str, Any]], over: Sequence[str], columns: Sequence[str] | None = None
) -> list[tuple[dict[str, Any], list[Mapping[str, Any]]]]:
    """The groups of :func:`group_rows`: for each combination of the parameters other than ``over`` (in the order
    first seen), those parameters' values and the rows holding them.

    Raises:
        UnknownKeyError: for a name in ``over`` that is not a parameter (naming the closest ones).
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    space = KeySpace(columns)
    dropped = set()
    for name in over:
        column = space.resolve(name, "group-by key")
        if not column.startswith("parameters."):
            raise ConfigError(f"--group-by takes parameters; {name!r} is the {column!r} column.")
        dropped.add(column)
    params = [c for c in columns if c.startswith("parameters.") and c not in dropped]
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row.get(p)) for p in params), []).append(row)
    return [({p: members[0].get(p) for p in params}, members) for members in groups.values()]


def group_rows(
    rows: Sequence[Mapping[str, Any]],
    over: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    counts: bool = False,
) -> list[dict[str, Any]]:
    """One row per combination of the parameters other than ``over``: each metric's mean and standard deviation
    over the runs of the group (``metrics.<name>`` and ``metrics.<name>.std``), and ``n``, the count of runs.

    What a paper table needs when runs differ only in a seed: ``group_rows(rows, ["seed"])``.

    Args:
        rows: catalog rows (:func:`list_runs`).
        over: the parameters to aggregate over (bare or dotted names).
        columns: the columns of the listing (default: those of ``rows``).
        counts: also give ``metrics.<name>.n``, the count of runs of the group that have a number for it.

    Raises:
        UnknownKeyError: for a name in ``over`` that is not a parameter (naming the closest ones).
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    metrics = [c for c in columns if c.startswith("metrics.")]
    out = []
    for values, members in group_members(rows, over, columns):
        grouped: dict[str, Any] = dict(values)
        grouped["n"] = len(members)
        for metric in metrics:
            numbers = [
                float(v)
                for v in (m.get(metric) for m in members)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
            ]
            grouped[metric], grouped[f"{metric}.std"] = _mean_std(numbers)
            if counts:
                grouped[f"{metric}.n"] = len(numbers)
        out.append(grouped)
    return out


def aggregate(frame: pd.DataFrame, over: Sequence[str] | str) -> pd.DataFrame:
    """:func:`group_rows` for a :func:`runs` DataFrame: one row per combination of the other parameters.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"parameters.lr": [0.1, 0.1, 0.2], "parameters.seed": [0, 1, 0],
        ...                       "metrics.loss": [1.0, 3.0, 5.0]})
        >>> aggregate(frame, "seed")[["parameters.lr", "n", "metrics.loss", "metrics.loss.std"]].values.tolist()
        [[0.1, 2.0, 2.0, 1.4142135623730951], [0.2, 1.0, 5.0, nan]]
    """
    import pandas as pd

    names = [over] if isinstance(over, str) else list(over)
    rows = [{k: (None if _is_nan(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]
    grouped = group_rows(rows, names, list(frame.columns))
    return pd.DataFrame.from_records(grouped)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ----------------------------------------------------------------------------------------- known roots
def config_path() -> Path:
    """``$UNITRACK_HOME/config.yml``, default ``~/.unitrack/config.yml``."""
    home = os.environ.get(HOME_ENV)
    return Path(home) / "config.yml" if home else Path.home() / ".unitrack" / "config.yml"


def _read_config(path: Path) -> dict[str, Any]:
    from ruamel.yaml.error import YAMLError

    from unitrack.persistence.yamlsafe import describe, safe_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = safe_yaml().load(text)  # aliases and nesting bounded (#12 item 11)
    except YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {describe(exc)}. Fix or remove it.") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_last_line(str(exc))}. Fix or remove it.") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (roots: [...]), not {type(data).__name__}.")
    return data


def known_roots() -> list[str]:
    """The roots in ``config_path()``: a list under ``roots`` (or xmen's mapping under ``experiments``).

    Raises:
        ConfigError: for a config file that cannot be read or whose ``roots`` is not a list.
    """
    path = config_path()
    data = _read_config(path)
    roots = data.get("roots") or data.get("experiments") or []
    if isinstance(roots, Mapping):
        roots = list(roots)
    if not isinstance(roots, list):
        raise ConfigError(f"{path}: 'roots' must be a list of experiment roots, got {type(roots).__name__}.")
    return [str(r) for r in roots]


def remember_root(root: str | os.PathLike[str]) -> None:
    """Add a root to ``config_path()`` (once), so ``GlobalExperimentManager()`` finds its runs.

    Best effort: a home folder that cannot be written is logged (at INFO) and the registration goes on.
    """
    import filelock

    path = config_path()
    folder = os.path.abspath(os.fspath(root))
    try:
        if folder in known_roots():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(path) + ".lock", timeout=10):
            data = _read_config(path)
            roots = data.get("roots")
            roots = [str(r) for r in roots] if isinstance(roots, list) else []
            if folder in roots:
                return
            data["roots"] = [*roots, folder]
            _write_config(path, data)
    except (OSError, UnitrackError, filelock.Timeout) as exc:
        logger.info("root %s not remembered in %s: %s", folder, path, exc)


def forget_roots(roots: Iterable[str]) -> None:
    """Remove roots from ``config_path()`` (``GlobalExperimentManager.clean``)."""
    import filelock

    path = config_path()
    gone = {os.path.abspath(r) for r in roots}
    if not gone or not path.is_file():
        return
    with filelock.FileLock(str(path) + ".lock", timeout=10):
        data = _read_config(path)
        roots_now = data.get("roots")
        if isinstance(roots_now, list):
            data["roots"] = [r for r in roots_now if os.path.abspath(str(r)) not in gone]
            _write_config(path, data)


def _write_config(path: Path, data: Mapping[str, Any]) -> None:
    import io
    import tempfile

    from ruamel.yaml import YAML

    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(dict(data), stream)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(stream.getvalue())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
