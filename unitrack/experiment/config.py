"""GlobalExperimentManager: search across experiment roots (xmen's ``find``/``find_to_dataframe``, SEED_NOTES A12).

The seed marks the class deprecated, but its ``find`` is the search API, so it is kept here over
:class:`~unitrack.experiment.manager.ExperimentManager` roots. Each root's runs are read through the run catalog
(:mod:`unitrack.persistence.catalog`), so ``find`` lists what ``unitrack view ROOT`` lists, with the same status
words; ``param_match`` is the filter grammar of ``unitrack view -f`` (:mod:`unitrack.persistence.filters`):
numbers compare numerically, strings lexically, every entry must hold, and nothing is evaluated (xmen ran
``eval`` on stored values, S5).

The roots are given, or read when the manager is built from ``$UNITRACK_HOME/config.yml`` (default
``~/.unitrack/config.yml``): a list under ``roots``, or xmen's mapping under ``experiments``. Every root
registered by ``unitrack register``, ``ExperimentManager`` or ``Experiment.register`` is added there.

Example:
    >>> import tempfile, pathlib
    >>> from unitrack.experiment.manager import ExperimentManager
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "d.yml").write_text("lr: 0.1\\n")
    >>> _ = (tmp / "s.sh").write_text("true\\n")
    >>> m = ExperimentManager(tmp / "set")
    >>> m.initialise(defaults=str(tmp / "d.yml"), script=str(tmp / "s.sh"))
    >>> _ = m.register(string_params="{lr: 0.01 | 0.1}", backend="ephemeral://")
    >>> table = GlobalExperimentManager([tmp / "set"]).find(param_match=["lr<0.05"])
    >>> table["_name"], table["lr"]
    (['lr=0.01'], [0.01])
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError, InvalidExperimentRoot
from unitrack.experiment.manager import ExperimentManager
from unitrack.experiment.paramfile import commented_to_py, flatten
from unitrack.persistence.catalog import config_path, forget_roots, known_roots, read_listing
from unitrack.persistence.filters import KeySpace, compile_filters

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GlobalExperimentManager", "config_path"]

logger = logging.getLogger(__name__)

_SET_KEYS = ("_root", "_purpose", "_type", "_notes", "_meta")
_GIT_KEYS = ("local", "remote", "commit", "branch")


def _regex_or_all(option: bool | str | None) -> str | None:
    if isinstance(option, str):
        return option
    return ".*" if option else None


class GlobalExperimentManager:
    """Search the experiments of several roots.

    Args:
        roots: experiment roots (folders holding ``experiment.yml``); default: those in ``config_path()``.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]] | None = None) -> None:
        found = known_roots() if roots is None else [os.fspath(r) for r in roots]
        self.roots = [os.path.abspath(r) for r in found]

    @property
    def experiments(self) -> dict[str, dict[str, Any]]:
        """xmen's view: each initialised root with its ``created, type, purpose, notes``."""
        out = {}
        for root, manager in self._managers("*", None):
            out[root] = {
                "created": manager.created,
                "type": manager.type,
                "purpose": manager.purpose,
                "notes": list(manager.notes),
            }
        return out

    def _managers(
        self, pattern: str, types_match: Sequence[str] | None
    ) -> list[tuple[str, ExperimentManager]]:
        out = []
        for root in self.roots:
            if not (
                root == pattern
                or fnmatch.fnmatch(root, pattern)
                or fnmatch.fnmatch(os.path.basename(root), pattern)
            ):
                continue
            if not os.path.isfile(os.path.join(root, "experiment.yml")):
                logger.warning("skipping %s: not an experiment root (no experiment.yml)", root)
                continue
            manager = ExperimentManager(root)
            try:
                manager.check_initialised()
            except InvalidExperimentRoot as exc:
                logger.warning("skipping %s: %s", root, exc)
                continue
            if types_match is not None and manager.type not in types_match:
                continue
            out.append((root, manager))
        return out

    def paths(self, pattern: str | None = None, types_match: Sequence[str] | None = None) -> list[str]:
        """Every managed experiment folder of the roots matching ``pattern`` (and of ``types_match``)."""
        return [p for _, m in self._managers(pattern or "*", types_match) for p in m.experiments]

    def clean(self) -> list[str]:
        """Forget the roots that are neither experiment roots nor folders of runs any more (moved or deleted).

        Returns:
            The roots forgotten.
        """
        gone = [
            r
            for r in self.roots
            if not (ExperimentManager.is_root(r) or os.path.isdir(os.path.join(r, ".unitrack")))
        ]
        forget_roots(gone)
        self.roots = [r for r in self.roots if r not in gone]
        return gone

    def find(
        self,
        mode: str = "all",
        last: Mapping[str, Sequence[Any]] | None = None,
        pattern: str = "*",
        param_match: Sequence[str] | None = None,
        types_match: Sequence[str] | None = None,
        load_defaults: bool = False,
        missing_entry: Any = "",
    ) -> dict[str, list[Any]]:
        """Find experiments (``mode='all'``) or sets (``mode='set'``) whose parameters pass every filter.

        Args:
            mode: ``'all'`` for one row per run, ``'set'`` for one row per root (from defaults.yml).
            last: a previous result; search only its rows.
            pattern: glob over the roots (full path or folder name).
            param_match: filters in the grammar of ``unitrack view -f`` (``'lr<0.05'``, ``'0<=depth<4'``,
                ``'_status==finished'``, ``'loss'``); only the matched parameters are reported then (all of them
                without filters).
            types_match: keep only sets of these types (``script``, ``python``, ...).
            load_defaults: read defaults + overrides instead of the runs.
            missing_entry: the value of a parameter absent from an experiment.

        Returns:
            Columns: ``_root, _purpose, _type, _notes, _meta``, then ``_name, _created, _status, _messages,
            _version`` (``_name, _created, _version`` with ``load_defaults``; ``_experiments`` instead of
            ``_name`` in set mode), then the parameters; every column has one entry per row.

        Raises:
            ConfigError: a bad ``mode`` or filter (RegisterSyntaxError names its position; UnknownKeyError a
                filter that names no key of any run searched).
        """
        if mode not in ("all", "set"):
            raise ConfigError(f"mode must be 'all' or 'set', got {mode!r}.")
        checks = compile_filters(list(param_match or []))
        per_row = (
            ["_name", "_created", "_version"]
            if load_defaults
            else ["_name", "_created", "_status", "_messages", "_version"]
        )
        if mode == "set":
            per_row = [k for k in per_row if k != "_name"] + ["_experiments"]
        candidates = list(self._candidates(mode, last, pattern, types_match, load_defaults))
        columns = list(dict.fromkeys(k for *_, row in candidates for k in row if not k.startswith("_")))
        bound = checks.bind(KeySpace(columns), strict=bool(candidates)) if param_match else None
        rows: list[dict[str, Any]] = []
        for root, manager, row in candidates:
            if bound is not None and not bound.matches(row):
                continue
            if bound is not None:
                shown = [
                    _bare(c) for c in bound.columns if c.startswith("parameters.") or c.startswith("metrics.")
                ]
            else:
                shown = [k for k in row.get("_params", {})]
            params = dict(row.get("_params", {}))
            for column in bound.columns if bound is not None else []:
                if column.startswith("metrics.") and column in row:
                    params.setdefault(_bare(column), row[column])
            out: dict[str, Any] = {
                "_root": root,
                "_purpose": manager.purpose if manager is not None else "",
                "_type": manager.type if manager is not None else "",
                "_notes": list(manager.notes) if manager is not None else [],
                "_meta": row.get("_meta") or {},
                "_name": row.get("name", ""),
                "_created": row.get("_created") or (manager.created if manager is not None else ""),
                "_status": row.get("status", ""),
                "_messages": row.get("_messages") or {},
                "_version": row.get("_version") or {},
                "_experiments": list(manager.experiments) if manager is not None else [],
            }
            out = {k: out[k] for k in (*_SET_KEYS, *per_row)}
            out.update({k: params[k] for k in dict.fromkeys(shown) if k not in out and k in params})
            rows.append(out)
        result_columns: list[str] = [*_SET_KEYS, *per_row]
        for out in rows:
            result_columns += [k for k in out if k not in result_columns]
        return {k: [out.get(k, missing_entry) for out in rows] for k in result_columns}

    def _candidates(
        self,
        mode: str,
        last: Mapping[str, Sequence[Any]] | None,
        pattern: str,
        types_match: Sequence[str] | None,
        load_defaults: bool,
    ) -> Iterable[tuple[str, ExperimentManager | None, dict[str, Any]]]:
        """(root, its manager, a catalog row plus xmen's ``_params``, ``_meta``, ``_messages``, ...) per run."""
        wanted: set[tuple[str, str]] | None = None
        if last is not None:
            names = last.get("_name")
            roots = [str(r) for r in last.get("_root", [])]
            # Set-mode results have no _name: their rows are the roots themselves.
            wanted = (
                {(r, "") for r in roots} if names is None else set(zip(roots, map(str, names), strict=True))
            )
        for root, manager in self._sources(pattern, types_match):
            if mode == "set" or load_defaults:
                if manager is None:
                    continue
                defaults = commented_to_py(manager.load_defaults())
                if mode == "set":
                    if wanted is None or (root, "") in wanted:
                        yield root, manager, _defaults_row(defaults, "")
                    continue
                for path, override in zip(manager.experiments, manager._padded_overides(), strict=True):
                    name = os.path.basename(path)
                    if wanted is None or (root, name) in wanted:
                        yield root, manager, _defaults_row({**defaults, **override}, name)
                continue
            listing = read_listing(root)
            by_uid = {t.uid: t for t in listing.trials}
            for row in listing.rows:
                if wanted is not None and (root, str(row["name"])) not in wanted:
                    continue
                trial = by_uid.get(row["uid"])
                metadata = trial.metadata if trial is not None else {}
                created = row.get("created")
                row = {
                    **row,
                    "_params": dict(trial.parameters) if trial is not None else _unflatten(row),
                    "_meta": metadata.get("meta") or {},
                    "_messages": metadata.get("messages") or {},
                    "_version": metadata.get("version") or {},
                    "_created": created.isoformat() if created is not None else "",
                }
                yield root, manager, row

    def _sources(
        self, pattern: str, types_match: Sequence[str] | None
    ) -> list[tuple[str, ExperimentManager | None]]:
        """The roots matching ``pattern``: experiment roots with their manager, folders of runs with None."""
        out: list[tuple[str, ExperimentManager | None]] = []
        for root in self.roots:
            if not (fnmatch.fnmatch(root, pattern) or fnmatch.fnmatch(os.path.basename(root), pattern)):
                continue
            if os.path.isfile(os.path.join(root, "experiment.yml")):
                found = self._managers(root, types_match)
                out += [(root, m) for _, m in found]
            elif types_match is None and os.path.isdir(os.path.join(root, ".unitrack")):
                out.append((root, None))  # runs logged with TrackClient: a folder of runs, no experiment set
            else:
                logger.warning("skipping %s: not an experiment root or a folder of runs", root)
        return out

    def find_to_dataframe(
        self,
        table: Mapping[str, Sequence[Any]],
        verbose: bool = True,
        display_git: bool | None = None,
        display_purpose: bool | None = None,
        display_date: bool | None = None,
        display_messages: bool | str | None = None,
        display_status: bool | None = None,
        display_meta: bool | str | None = None,
        display_params: bool | str | None = None,
    ) -> tuple[pd.DataFrame, str]:
        """Turn a :meth:`find` result into a DataFrame: meta, git version and messages flattened into columns.

        Args:
            table: the result of :meth:`find`.
            verbose: show every column (the ``display_*`` arguments are then ignored).
            display_git, display_purpose, display_date, display_status: show those columns.
            display_messages, display_meta, display_params: ``True`` for all such columns, or a regex over names.

        Returns:
            The frame (``name`` is the experiment's path below the common prefix) and that prefix.
        """
        import pandas as pd

        cols: dict[str, list[Any]] = {k: list(v) for k, v in table.items()}
        n = len(cols.get("_root", []))
        param_keys = [k for k in cols if not k.startswith("_")]
        display: dict[str, list[Any]] = {"root": [str(r) for r in cols["_root"]]}
        if "_name" in cols:
            display["name"] = [str(x) for x in cols["_name"]]
        display["created"] = cols.get("_created", [""] * n)
        display["type"] = cols.get("_type", [""] * n)
        display["purpose"] = cols.get("_purpose", [""] * n)
        meta_keys = self._spread(
            display, [flatten(m) if isinstance(m, Mapping) else {} for m in cols["_meta"]]
        )
        if "_status" in cols:
            display["status"] = cols["_status"]
        versions = [v if isinstance(v, Mapping) else {} for v in cols.get("_version", [{}] * n)]
        for key in _GIT_KEYS:
            display[key] = [
                (v.get("git") or {}).get(key) if isinstance(v.get("git"), Mapping) else None for v in versions
            ]
        message_keys: list[str] = []
        if "_messages" in cols:
            messages = [m if isinstance(m, Mapping) else {} for m in cols["_messages"]]
            message_keys = self._spread(display, messages)
        if verbose:
            keys = list(display) + [k for k in param_keys if k not in display]
        else:
            keys = ["name"] if "name" in display else []
            keys += ["created"] if display_date else []
            keys += ["status"] if display_status and "status" in display else []
            keys += list(_GIT_KEYS) if display_git else []
            for option, names in ((display_meta, meta_keys), (display_messages, message_keys)):
                regex = _regex_or_all(option)
                keys += [k for k in names if regex is not None and re.match(regex, k)]
            keys += ["purpose"] if display_purpose else []
            regex = _regex_or_all(display_params)
            keys += [k for k in param_keys if regex is None or re.match(regex, k)]
        for key in param_keys:
            display.setdefault(key, cols[key])
        roots = display["root"]
        prefix = os.path.dirname(os.path.commonprefix(roots)) if roots else ""
        short = [r[len(prefix) + 1 :] if prefix not in ("", "/") else r for r in roots]
        if "name" in display:
            display["name"] = [
                f"{r}/{name}" if r else name for r, name in zip(short, display["name"], strict=True)
            ]
        else:
            display["name"] = short
            keys = ["name", *keys] if "name" not in keys else keys
        keys = [k for k in dict.fromkeys(keys) if k != "root"]
        frame = pd.DataFrame({k: display[k] for k in keys}, columns=keys)
        return frame, prefix

    @staticmethod
    def _spread(display: dict[str, list[Any]], dicts: Sequence[Mapping[str, Any]]) -> list[str]:
        """Add one column per key of ``dicts`` (``''`` where a row lacks it); return the new keys."""
        keys: list[str] = []
        for d in dicts:
            keys += [str(k) for k in d if str(k) not in keys and str(k) not in display]
        for key in keys:
            display[key] = [d.get(key, "") for d in dicts]
        return keys


def _bare(column: str) -> str:
    """``lr`` for ``parameters.lr``, ``loss`` for ``metrics.loss``."""
    return column.split(".", 1)[1] if column.startswith(("parameters.", "metrics.")) else column


def _unflatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level parameters of a catalog row (nested keys joined back into dicts)."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if not column.startswith("parameters."):
            continue
        *parents, leaf = column[len("parameters.") :].split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _defaults_row(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A row for ``load_defaults``/``mode='set'``: the parameters as the catalog names them, and xmen's keys."""
    visible = {str(k): v for k, v in params.items() if not str(k).startswith("_")}
    row: dict[str, Any] = {"name": name, "_params": visible, "_meta": params.get("_meta") or {}}
    row["_version"] = params.get("_version") or {}
    row["_created"] = params.get("_created") or ""
    for key, value in visible.items():
        row[f"parameters.{key}"] = value
    return row
