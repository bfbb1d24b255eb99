"""Everything the web view and the report read, in one place: the run catalog, one run, and series.

The web view never talks to a backend directly: each route asks a :class:`Source`. The run table is the run
catalog's (``unitrack.runs``: one row per run, index ``uid``, columns ``name``, ``status``, ``project``,
``group``, ``description``, ``created``, ``started``, ``ended``, ``last_seen``, ``host``, ``pid``, ``error``,
``notes``, ``tags``, ``version``, ``revision``, ``parameters.<key>``, ``metrics.<name>``). Until the catalog
module lands, :func:`_catalog` builds the same frame from the backend's trial summaries (never their series);
switching is a change to that one function. Status words come from :func:`run_status`, the one place that
turns a stored status into what a listing shows (``lost`` for a running trial whose writer is gone).

Filters use ``unitrack view -f``'s grammar (``lr<0.1``, ``0<=depth<4``, ``loss``) on each run's parameters
and latest metrics by their short names, and on ``name`` and ``status``.

Example:
    >>> import tempfile
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Trial
    >>> root = tempfile.mkdtemp()
    >>> with get_protocol(f"hdf5://{root}") as db:
    ...     db.strict = False
    ...     t = db.new_trial(Trial(name="a", parameters={"lr": 0.1}))
    ...     db.log_trial_metrics(t, step=1, loss=0.5)
    >>> with Source(root) as source:
    ...     frame = source.runs(["lr<1"])
    >>> frame[["name", "parameters.lr", "metrics.loss"]].values.tolist()
    [['a', 0.1, 0.5]]
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError, NotFoundError
from unitrack.persistence import lifecycle
from unitrack.persistence.series import Series, SeriesRequest
from unitrack.persistence.structure import Trial

if TYPE_CHECKING:
    import pandas as pd

    from unitrack.persistence.protocol import Protocol

__all__ = ["FIELDS", "Source", "flatten", "resolve_target", "run_status"]

logger = logging.getLogger(__name__)

#: The catalog's columns before ``parameters.*`` and ``metrics.*`` (seam 5 of the catalog).
FIELDS = (
    "name",
    "status",
    "project",
    "group",
    "description",
    "created",
    "started",
    "ended",
    "last_seen",
    "host",
    "pid",
    "error",
    "notes",
    "tags",
    "version",
    "revision",
)
#: How long one catalog answers the requests of a page (seconds): live updates poll every 2 s.
CATALOG_TTL_S = 1.0
#: Bytes of ``run.log`` the run page shows (its end).
LOG_TAIL_BYTES = 64 * 1024


def resolve_target(target: str | os.PathLike[str] | None) -> str:
    """The backend URI for a root folder or URI (``hdf5://`` at the folder for a folder; the default is
    ``$UNITRACK_URI``, then ``./runs``).

    Raises:
        ConfigError: for a path that is not a folder.
    """
    if target is None:
        target = os.environ.get("UNITRACK_URI") or "runs"
    text = os.fspath(target)
    if "://" in text:
        return text
    if not os.path.isdir(text):
        raise ConfigError(f"{text!r} is neither a folder of runs nor a backend URI (e.g. hdf5:///abs/runs).")
    return f"hdf5://{os.path.abspath(text)}"


def run_status(trial: Trial, folder: str | os.PathLike[str] | None = None, now: float | None = None) -> str:
    """The status word a listing shows for ``trial``: the lifecycle's, with ``lost`` for a running trial whose
    process is gone.

    Uses ``lifecycle.run_status`` (heartbeats) where it exists; before that, a running trial whose store lock
    (in ``folder``, the trial's ``hdf5://`` folder) names a dead process of this host is ``lost``.
    """
    derive = getattr(lifecycle, "run_status", None)
    if derive is not None:
        word: str = derive(trial, now=now)
        return word
    word = lifecycle.status_word(trial.status)
    if word == "running" and folder is not None and _writer_gone(os.fspath(folder)):
        return "lost"
    return word


def _writer_gone(folder: str) -> bool:
    """Whether a store's lock names a process of this host that no longer runs (a SIGKILLed writer)."""
    from unitrack.store.contents import LOCK_NAME, writer_alive

    path = os.path.join(folder, LOCK_NAME)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            words = fh.read().split()
    except FileNotFoundError:
        return False
    return len(words) == 4 and words[0] == "pid" and not writer_alive(folder)


def flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{'opt': {'lr': 1}}`` -> ``{'<prefix>.opt.lr': 1}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def _when(value: Any) -> float | None:
    """A time as seconds since the epoch, from an epoch number or an ISO text; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return parsed.timestamp()  # xmen writes local time without an offset
        return parsed.timestamp()
    return None


def _error_line(errors: Sequence[str]) -> str | None:
    for text in reversed(errors):
        lines = [line for line in str(text).strip().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _row(trial: Trial, status: str) -> dict[str, Any]:
    meta = _mapping(trial.metadata)
    stamps = _mapping(meta.get("timestamps"))
    info = _mapping(meta.get("meta"))
    tags = dict(trial.tags)
    notes = tags.pop("notes", None)
    started = _when(stamps.get("start")) or _when(meta.get("start_time"))
    ended = _when(stamps.get("stopped")) or _when(meta.get("end_time"))
    created = _when(stamps.get("created")) or _when(stamps.get("registered")) or started
    row: dict[str, Any] = {
        "uid": trial.uid,
        "name": trial.name if trial.name is not None else trial.uid,
        "status": status,
        "project": trial.project_id,
        "group": trial.group_id,
        "description": trial.description,
        "created": created,
        "started": started,
        "ended": ended,
        "last_seen": _when(stamps.get("last")) or ended or started,
        "host": tags.get("host") or info.get("host"),
        "pid": info.get("pid"),
        "error": _error_line(trial.errors),
        "notes": "\n".join(str(n) for n in notes) if isinstance(notes, list) else notes,
        "tags": tags or None,
        "version": trial.version,
        "revision": trial.revision,
    }
    row.update(flatten(trial.parameters, "parameters"))
    row.update({f"metrics.{k}": m.latest for k, m in trial.metrics.items()})
    return row


class Source:
    """One backend, opened once, read by the web view's routes (thread-safe: calls are serialized).

    Args:
        target: A root folder (read as ``hdf5://``) or a backend URI; default ``$UNITRACK_URI`` then ``./runs``.

    Raises:
        ConfigError: for a target that is neither.
    """

    def __init__(self, target: str | os.PathLike[str] | None = None) -> None:
        from unitrack.persistence.registry import get_protocol

        self.uri = resolve_target(target)
        self.protocol: Protocol = get_protocol(self.uri)
        self.protocol.strict = False  # reading only: a trial without its project is still listed
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[float, pd.DataFrame, dict[str, Trial]]] = {}

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend (nothing was written)."""
        with self._lock:
            self.protocol.close()

    @property
    def label(self) -> str:
        """The target as shown to the user (no password)."""
        from unitrack.persistence.uri import as_uri

        return as_uri(self.uri).redacted()

    # ------------------------------------------------------------------------------------------ trials
    def _summaries(self, query: Any = None) -> list[Trial]:
        """Trials with each metric's latest value and no points (seam 3); the full trials where a backend
        cannot list without them yet."""
        find = getattr(self.protocol, "find_trial_summaries", None)
        if find is not None:
            found: list[Trial] = find(query)
            return found
        from unitrack.persistence.backends.hdf5 import HDF5Protocol

        if isinstance(self.protocol, HDF5Protocol):
            # The summaries the hdf5 backend queries (trial.json): every field, latest values, no series.
            with self.protocol._mutex:
                return [self.protocol._view(s) for _, _, s in self.protocol._matching(query)]
        return self.protocol.fetch_trials(query)

    def _folder(self, uid: str) -> Path | None:
        folder = getattr(self.protocol, "trial_folder", None)
        if folder is None:
            return None
        try:
            path: Path = folder(uid)
        except NotFoundError:
            return None
        return path

    def _status(self, trial: Trial, now: float) -> str:
        running = lifecycle.status_word(trial.status) == "running"
        return run_status(trial, self._folder(trial.uid) if running else None, now=now)

    def runs(self, filters: Sequence[str] = (), query: Any = None) -> pd.DataFrame:
        """The run catalog: one row per run (index ``uid``), filtered with ``view -f``'s grammar.

        Raises:
            RegisterSyntaxError: for a malformed filter (a ConfigError naming the position).
        """
        return self.catalog(filters, query)[0]

    def catalog(
        self, filters: Sequence[str] = (), query: Any = None
    ) -> tuple[pd.DataFrame, dict[str, Trial]]:
        """The run catalog and the trial summaries it was built from (by uid).

        A page asks for the catalog with several requests at once (the table, each chart, the groups, the
        sweep): the same answer is reused for :data:`CATALOG_TTL_S`.
        """
        key = json.dumps([list(filters), query], sort_keys=True, default=str)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_S:
                return cached[1], cached[2]
        frame, kept = self._catalog(filters, query)
        with self._lock:
            if len(self._cache) >= 32:
                self._cache.clear()
            self._cache[key] = (time.monotonic(), frame, kept)
        return frame, kept

    def _catalog(self, filters: Sequence[str], query: Any) -> tuple[pd.DataFrame, dict[str, Trial]]:
        import pandas as pd

        from unitrack.experiment.search import compile_filters

        checks = compile_filters([f for f in filters if f.strip()])
        now = time.time()
        with self._lock:
            trials = self._summaries(query)
            rows = []
            kept: dict[str, Trial] = {}
            for trial in trials:
                row = _row(trial, self._status(trial, now))
                if checks.filters and not checks.matches(_filter_view(row)):
                    continue
                rows.append(row)
                kept[trial.uid] = trial
        columns = ["uid", *FIELDS]
        extra_params = sorted({k for r in rows for k in r if k.startswith("parameters.")})
        extra_metrics = sorted({k for r in rows for k in r if k.startswith("metrics.")})
        frame = pd.DataFrame(rows, columns=[*columns, *extra_params, *extra_metrics])
        return frame.set_index("uid"), kept

    def trial(self, uid: str) -> Trial:
        """One run's summary (no series).

        Raises:
            NotFoundError: when no run has that uid.
        """
        with self._lock:
            found = [t for t in self._summaries({"uid": uid}) if t.uid == uid]
        if not found:
            raise NotFoundError(f"No run with uid {uid!r} in {self.label}.")
        return found[0]

    def run(self, uid: str) -> dict[str, Any]:
        """Everything the run page shows (plain data; every text is the stored text, unescaped).

        Raises:
            NotFoundError: when no run has that uid.
        """
        trial = self.trial(uid)
        meta = _mapping(trial.metadata)
        row = _row(trial, self._status(trial, time.time()))
        tags = dict(trial.tags)
        notes = tags.pop("notes", None)
        folder = self._folder(uid)
        history = _history(meta, row)
        checkpoints = _mapping(meta.get("checkpoints"))
        return {
            "uid": trial.uid,
            "name": row["name"],
            "status": row["status"],
            "description": trial.description,
            "version": trial.version,
            "revision": trial.revision,
            "project": trial.project_id,
            "group": trial.group_id,
            "parameters": _plain(dict(trial.parameters)),
            "metadata": _plain(dict(meta)),
            "notes": [str(n) for n in notes]
            if isinstance(notes, list)
            else ([] if notes is None else [str(notes)]),
            "tags": _plain(tags),
            "history": history,
            "errors": [str(e) for e in trial.errors],
            "error": row["error"],
            "log": _log_tail(folder),
            "checkpoints": _plain(dict(checkpoints)),
            "metrics": {k: _number(m.latest) for k, m in trial.metrics.items()},
            "folder": None if folder is None else str(folder),
        }

    # ------------------------------------------------------------------------------------------ series
    def series(
        self,
        uids: Sequence[str],
        metrics: Sequence[str],
        *,
        step_min: float | None = None,
        step_max: float | None = None,
        max_points: int | None = 2000,
        method: str = "minmax",
    ) -> list[Series]:
        """Points of ``metrics`` of ``uids``, downsampled at the backend (see :class:`SeriesRequest`)."""
        request = SeriesRequest(
            uids=tuple(uids),
            metrics=tuple(metrics),
            step_min=step_min,
            step_max=step_max,
            max_points=max_points,
            method=method,
        )
        with self._lock:
            return self.protocol.find_series(request)


def _filter_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The keys ``view -f`` filters see: short parameter and metric names, then name and status."""
    view: dict[str, Any] = {}
    for key, value in row.items():
        if key.startswith("parameters."):
            view.setdefault(key[len("parameters.") :], value)
        elif key.startswith("metrics."):
            view.setdefault(key[len("metrics.") :], value)
    view.setdefault("name", row.get("name"))
    view.setdefault("status", row.get("status"))
    return {k: v for k, v in view.items() if v is not None}


def _history(meta: Mapping[str, Any], row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's status changes known to the backend, oldest first (``{'status', 'time'}``)."""
    events = []
    stamps = _mapping(meta.get("timestamps"))
    for key, word in (("created", "created"), ("registered", "registered"), ("start", "running")):
        when = _when(stamps.get(key))
        if when is not None:
            events.append({"status": word, "time": when})
    if not stamps and row.get("started") is not None:
        events.append({"status": "running", "time": row["started"]})
    if row.get("ended") is not None and row["status"] not in ("running", "registered"):
        events.append({"status": row["status"], "time": row["ended"]})
    elif row["status"] == "lost":
        events.append({"status": "lost", "time": None})
    return events


def _log_tail(folder: Path | None) -> str | None:
    """The end of ``run.log`` in the run's folder (only a regular file inside the folder is read)."""
    if folder is None:
        return None
    path = folder / "run.log"
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read(LOG_TAIL_BYTES)
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return text if size <= LOG_TAIL_BYTES else "…" + text[text.find("\n") + 1 :]


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _plain(value: Any, depth: int = 0) -> Any:
    """Plain JSON data (non-finite floats as text, anything else as its repr), for the API."""
    if isinstance(value, Mapping) and depth < 32:
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 32:
        return [_plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _number(value)
    return repr(value)


def json_cell(value: Any) -> Any:
    """One table cell as JSON data: numbers and text as they are, missing as null, lists and dicts as text."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else _number(value)
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_plain(value), sort_keys=True)
    if hasattr(value, "item"):
        return json_cell(value.item())
    return str(value)


def iso(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO text in UTC (what the page shows in the viewer's time zone)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def table(frame: pd.DataFrame) -> dict[str, Any]:
    """The catalog as the JSON the runs table reads: ``{'columns': [...], 'rows': [[uid, ...], ...]}``."""
    columns = [str(c) for c in frame.columns]
    rows = []
    for uid, values in zip(frame.index.tolist(), frame.itertuples(index=False, name=None), strict=True):
        rows.append([uid, *(json_cell(v) for v in values)])
    return {"columns": ["uid", *columns], "rows": rows, "count": len(rows)}


def parameter_keys(frame: pd.DataFrame) -> list[str]:
    """The short names of the parameters (``parameters.lr`` -> ``lr``)."""
    return [c[len("parameters.") :] for c in frame.columns if str(c).startswith("parameters.")]


def metric_keys(frame: pd.DataFrame) -> list[str]:
    """The names of the metrics (``metrics.loss`` -> ``loss``)."""
    return [c[len("metrics.") :] for c in frame.columns if str(c).startswith("metrics.")]


def varying(frame: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """The parameters whose values differ between runs (all of them for a single run)."""
    out = []
    for key in keys:
        column = frame.get(f"parameters.{key}")
        if column is None:
            continue
        values = {json.dumps(json_cell(v), sort_keys=True) for v in column.tolist()}
        if len(values) > 1 or len(frame) <= 1:
            out.append(key)
    return out
