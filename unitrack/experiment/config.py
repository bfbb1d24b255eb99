"""GlobalExperimentManager: search across experiment roots (xmen's ``find``/``find_to_dataframe``, SEED_NOTES A12).

The seed marks the class deprecated, but its ``find`` is the search API, so it is kept here over
:class:`~unitrack.experiment.manager.ExperimentManager` roots. Each experiment's ``params.yml`` is read with the
safe loader, and ``param_match`` is compiled by :mod:`unitrack.experiment.search`: numbers compare numerically,
strings lexically, every entry must hold, and nothing is evaluated (xmen ran ``eval`` on stored values, S5).

The roots are given, or read when the manager is built from ``$UNITRACK_HOME/config.yml`` (default
``~/.unitrack/config.yml``): a list under ``roots``, or xmen's mapping under ``experiments``.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.errors import ConfigError, IncompatibleYmlException, InvalidExperimentRoot
from unitrack.experiment.manager import ExperimentManager
from unitrack.experiment.paramfile import commented_to_py, dic_from_yml, flatten
from unitrack.experiment.search import compile_filters

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GlobalExperimentManager", "config_path"]

logger = logging.getLogger(__name__)

HOME_ENV = "UNITRACK_HOME"
_SET_KEYS = ("_root", "_purpose", "_type", "_notes", "_meta")
_GIT_KEYS = ("local", "remote", "commit", "branch")


def config_path() -> Path:
    """``$UNITRACK_HOME/config.yml``, default ``~/.unitrack/config.yml``."""
    home = os.environ.get(HOME_ENV)
    return Path(home) / "config.yml" if home else Path.home() / ".unitrack" / "config.yml"


def _configured_roots() -> list[str]:
    path = config_path()
    if not path.is_file():
        return []
    data = dic_from_yml(path=path)
    roots = data.get("roots") or data.get("experiments") or []
    if isinstance(roots, Mapping):
        roots = list(roots)
    if not isinstance(roots, list):
        raise ConfigError(f"{path}: 'roots' must be a list of experiment roots, got {type(roots).__name__}.")
    return [str(r) for r in roots]


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
        found = _configured_roots() if roots is None else [os.fspath(r) for r in roots]
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
            if not (fnmatch.fnmatch(root, pattern) or fnmatch.fnmatch(os.path.basename(root), pattern)):
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
            mode: ``'all'`` for one row per experiment, ``'set'`` for one row per root (from defaults.yml).
            last: a previous result; search only its rows.
            pattern: glob over the roots (full path or folder name).
            param_match: filters in the A12.4 grammar (``'lr<0.05'``, ``'0<=depth<4'``, ``'_status==finished'``,
                ``'loss'``); only the matched parameters are reported then (all of them without filters).
            types_match: keep only sets of these types (``script``, ``python``, ...).
            load_defaults: read defaults + overrides instead of each params.yml.
            missing_entry: the value of a parameter absent from an experiment.

        Returns:
            Columns: ``_root, _purpose, _type, _notes, _meta``, then ``_name, _created, _status, _messages,
            _version`` (``_name, _created, _version`` with ``load_defaults``; ``_experiments`` instead of
            ``_name`` in set mode), then the parameters; every column has one entry per row.

        Raises:
            ConfigError: a bad ``mode`` or filter (RegisterSyntaxError names its position).
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
        rows: list[dict[str, Any]] = []
        for root, manager, name, params in self._candidates(mode, last, pattern, types_match, load_defaults):
            params.pop("_notes", None)
            if param_match and not checks.matches(params):
                continue
            if param_match:
                shown = list(dict.fromkeys(checks.keys(params)))
            else:
                shown = [k for k in params if not str(k).startswith("_")]
            stamps = params.get("_timestamps")
            stamps = stamps if isinstance(stamps, dict) else {}
            row: dict[str, Any] = {
                "_root": root,
                "_purpose": manager.purpose,
                "_type": manager.type,
                "_notes": list(manager.notes),
                "_meta": params.get("_meta") or {},
                "_name": name,
                "_created": params.get("_created") or stamps.get("created") or manager.created,
                "_status": params.get("_status", ""),
                "_messages": params.get("_messages") or {},
                "_version": params.get("_version") or {},
                "_experiments": list(manager.experiments),
            }
            row = {k: row[k] for k in (*_SET_KEYS, *per_row)}
            row.update({k: params[k] for k in shown if k not in row})
            rows.append(row)
        columns: list[str] = [*_SET_KEYS, *per_row]
        for row in rows:
            columns += [k for k in row if k not in columns]
        return {k: [row.get(k, missing_entry) for row in rows] for k in columns}

    def _candidates(
        self,
        mode: str,
        last: Mapping[str, Sequence[Any]] | None,
        pattern: str,
        types_match: Sequence[str] | None,
        load_defaults: bool,
    ) -> Iterable[tuple[str, ExperimentManager, str, dict[str, Any]]]:
        wanted: set[str] = set()
        if last is not None:
            names = last.get("_name")
            roots = [str(r) for r in last.get("_root", [])]
            # Set-mode results have no _name: their rows are the roots themselves.
            wanted = (
                set(roots)
                if names is None
                else {os.path.join(r, str(n)) for r, n in zip(roots, names, strict=True)}
            )
        for root, manager in self._managers(pattern, types_match):
            if mode == "set":
                if last is None or root in wanted:
                    yield root, manager, "", commented_to_py(manager.load_defaults())
                continue
            defaults = commented_to_py(manager.load_defaults()) if load_defaults else {}
            overides = manager._padded_overides() if load_defaults else []
            for index, path in enumerate(manager.experiments):
                if last is not None and path not in wanted:
                    continue
                name = os.path.relpath(path, root)
                if load_defaults:
                    params = {**defaults, **(overides[index] if index < len(overides) else {})}
                    yield root, manager, name, params
                    continue
                try:
                    params = commented_to_py(dic_from_yml(path=os.path.join(path, "params.yml")))
                except IncompatibleYmlException as exc:
                    logger.warning("skipping %s: %s", path, exc)
                    continue
                yield root, manager, name, params

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
