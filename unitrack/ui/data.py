"""Everything the web view, the report and ``unitrack.plot`` read, in one place: the run catalog, one run, series.

The web view never talks to a backend directly: each route asks a :class:`Source`. Runs are the run catalog's
(:mod:`unitrack.persistence.catalog`, what ``unitrack view`` and ``unitrack.runs()`` read): the same runs, the
same status words (``lost``, ``damaged``...), the same values, filtered with the same grammar
(:mod:`unitrack.persistence.filters`). A row maps each catalog column (``uid``, ``name``, ``status``, ...,
``parameters.<key>``, ``metrics.<name>``) to its value.

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
    ...     rows, columns = source.rows(["lr<1"])
    >>> [(r["name"], r["parameters.lr"], r["metrics.loss"]) for r in rows]
    [('a', 0.1, 0.5)]
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import NotFoundError
from unitrack.persistence import catalog
from unitrack.persistence.series import Series, SeriesRequest

if TYPE_CHECKING:
    import pandas as pd

    from unitrack.persistence.catalog import Listing
    from unitrack.persistence.protocol import Protocol

__all__ = ["CATALOG_TTL_S", "Row", "Source", "default_target"]

#: A catalog row: column -> value.
Row = Mapping[str, Any]
#: How long one listing answers the requests of a page (seconds): live updates poll every 2 s.
CATALOG_TTL_S = 1.0
#: Bytes of ``run.log`` the run page shows (its end).
LOG_TAIL_BYTES = 64 * 1024
_PARAMETERS, _METRICS = "parameters.", "metrics."


def default_target() -> str:
    """What ``unitrack view`` lists without a target: ``$UNITRACK_URI``, else the folder ``runs``."""
    return os.environ.get("UNITRACK_URI") or "runs"


class Source:
    """A folder of runs or a backend, read by the web view's routes (thread-safe).

    Listings come from :func:`unitrack.persistence.catalog.read_listing` through backends this source keeps
    open (a backend caches what it read, so the next listing reads only what changed); one listing answers the
    requests of :data:`CATALOG_TTL_S`.

    Args:
        target: A root folder or a backend URI, as ``unitrack view`` takes it (default: :func:`default_target`).

    Raises:
        ConfigError: for a folder or backend file that does not exist, or a target that is neither.
    """

    def __init__(self, target: str | os.PathLike[str] | None = None) -> None:
        self.target = default_target() if target is None else os.fspath(target)
        self._lock = threading.RLock()
        self._protocols: dict[str, Protocol] = {}
        self._listing: tuple[float, Listing] | None = None
        try:
            self.uri = self.listing().uri or self.target  # reads once: a missing folder is an error here
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backends (nothing was written)."""
        with self._lock:
            protocols, self._protocols = list(self._protocols.values()), {}
            for protocol in protocols:
                protocol.close()

    @property
    def label(self) -> str:
        """The target as shown to the user (no password)."""
        if "://" not in self.target:
            return self.target
        from unitrack.persistence.uri import as_uri

        return as_uri(self.target).redacted()

    def _open(self, uri: str) -> Protocol:
        """The backend of ``uri``, opened once for this source (reading only)."""
        with self._lock:
            protocol = self._protocols.get(uri)
            if protocol is None:
                from unitrack.persistence.registry import get_protocol

                protocol = get_protocol(uri)
                protocol.strict = False  # reading only: a trial without its project is still listed
                self._protocols[uri] = protocol
            return protocol

    @property
    def protocol(self) -> Protocol:
        """The backend holding the runs (where series are read)."""
        return self._open(self.uri)

    # ------------------------------------------------------------------------------------------ listing
    def listing(self, fresh: bool = False) -> Listing:
        """Every run of the target (:class:`~unitrack.persistence.catalog.Listing`), at most
        :data:`CATALOG_TTL_S` old unless ``fresh``: a page asks with several requests at once (the table, each
        chart, the groups, the sweep), and they share one listing."""
        with self._lock:
            cached = self._listing
            if not fresh and cached is not None and time.monotonic() - cached[0] < CATALOG_TTL_S:
                return cached[1]
            listing = catalog.read_listing(self.target, opener=self._open)
            self._listing = (time.monotonic(), listing)
            return listing

    def rows(
        self, filters: Sequence[str] = (), status: str | Iterable[str] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The runs passing ``filters`` (``view -f``) with one of the ``status`` words, and the columns.

        Raises:
            ConfigError: for a malformed filter, one that names no key (naming the closest ones), or an
                unknown status word, as ``unitrack view`` does.
        """
        listing = self.listing()
        columns = listing.columns()
        texts = [f for f in filters if f.strip()]
        return catalog.select(listing.rows, columns, filters=texts or None, status=status), columns

    def runs(self, filters: Sequence[str] = (), status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """:meth:`rows` as ``unitrack.runs()`` returns them: a DataFrame indexed by ``uid``."""
        rows, columns = self.rows(filters, status)
        return catalog.to_frame(rows, columns)

    def chosen(self, uids: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """The runs named by ``uids``, in that order (unknown uids are left out), and the columns."""
        listing = self.listing()
        by_uid = {r["uid"]: r for r in listing.rows}
        return [by_uid[u] for u in dict.fromkeys(uids) if u in by_uid], listing.columns()

    # ------------------------------------------------------------------------------------------ one run
    def _folder(self, listing: Listing, row: Row) -> Path | None:
        """The run's folder (``run.log``, checkpoints), when it has one."""
        if str(row["uid"]).startswith("params.yml:"):
            found = listing.folders.get(str(row["name"]))
            return None if found is None else Path(found)
        if row["uid"] in listing.stores:  # a store with no trial (cox's): no backend holds it
            return Path(listing.stores[row["uid"]])
        folder = getattr(self.protocol, "trial_folder", None)
        if folder is not None:
            try:
                path: Path = folder(row["uid"])
                return path
            except NotFoundError:
                pass
        found = listing.folders.get(str(row["name"]))
        return None if found is None else Path(found)

    def run(self, uid: str) -> dict[str, Any]:
        """Everything the run page shows (plain data; every text is the stored text, unescaped).

        Raises:
            NotFoundError: when no run has that uid.
        """
        listing = self.listing()
        row = next((r for r in listing.rows if r["uid"] == uid), None)
        if row is None:
            listing = self.listing(fresh=True)  # a run started since the last listing
            row = next((r for r in listing.rows if r["uid"] == uid), None)
        if row is None:
            raise NotFoundError(f"No run with uid {uid!r} in {self.label}.")
        trial = next((t for t in listing.trials if t.uid == uid), None)
        meta: Mapping[str, Any] = {}
        parameters: dict[str, Any] = {
            k[len(_PARAMETERS) :]: v for k, v in row.items() if k.startswith(_PARAMETERS)
        }
        errors: list[str] = []
        if trial is not None:
            meta = trial.metadata if isinstance(trial.metadata, Mapping) else {}
            parameters = dict(trial.parameters)
            errors = [str(e) for e in trial.errors]
        folder = self._folder(listing, row)
        tags = {k: v for k, v in dict(row.get("tags") or {}).items() if k != "notes"}
        return {
            "uid": uid,
            "name": row["name"],
            "status": row["status"],
            "description": row.get("description") or "",
            "version": row.get("version"),
            "revision": row.get("revision"),
            "project": row.get("project"),
            "group": row.get("group"),
            "created": cell(row.get("created")),
            "started": cell(row.get("started")),
            "ended": cell(row.get("ended")),
            "last_seen": cell(row.get("last_seen")),
            "host": row.get("host"),
            "pid": row.get("pid"),
            "parameters": plain(parameters),
            "metadata": plain(dict(meta)),
            "notes": [str(n) for n in row.get("notes") or []],
            "tags": plain(tags),
            "history": _history(row),
            "errors": errors,
            "error": row.get("error") or None,
            "damage": _damage(meta, row, folder),
            "log": _log_tail(folder),
            "checkpoints": plain(dict(_mapping(meta.get("checkpoints")))),
            "metrics": {k[len(_METRICS) :]: cell(v) for k, v in row.items() if k.startswith(_METRICS)},
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
        stores = self.listing().stores  # runs no backend holds: an xmen folder's, a cox store's
        request = SeriesRequest(
            uids=tuple(u for u in uids if not str(u).startswith("params.yml:") and u not in stores),
            metrics=tuple(metrics),
            step_min=step_min,
            step_max=step_max,
            max_points=max_points,
            method=method,
        )
        if not request.uids or not request.metrics:
            return []
        protocol = self.protocol
        from unitrack.persistence.backends.hdf5 import HDF5Protocol

        if isinstance(protocol, HDF5Protocol):
            # hdf5:// reads series from many threads at once (under its own lock where it must): a long read
            # does not hold up the table of another request.
            return protocol.find_series(request)
        with self._lock:
            return protocol.find_series(request)


def frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The catalog rows of a :func:`unitrack.runs` DataFrame (index ``uid``; NaN cells as missing)."""
    rows = []
    for uid, record in zip(frame.index.tolist(), frame.to_dict("records"), strict=True):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
        row["uid"] = uid
        rows.append(row)
    return rows


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _damage(meta: Mapping[str, Any], row: Row, folder: Path | None) -> dict[str, str] | None:
    """``{'file', 'reason'}`` of a run whose files cannot be read (None for a readable run)."""
    if row.get("status") != "damaged":
        return None
    damage = _mapping(meta.get("damage"))
    if damage:
        return {"file": str(damage.get("file", "?")), "reason": str(damage.get("reason", "cannot be read"))}
    text = str(row.get("error") or "")
    for name in ("params.yml", "store.h5"):  # an xmen folder's file, a cox store's
        path = "" if folder is None else str(folder / name)
        if path and text.startswith(path + ": "):
            return {"file": path, "reason": text[len(path) + 2 :]}
    path = "" if folder is None else str(folder / "params.yml")
    return {"file": path or "?", "reason": text or "cannot be read"}


def _history(row: Row) -> list[dict[str, Any]]:
    """The run's status changes the catalog knows, oldest first (``{'status', 'time'}``, ISO times)."""
    events = []
    if row.get("created") is not None:
        events.append({"status": "created", "time": cell(row["created"])})
    if row.get("started") is not None:
        events.append({"status": "running", "time": cell(row["started"])})
    if row.get("ended") is not None and row["status"] not in ("running", "registered"):
        events.append({"status": row["status"], "time": cell(row["ended"])})
    elif row["status"] in ("lost", "damaged"):
        events.append({"status": row["status"], "time": cell(row.get("last_seen"))})
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


def _number(value: float) -> Any:
    return value if math.isfinite(value) else repr(value)


def plain(value: Any, depth: int = 0) -> Any:
    """Plain JSON data (non-finite floats as text, times as ISO text, anything else as its repr), for the API."""
    if isinstance(value, Mapping) and depth < 32:
        return {str(k): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 32:
        return [plain(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, datetime):
        return iso(value)
    if hasattr(value, "item"):  # a numpy scalar
        return plain(value.item(), depth)
    return repr(value)


def iso(when: datetime) -> str:
    """A catalog time (local, without a zone) as ISO 8601 text with its UTC offset, which any viewer's browser
    reads as the same instant."""
    return when.astimezone().isoformat()


def cell(value: Any) -> Any:
    """One catalog value as JSON data: numbers, text, lists (notes) and mappings (tags) as they are, times as
    ISO text, NaN and missing as null, infinities as text."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else _number(value)
    if isinstance(value, (bool, int, str)):
        return value
    return plain(value)


def table(rows: Sequence[Row], columns: Sequence[str]) -> dict[str, Any]:
    """The runs as the JSON the runs table reads: ``{'columns': [uid, ...], 'rows': [[uid, ...], ...]}``."""
    return {
        "columns": list(columns),
        "rows": [[cell(row.get(c)) for c in columns] for row in rows],
        "count": len(rows),
    }


def parameter_keys(columns: Iterable[str]) -> list[str]:
    """The short names of the parameters (``parameters.lr`` -> ``lr``)."""
    return [c[len(_PARAMETERS) :] for c in columns if c.startswith(_PARAMETERS)]


def metric_keys(columns: Iterable[str]) -> list[str]:
    """The names of the metrics (``metrics.loss`` -> ``loss``)."""
    return [c[len(_METRICS) :] for c in columns if c.startswith(_METRICS)]


def default_metric(columns: Iterable[str]) -> str | None:
    """The metric a chart shows unless told: the first whose name has ``loss`` in it, else the first."""
    metrics = metric_keys(columns)
    return next((m for m in metrics if "loss" in m.lower()), metrics[0] if metrics else None)


def varying(rows: Sequence[Row], keys: Iterable[str]) -> list[str]:
    """The parameters (short names) whose values differ between runs (all of them for a single run)."""
    out = []
    for key in keys:
        column = _PARAMETERS + key
        values = {json.dumps(cell(r.get(column)), sort_keys=True) for r in rows}
        if len(values) > 1 or len(rows) <= 1:
            out.append(key)
    return out
