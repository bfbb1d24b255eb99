"""ExperimentManager: a folder of experiments made from one ``defaults.yml`` and one ``script.sh`` (xmen's sets).

Layout (DESIGN.md §3)::

    {root}/
      defaults.yml  script.sh  experiment.yml
      {k=v__k=v}/             one experiment: params.yml (xmen layout), run.sh, run.log, and its trial
                              (with the default backend, the trial's cox store lives in the same folder)

Safety (SEED_NOTES S6, S7): folder names are sanitized ``k=v`` text and always resolve under the root; ``run.sh``
passes only quoted paths relative to itself; values never reach a shell, they travel in ``params.yml``;
``clean`` deletes only folders inside the root.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "d.yml").write_text("a: 1\\nb: x\\n")
    >>> _ = (root / "s.sh").write_text('echo "$1"\\n')
    >>> m = ExperimentManager(root / "set")
    >>> m.initialise(defaults=str(root / "d.yml"), script=str(root / "s.sh"))
    >>> [os.path.basename(p) for p in m.register(string_params="{a: 1 | 2}", backend="ephemeral://")]
    ['a=1', 'a=2']
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.util
import inspect
import io
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from unitrack.errors import (
    AlreadyExistsError,
    ConfigError,
    ExperimentNotFoundError,
    IncompatibleYmlException,
    InvalidExperimentRoot,
    UnitrackError,
)
from unitrack.experiment.experiment import _SPECIAL_HELP, Experiment
from unitrack.experiment.link import embedded_at, experiment_group, group_name, holds_run, to_status
from unitrack.experiment.meta import _user, version_string
from unitrack.experiment.paramfile import (
    _rt_yaml,
    atomic_write_text,
    commented_to_py,
    dic_from_yml,
    dic_to_yaml,
    load_param,
    now_iso,
    parse_user_yaml,
    save_param,
    to_yaml_value,
)
from unitrack.experiment.slurm import write_array_script
from unitrack.experiment.sweep import expand
from unitrack.persistence.catalog import remember_root
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol, resolve_uri
from unitrack.persistence.structure import Trial, TrialGroup, TrialUpdate

__all__ = ["ExperimentManager", "load_experiment_class", "sanitize_name"]

logger = logging.getLogger(__name__)

#: Longest experiment folder name; longer ``k=v`` names keep a prefix and a hash of the whole.
MAX_FOLDER_CHARS = 120
#: How many ``_1``, ``_2`` … suffixes are tried before register gives up (never overwrites).
SAME_NAMES = 99
#: Statuses ``run`` starts without ``rerun``.
RUNNABLE = ("registered", "timeout", "requeue")

_CONFIG = "experiment.yml"


def sanitize_name(text: str) -> str:
    """Make ``text`` a safe folder name: no ``/``, ``\\``, NUL, control characters, ``..`` or leading ``.``.

    Example:
        >>> sanitize_name("a=../../x")
        'a=.__.__x'
    """
    chars = ["_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in text]
    name = "".join(chars)
    while ".." in name:
        name = name.replace("..", "._")
    if name.startswith("."):
        name = "_" + name[1:]
    if len(name) > MAX_FOLDER_CHARS:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[: MAX_FOLDER_CHARS - 13]}~{digest}"
    return name or "_"


def _format_value(value: Any) -> str:
    return str(value)


#: Characters a YAML reader may take as line breaks or byte-order marks: escaped in double-quoted scalars.
_YAML_UNSAFE = re.compile("[\x80-\x9f\u2028\u2029\ufeff\ud800-\udfff]")


def _json_scalar(value: Any) -> str:
    """``value`` as JSON that YAML reads back as the same value (JSON is YAML, but for a few characters)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _same(a: Any, b: Any) -> bool:
    """Whether two parameter values are the same (as YAML and every backend store them)."""
    return json.dumps(to_yaml_value(a), sort_keys=True, default=str) == json.dumps(
        to_yaml_value(b), sort_keys=True, default=str
    )


def _fast_yaml(data: Mapping[str, Any]) -> str:
    """Block YAML for experiment.yml: each scalar and list item written as JSON (a subset of YAML), so a root of
    thousands of experiments is saved in milliseconds; ruamel's emitter for anything JSON cannot say."""
    try:
        lines = []
        for key, value in data.items():
            if isinstance(value, list):
                lines.append(f"{key}:" if value else f"{key}: []")
                lines += [f"- {_json_scalar(item)}" for item in value]
            else:
                lines.append(f"{key}: {_json_scalar(value)}")
    except (TypeError, ValueError):  # NaN, infinities, or a value JSON cannot hold
        return dic_to_yaml(dict(data))
    return "\n".join(lines) + "\n"


def _split_file_target(target: str) -> tuple[str, str | None]:
    """``path/file.py:Class`` -> (path/file.py, Class); a plain file or ``module:Class`` -> (target, None)."""
    head, sep, tail = target.rpartition(":")
    if sep and head.endswith(".py") and re.fullmatch(r"[A-Za-z_]\w*", tail):
        return head, tail
    return target, None


def load_experiment_class(target: str) -> type[Experiment]:
    """Load an Experiment class from ``module:Class``, ``path/file.py:Class`` or a Python file (its one Experiment
    subclass).

    ``module:Class`` is imported with the current folder first on the import path, as ``python -m`` does, so
    ``--experiment quad:Quadratic`` works in the folder holding ``quad.py``.

    Raises:
        ConfigError: when nothing (or more than one class) fits.
    """
    path_text, wanted = _split_file_target(target)
    if path_text.endswith(".py") or os.path.isfile(path_text):
        path = os.path.abspath(path_text)
        if not os.path.isfile(path):
            raise ConfigError(f"Experiment file {path_text!r} does not exist.")
        # As `python file.py` would: modules beside the file import (e.g. `from models import Net`).
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = "_unitrack_experiment_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"Cannot import {path_text!r} as Python.")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, Experiment)
            and obj is not Experiment
            and obj.__module__ == module_name
        ]
        if wanted is not None:
            named = getattr(module, wanted, None)
            if inspect.isfunction(named):
                from unitrack.experiment.functional import functional_experiment

                return functional_experiment(named)
            if not (inspect.isclass(named) and issubclass(named, Experiment)):
                names = ", ".join(sorted(c.__name__ for c in found)) or "none"
                raise ConfigError(f"{path_text} has no Experiment {wanted!r}; it defines: {names}.")
            return named
        if len(found) != 1:
            names = ", ".join(sorted(c.__name__ for c in found))
            raise ConfigError(
                f"{target} defines {len(found)} Experiment subclasses ({names}); name one as {target}:Class."
            )
        return found[0]
    from unitrack.experiment.launch import load_experiment

    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # as `python -m module` has the current folder first
    try:
        return load_experiment(target)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot load experiment {target!r}: {exc}") from exc


#: A path ruamel writes as a plain scalar: its params.yml line can be made without the emitter.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./=+,@%~-]*")


class _ParamsWriter:
    """The params.yml text of each experiment of a grid, as ruamel's round-trip emitter writes it.

    A top-level key's text depends on that key and its value only, so each is emitted once and reused: a
    thousand-experiment grid costs about as many emitter calls as it has distinct values, not a full document
    per experiment (which dominated ``register``). The first document is checked against a full emit; if they
    differ, every document is emitted in full.
    """

    def __init__(self, specials: Mapping[str, Any], meta: Any, defaults: CommentedMap) -> None:
        self.dumper = _rt_yaml()
        self.specials = dict(specials)
        self.meta = meta
        self.defaults = [(k, v) for k, v in defaults.items() if not str(k).startswith("_")]
        self._chunks: dict[tuple[str, str, str], str] = {}
        self._fixed: str | None = None  # the specials after _root, and _meta
        self._root_line: tuple[str, str] | None = None  # (text, folder) of a _root line to substitute in
        self._checked: bool | None = None

    def _emit(self, doc: CommentedMap) -> str:
        stream = io.StringIO()
        self.dumper.dump(doc, stream)
        return stream.getvalue()

    def _document(self, folder: str, override: Mapping[str, Any]) -> CommentedMap:
        doc = CommentedMap()
        for key, value in {**self.specials, "_root": folder}.items():
            doc[key] = value
            if not isinstance(value, (dict, list)):
                # ruamel moves comments of collection values into later keys on rewrite: scalars only.
                doc.yaml_add_eol_comment(_SPECIAL_HELP[key], key)
        doc["_meta"] = self.meta
        for key, value in self.defaults:
            doc[key] = value
        for key, value in override.items():
            doc[key] = value
        return doc

    def _chunk(self, key: str, value: Any, cache_key: tuple[str, str, str]) -> str:
        found = self._chunks.get(cache_key)
        if found is None:
            doc = CommentedMap()
            doc[key] = value
            found = self._chunks[cache_key] = self._emit(doc)
        return found

    def _root(self, folder: str) -> str:
        if (
            self._root_line is not None
            and _PLAIN_PATH.fullmatch(folder)
            and _PLAIN_PATH.fullmatch(self._root_line[1])
        ):
            text, seen = self._root_line
            return text.replace(seen, folder, 1)
        doc = CommentedMap()
        doc["_root"] = folder
        doc.yaml_add_eol_comment(_SPECIAL_HELP["_root"], "_root")
        text = self._emit(doc)
        self._root_line = (text, folder)
        return text

    def _fast(self, folder: str, override: Mapping[str, Any]) -> str:
        if self._fixed is None:
            doc = self._document(folder, {})
            for key in [*doc]:
                if key not in self.specials or key == "_root":
                    if key != "_meta":
                        del doc[key]
            self._fixed = self._emit(doc)
        parts = [self._root(folder), self._fixed]
        for key, value in self.defaults:
            if key in override:
                new = override[key]
                parts.append(self._chunk(key, new, (key, type(new).__name__, repr(new))))
            else:
                parts.append(self._chunk(key, value, (key, "default", str(id(value)))))
        return "".join(parts)

    def text(self, folder: str, override: Mapping[str, Any]) -> str:
        """The params.yml of the experiment in ``folder`` with ``override`` applied to the defaults."""
        if any(key not in dict(self.defaults) for key in override) or self._checked is False:
            return self._emit(self._document(folder, override))
        fast = self._fast(folder, override)
        if self._checked is None:
            self._checked = fast == self._emit(self._document(folder, override))
            if not self._checked:
                logger.debug("params.yml emitted in full: the per-key texts differ from a whole document")
                return self._emit(self._document(folder, override))
        return fast


class ExperimentManager:
    """Manage a set of experiments in ``root`` (created if missing; ``''`` is the working folder).

    Attributes follow xmen: ``root, defaults, script, experiments, overides, created, purpose, notes, type``.
    """

    def __init__(self, root: str | os.PathLike[str] = "", headless: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root) or os.getcwd())
        self.headless = headless
        self.defaults = ""
        self.script = ""
        self.experiments: list[str] = []
        self.overides: list[dict[str, Any]] = []
        self.created = ""
        self.purpose = ""
        self.notes: list[str] = []
        self.type = ""
        self._sessions: dict[str, tuple[Protocol, TrialGroup]] = {}
        os.makedirs(self.root, exist_ok=True)
        if os.path.exists(self._config_path):
            self._load_config()

    # ------------------------------------------------------------------------------------------- config
    @property
    def _config_path(self) -> str:
        return os.path.join(self.root, _CONFIG)

    def _load_config(self) -> None:
        data = dic_from_yml(path=self._config_path)
        recorded = str(data.get("root") or "")
        self.defaults = self._anchor(data.get("defaults") or "", recorded)
        self.script = self._anchor(data.get("script") or "", recorded)
        self.experiments = [self._anchor(p, recorded) for p in data.get("experiments") or []]
        self.overides = [dict(o or {}) for o in data.get("overides") or []]
        self.created = str(data.get("created") or "")
        self.purpose = str(data.get("purpose") or "")
        self.notes = [str(n) for n in data.get("notes") or []]
        self.type = str(data.get("type") or "")

    def _anchor(self, path: Any, recorded: str) -> str:
        """A path from experiment.yml, absolute: relative ones are under the root wherever it is now.

        Roots written before roots were relocatable recorded absolute paths, and the root's own under ``root``:
        those under the recorded root are taken under the root's present place (a copied or moved old root).
        """
        text = str(path)
        if not text:
            return ""
        if not os.path.isabs(text):
            return os.path.normpath(os.path.join(self.root, text))
        if os.path.isabs(recorded) and recorded != self.root:
            inside = os.path.relpath(text, recorded)
            if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
                return os.path.normpath(os.path.join(self.root, inside))
        return text

    def _relative(self, path: str) -> str:
        """``path`` relative to the root when it lies inside it (experiment.yml never records the root)."""
        if not path:
            return ""
        inside = os.path.relpath(path, self.root)
        return path if inside == os.pardir or inside.startswith(os.pardir + os.sep) else inside

    def _save_config(self) -> None:
        data = {
            "root": ".",
            "defaults": self._relative(self.defaults),
            "script": self._relative(self.script),
            "experiments": [self._relative(p) for p in self.experiments],
            "overides": [to_yaml_value(o) for o in self.overides],
            "created": self.created,
            "purpose": self.purpose,
            "notes": list(self.notes),
            "type": self.type,
        }
        atomic_write_text(self._config_path, _fast_yaml(data))

    def check_initialised(self) -> None:
        """Raise InvalidExperimentRoot unless ``experiment.yml``, ``script.sh`` and ``defaults.yml`` exist."""
        missing = [
            f
            for f in (_CONFIG, "script.sh", "defaults.yml")
            if not os.path.isfile(os.path.join(self.root, f))
        ]
        if missing:
            raise InvalidExperimentRoot(self.root, missing)

    @staticmethod
    def is_root(root: str | os.PathLike[str]) -> bool:
        """Whether ``root`` holds experiment.yml, script.sh and defaults.yml (without creating anything)."""
        return all(
            os.path.isfile(os.path.join(os.fspath(root), f)) for f in (_CONFIG, "script.sh", "defaults.yml")
        )

    @property
    def is_initialised(self) -> bool:
        """Whether the root holds experiment.yml, script.sh and defaults.yml."""
        try:
            self.check_initialised()
        except InvalidExperimentRoot:
            return False
        return True

    def initialise(
        self,
        *,
        defaults: str | os.PathLike[str] = "",
        script: str | os.PathLike[str] = "",
        purpose: str = "",
        name: str | None = None,
        updates: str | Mapping[str, Any] | None = None,
    ) -> None:
        """Make the root an experiment set from ``defaults``+``script`` files, or from an experiment ``name``.

        ``name`` is ``module:Class`` or a Python file defining one Experiment subclass: its ``defaults.yml`` and
        ``script.sh`` are written by the experiment (``to_root``). Without either, the files must already be in
        the root. ``updates`` (a YAML mapping such as ``"{lr: 0.01}"``, or a dict) changes the defaults written
        into ``defaults.yml``, as xmen's ``init -u`` did; every key must be a parameter.

        Raises:
            AlreadyExistsError: when the root already holds experiment.yml.
            ConfigError: when a file is missing or the experiment cannot be loaded.
        """
        if os.path.exists(self._config_path):
            raise AlreadyExistsError(f"{self.root} is already an experiment root ({_CONFIG} exists).")
        target_defaults = os.path.join(self.root, "defaults.yml")
        target_script = os.path.join(self.root, "script.sh")
        changes = self._updates(updates)
        if name:
            self._from_experiment(name, changes)
            self.type = "python"
        else:
            for given, target, what in (
                (defaults, target_defaults, "defaults"),
                (script, target_script, "script"),
            ):
                if given:
                    if not os.path.isfile(given):
                        raise ConfigError(f"The {what} file {os.fspath(given)!r} does not exist.")
                    if os.path.abspath(given) != target:
                        shutil.copyfile(given, target)
                elif not os.path.isfile(target):
                    raise ConfigError(
                        f"No {what} given and none in {self.root}; pass --defaults and --script."
                    )
            self.type = "script"
            dic_from_yml(path=target_defaults)  # must be a mapping, read safely
            if changes:
                self._update_defaults(target_defaults, changes)
        os.chmod(target_script, 0o755)  # noqa: S103 - the user's script, run by run.sh
        self.defaults, self.script = target_defaults, target_script
        self.created, self.purpose = now_iso(), purpose
        self._save_config()
        remember_root(self.root)  # GlobalExperimentManager() finds it
        logger.info("Experiment root created at %s", self.root)

    @staticmethod
    def _updates(updates: str | Mapping[str, Any] | None) -> dict[str, Any]:
        if updates is None or updates == "":
            return {}
        data = parse_user_yaml(updates, what="updates") if isinstance(updates, str) else dict(updates)
        if not isinstance(data, dict):
            raise ConfigError(f"updates must be a YAML mapping such as '{{lr: 0.01}}', not {updates!r}.")
        return data

    @staticmethod
    def _update_defaults(path: str, changes: Mapping[str, Any]) -> None:
        defaults = load_param(os.path.dirname(path), os.path.basename(path))
        unknown = sorted(k for k in changes if k not in defaults or str(k).startswith("_"))
        if unknown:
            known = sorted(k for k in defaults if not str(k).startswith("_"))
            raise ConfigError(f"updates name {unknown}, which are not parameters in {path}; known: {known}.")
        for key, value in changes.items():
            defaults[key] = value
        save_param(defaults, os.path.dirname(path), os.path.basename(path))

    def _from_experiment(self, target: str, changes: Mapping[str, Any] | None = None) -> None:
        cls = load_experiment_class(target)
        exp = cls()
        if changes:
            exp.update(dict(changes))
        path_text, wanted = _split_file_target(target)
        if path_text.endswith(".py") or os.path.isfile(path_text):
            # A file: the launcher loads its class (no PYTHONPATH, no generated Python, and the file needs no
            # `if __name__ == "__main__"` block), with the file's folder first on sys.path as a script has.
            exp.to_defaults(self.root)
            launched = os.path.abspath(path_text) + (f":{wanted}" if wanted else "")
            command = [sys.executable, "-m", "unitrack.experiment.launch", launched]
            lines = ["#!/bin/bash", f"# unitrack: run {cls.__qualname__} with the params.yml given as $1"]
            lines.append(f'exec {" ".join(shlex.quote(p) for p in command)} --execute "$1"')
            atomic_write_text(os.path.join(self.root, "script.sh"), "\n".join(lines) + "\n")
        else:
            exp.to_root(self.root)

    def load_defaults(self) -> CommentedMap:
        """``defaults.yml`` as a comment-preserving map."""
        return load_param(self.root, "defaults.yml")

    def _parameters(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {str(k): commented_to_py(v) for k, v in defaults.items() if not str(k).startswith("_")}

    def save_params(self, params: Mapping[str, Any], root: str | os.PathLike[str]) -> None:
        """Write ``params`` to ``{root}/params.yml`` (absolute; atomic)."""
        atomic_write_text(os.path.join(os.path.abspath(os.fspath(root)), "params.yml"), dic_to_yaml(params))

    def load_params(self, experiment_path: str, experiment_name: bool = False) -> CommentedMap:
        """Load the params.yml of an experiment (``experiment_name=True``: a path relative to the root)."""
        path = os.path.join(self.root, experiment_path) if experiment_name else experiment_path
        return load_param(path)

    def update_meta(self) -> None:
        """Refresh ``_meta`` in defaults.yml and every params.yml with this machine's description."""
        from unitrack.experiment.meta import get_meta

        self.check_initialised()
        meta = get_meta()
        defaults = self.load_defaults()
        defaults["_meta"] = meta
        atomic_write_text(self.defaults, dic_to_yaml(defaults))
        for path in self.experiments:
            params = load_param(path)
            params["_meta"] = meta
            self.save_params(params, path)

    # ------------------------------------------------------------------------------------------ register
    def _folder(self, name: str) -> str:
        """The folder for ``name``: sanitized, and checked to lie directly under the root."""
        safe = sanitize_name(name)
        path = os.path.realpath(os.path.join(self.root, safe))
        if os.path.dirname(path) != os.path.realpath(self.root):
            raise ConfigError(f"Experiment name {name!r} would leave the root {self.root}.")
        return os.path.join(self.root, safe)

    def _free_folder(self, base: str, taken: set[str]) -> str:
        folder = self._folder(base)
        candidates = [folder] + [f"{folder}_{i}" for i in range(1, SAME_NAMES + 1)]
        for candidate in candidates:
            if candidate not in taken and not holds_run(candidate):  # a folder holding any run is taken (#12)
                return candidate
        raise AlreadyExistsError(
            f"{folder} and {os.path.basename(folder)}_1 … _{SAME_NAMES} are all taken; "
            "choose another name or clean the root."
        )

    def register(
        self,
        name: str | None = None,
        string_params: str | None = None,
        purpose: str = "",
        header: str | None = None,
        shell: str = "/bin/bash",
        repeats: int | None = None,
        *,
        samples: int | None = None,
        seed: int | None = None,
        zip: bool = False,  # noqa: A002 - the CLI flag's name
        backend: str | None = None,
    ) -> list[str]:
        """Register one experiment per combination of ``string_params`` (see :mod:`unitrack.experiment.sweep`).

        Each experiment gets ``{root}/{k=v__k=v}/params.yml`` (defaults with the overrides applied), ``run.sh``
        and a trial in the backend (``backend``, then ``$UNITRACK_URI``, then ``hdf5://{root}``).

        A combination already registered here (same name, same parameters) is refused unless ``repeats`` is
        given: then each combination gets ``repeats`` more copies (``_1``, ``_2``, ...). Registering a grid twice
        never doubles it silently.

        Returns:
            The experiment folders created.

        Raises:
            InvalidExperimentRoot: when the root is not initialised.
            ValueError: (ConfigError) when neither name nor string_params is given, the string is invalid, or a
                combination is already registered and ``repeats`` is not given (nothing is written).
            AlreadyExistsError: when every ``_1`` … ``_99`` suffix of a name is taken (nothing is overwritten).
        """
        self.check_initialised()
        if not name and not string_params:
            raise ConfigError("register needs a name or string_params (e.g. '{lr: 0.1 | 0.01}').")
        again = repeats is not None
        repeats = 1 if repeats is None else repeats
        if repeats < 1:
            raise ConfigError(f"repeats must be at least 1, not {repeats}.")
        if shell not in ("/bin/bash", "/bin/sh", "bash", "sh", "/usr/bin/env bash") and not os.path.isabs(
            shell
        ):
            raise ConfigError(f"shell must be an absolute path, not {shell!r}.")
        defaults = self.load_defaults()
        parameters = self._parameters(defaults)
        overrides = (
            expand(string_params, parameters, samples=samples, seed=seed, zip=zip) if string_params else [{}]
        )
        header_text = ""
        if header:
            header_text = Path(header).read_text(encoding="utf-8") if os.path.isfile(header) else header
        if not again:
            self._refuse_registered(name, overrides, parameters)
        taken: set[str] = set()
        planned: list[tuple[str, dict[str, Any]]] = []
        for override in overrides:
            base = self._base_name(name, override)
            for _ in range(repeats):
                folder = self._free_folder(base, taken)
                taken.add(folder)
                planned.append((folder, override))
        now = now_iso()
        user, host = _user(), socket.gethostname()
        version = commented_to_py(defaults.get("_version")) or {}
        meta = commented_to_py(defaults.get("_meta")) or {}
        specials: dict[str, Any] = {
            "_root": "",
            "_status": "registered",
            "_purpose": purpose or self.purpose,
            "_notes": [],
            "_messages": {},
            "_timestamps": {"created": now, "registered": now, "start": None, "stopped": None, "last": now},
            "_user": user,
            "_host": host,
            "_version": version,
        }
        writer = _ParamsWriter(specials, meta, defaults)
        for folder, override in planned:
            os.makedirs(folder, exist_ok=True)
            text = writer.text(folder, {k: to_yaml_value(v) for k, v in override.items()})
            atomic_write_text(os.path.join(folder, "params.yml"), text, fsync=False)
            self._write_run_sh(folder, shell, header_text)
        self._link_trials(planned, parameters, version, purpose or self.purpose, backend)
        self.experiments.extend(folder for folder, _ in planned)
        self.overides.extend(o for _, o in planned)
        self._save_config()
        return [folder for folder, _ in planned]

    link = register

    @staticmethod
    def _base_name(name: str | None, override: Mapping[str, Any]) -> str:
        return name or "__".join(f"{k}={_format_value(v)}" for k, v in override.items()) or "default"

    def _refuse_registered(
        self, name: str | None, overrides: Sequence[Mapping[str, Any]], parameters: Mapping[str, Any]
    ) -> None:
        """Raise when a combination is already registered here: same folder name (up to ``_N``), same values."""
        by_base: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for path, override in zip(self.experiments, self._padded_overides(), strict=True):
            folder = os.path.basename(path)
            base = re.sub(r"_\d+$", "", folder)
            entry = (folder, {**parameters, **override})
            by_base.setdefault(base, []).append(entry)
            if base != folder:
                by_base.setdefault(folder, []).append(entry)
        found = []
        for wanted in overrides:
            base = sanitize_name(self._base_name(name, wanted))
            values = {**parameters, **{k: to_yaml_value(v) for k, v in wanted.items()}}
            found += [
                f
                for f, v in by_base.get(base, [])
                if f == base or re.fullmatch(re.escape(base) + r"_\d+", f)
                if _same(v, values)
            ]
        if found:
            shown = ", ".join(sorted(set(found))[:5]) + (", ..." if len(set(found)) > 5 else "")
            raise ConfigError(
                f"{len(set(found))} of these experiments are already registered in {self.root} ({shown}). "
                "Register more copies with -x/--repeats N (repeats=N), or run them again with "
                "`unitrack run PATTERN --rerun`."
            )

    def _write_run_sh(self, folder: str, shell: str, header: str) -> None:
        # Paths are taken relative to run.sh itself: nothing interpolated but the shell and the user's header.
        lines = [
            f"#!{shell}",
            header.rstrip("\n"),
            'here="$(cd "$(dirname "$0")" && pwd)"',
            f'exec {" ".join(shlex.quote(p) for p in shlex.split(shell))} "$here/../script.sh" "$here/params.yml"',
        ]
        path = os.path.join(folder, "run.sh")
        atomic_write_text(path, "\n".join(line for line in lines if line) + "\n", fsync=False)
        os.chmod(path, 0o755)  # noqa: S103 - run by the user and the runner

    # --------------------------------------------------------------------------------------------- trials
    def _uri(self, backend: str | None) -> str:
        return resolve_uri(backend, self.root)

    def _protocol(self, backend: str | None) -> Protocol:
        return get_protocol(self._uri(backend))

    def _link_trials(
        self,
        planned: Sequence[tuple[str, dict[str, Any]]],
        parameters: Mapping[str, Any],
        version: Mapping[str, Any],
        purpose: str,
        backend: str | None,
    ) -> None:
        """Create one trial per experiment, as TrialLink does, through one backend connection.

        The backend is committed and closed afterwards: the process that runs an experiment then becomes the
        trial's one writer (the hdf5 backend allows one per trial).
        """
        uri = self._uri(backend)
        protocol = get_protocol(uri)
        try:
            group = experiment_group(protocol, self.root, uri)
            version_text = version_string(dict(version)) if version else "script"
            user = _user()
            with protocol.batch():
                self._insert_trials(protocol, group, planned, parameters, version_text, purpose, user)
            protocol.commit()
        finally:
            protocol.close()

    @staticmethod
    def _insert_trials(
        protocol: Protocol,
        group: TrialGroup,
        planned: Sequence[tuple[str, dict[str, Any]]],
        parameters: Mapping[str, Any],
        version_text: str,
        purpose: str,
        user: str,
    ) -> None:
        status = to_status("registered")
        assert status is not None  # "registered" is persisted (SEED_NOTES C25)
        for folder, override in planned:
            values = {**parameters, **override}
            # Status, metadata and tags go in with the trial: one write per experiment.
            protocol.new_trial(
                Trial(
                    name=os.path.basename(folder),
                    version=version_text,
                    parameters={k: to_yaml_value(v) for k, v in values.items()},
                    description=purpose,
                    project_id=group.project_id,
                    group_id=group.uid,
                    status=status,
                    metadata={"status": "registered", "directory": folder},
                    tags={"notes": [], "user": user},
                ),
                auto_increment=True,
            )

    @contextlib.contextmanager
    def backend_session(self, backend: str | None = None) -> Iterator[None]:
        """Keep one connection to the backend for the trial updates made inside (a runner settling a thousand
        runs reads the backend's summaries once, not once per run). Every update is committed as it is made."""
        uri = self._uri(backend)
        if uri in self._sessions:
            yield
            return
        protocol = get_protocol(uri)
        self._sessions[uri] = (protocol, experiment_group(protocol, self.root, uri))
        try:
            yield
        finally:
            del self._sessions[uri]
            protocol.close()

    def _update_trials(self, updates: Mapping[str, TrialUpdate], backend: str | None = None) -> None:
        """Apply an update to the trial of each experiment folder (best effort: a folder without one is skipped)."""
        if not updates:
            return
        with self.backend_session(backend):
            protocol, group = self._sessions[self._uri(backend)]
            names = sorted({os.path.basename(folder) for folder in updates})
            newest: dict[str, Trial] = {}
            for trial in protocol.find_trial_summaries({"group_id": group.uid, "name": {"$in": names}}):
                name = trial.name or ""
                if name not in newest or trial.revision > newest[name].revision:
                    newest[name] = trial
            for folder, update in updates.items():
                found = newest.get(os.path.basename(folder))
                if found is not None:
                    protocol.update_trial(found.uid, update)
            protocol.commit()  # the process that runs the experiment may write its trial next

    def _set_trial_status(
        self, statuses: Mapping[str, str], backend: str | None = None, error: str | None = None
    ) -> None:
        """Set the trial status of experiments by folder (best effort: a missing trial is skipped)."""
        self._update_trials(
            {
                folder: TrialUpdate(
                    status=to_status(status), metadata={"status": status}, errors=(error,) if error else ()
                )
                for folder, status in statuses.items()
            },
            backend,
        )

    # ---------------------------------------------------------------------------------------- selection
    def match(self, pattern: str = "*") -> list[str]:
        """The managed experiment folders whose name (or path) matches the glob ``pattern``."""
        return [
            p
            for p in self.experiments
            if fnmatch.fnmatch(os.path.basename(p), pattern) or fnmatch.fnmatch(p, pattern)
        ]

    def _matching(self, pattern: str) -> list[str]:
        self.check_initialised()
        found = self.match(pattern)
        if not found:
            raise ExperimentNotFoundError(self.root, pattern)
        return found

    def status(self, folder: str) -> str:
        """The ``_status`` in an experiment's params.yml (``missing`` without one, ``damaged`` when unreadable)."""
        if not os.path.isfile(os.path.join(folder, "params.yml")):
            return "missing"
        try:
            return str(load_param(folder).get("_status", "missing"))
        except IncompatibleYmlException:
            return "damaged"

    def _params_or_none(self, folder: str, doing: str) -> CommentedMap | None:
        """An experiment's params.yml, or None (with a warning naming the file and why) when it cannot be read:
        one damaged experiment never stops an operation on the others."""
        try:
            return load_param(folder)
        except IncompatibleYmlException as exc:
            logger.warning("%s skipped (not %s): %s", os.path.basename(folder), doing, exc)
            return None

    def set_status(
        self, folders: Iterable[str], status: str, *, backend: str | None = None, error: str | None = None
    ) -> list[str]:
        """Write ``status`` into each experiment's params.yml and trial (``error``: why it failed).

        Returns:
            The folders changed (one whose params.yml cannot be read is skipped with a warning).
        """
        changed = {}
        for folder in folders:
            params = self._params_or_none(folder, f"set to {status}")
            if params is None:
                continue
            params["_status"] = status
            self.save_params(params, folder)
            changed[folder] = status
        self._set_trial_status(changed, backend, error)
        return list(changed)

    # --------------------------------------------------------------------------------------- operations
    def note(self, pattern: str, msg: str, remove: bool = False) -> list[str]:
        """Add (or with ``remove=True`` remove) a note on every experiment matching ``pattern``.

        The note goes into each params.yml and the trial's ``tags['notes']`` (what ``unitrack view`` shows).

        Returns:
            The folders noted (one whose params.yml cannot be read is skipped with a warning).
        """
        folders = self._matching(pattern)
        noted: dict[str, TrialUpdate] = {}
        for folder in folders:
            params = self._params_or_none(folder, "noted")
            if params is None:
                continue
            notes = params.get("_notes")
            if not isinstance(notes, list):
                notes = params["_notes"] = []
            if remove:
                while msg in notes:
                    notes.remove(msg)  # in place: the list keeps its place and comments
            elif msg not in notes:
                notes.append(msg)
            self.save_params(params, folder)
            noted[folder] = TrialUpdate(tags={"notes": [str(n) for n in notes]})
        self._update_trials(noted)
        return list(noted)

    def reset(self, pattern: str, status: str = "registered") -> list[str]:
        """Set the status of every experiment matching ``pattern`` (default back to ``registered``).

        ``status`` is a status word or track's name for it (``finished``, ``Completed``...).

        Returns:
            The folders set (one whose params.yml cannot be read is skipped with a warning).

        Raises:
            ConfigError: for an unknown status (naming the closest words) or one that is never stored.
        """
        from unitrack.experiment.experiment import STATUSES
        from unitrack.persistence.lifecycle import parse_status, status_word

        word = status if status in STATUSES else status_word(parse_status(status))
        folders = self._matching(pattern)
        return self.set_status(folders, word)

    def unlink(self, pattern: str = "*") -> list[str]:
        """Forget the experiments matching ``pattern`` (their folders are kept)."""
        folders = self._matching(pattern)
        keep = [
            (p, o) for p, o in zip(self.experiments, self._padded_overides(), strict=True) if p not in folders
        ]
        self.experiments = [p for p, _ in keep]
        self.overides = [o for _, o in keep]
        self._save_config()
        return folders

    def _padded_overides(self) -> list[dict[str, Any]]:
        return (self.overides + [{}] * len(self.experiments))[: len(self.experiments)]

    def relink(self, pattern: str = "*") -> list[str]:
        """Adopt folders in the root matching ``pattern`` whose params.yml has the defaults' parameters."""
        self.check_initialised()
        keys = set(self._parameters(self.load_defaults()))
        adopted = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            path = entry.path
            if not entry.is_dir() or path in self.experiments or not fnmatch.fnmatch(entry.name, pattern):
                continue
            try:
                params = load_param(path)
            except IncompatibleYmlException:
                continue
            if keys <= {str(k) for k in params}:
                params["_root"] = path
                self.save_params(params, path)
                self.experiments.append(path)
                self.overides.append({})
                adopted.append(path)
        self._save_config()
        return adopted

    def cleanable(self) -> list[str]:
        """The folders :meth:`clean` deletes: experiment folders in the root (holding a params.yml) no longer
        managed (unlinked), never a folder outside the root or a link."""
        self.check_initialised()
        root = os.path.realpath(self.root)
        managed = set(self.experiments)
        found = []
        for entry in os.scandir(self.root):
            path = os.path.realpath(entry.path)
            if (
                entry.is_dir(follow_symlinks=False)
                and os.path.dirname(path) == root
                and entry.path not in managed
                and os.path.isfile(os.path.join(path, "params.yml"))
            ):
                found.append(entry.path)
        return sorted(found)

    def clean(self, *, dry_run: bool = False) -> list[str]:
        """Delete the folders :meth:`cleanable` lists (with ``dry_run``, only list them).

        Returns:
            The folders deleted (or that would be).
        """
        found = self.cleanable()
        if not dry_run:
            for path in found:
                shutil.rmtree(path)
        return found

    def move(self, dest: str | os.PathLike[str]) -> str:
        """Move the whole set to ``dest`` (which must not exist): every run stays whole.

        Nothing inside a root records where it is, so its experiments, their trials (in the root's own backend)
        and ``run.sh`` work from the new place as they are. With a backend outside the root (``$UNITRACK_URI``),
        the trials are filed under the group of the new place, so running them again continues them.

        Returns:
            The new root.

        Raises:
            AlreadyExistsError: when ``dest`` exists.
        """
        self.check_initialised()
        target = os.path.abspath(os.fspath(dest))
        if os.path.exists(target):
            raise AlreadyExistsError(f"{target} already exists; move needs a new folder.")
        old = self.root
        uri = self._uri(None)
        embedded = embedded_at(uri, old)
        shutil.move(old, target)
        self.root = target

        def replant(path: str) -> str:
            return target + path[len(old) :] if path == old or path.startswith(old + os.sep) else path

        self.defaults, self.script = replant(self.defaults), replant(self.script)
        self.experiments = [replant(p) for p in self.experiments]
        for path in self.experiments:
            if os.path.isfile(os.path.join(path, "params.yml")):
                params = self._params_or_none(path, "given its new folder")
                if params is not None:
                    params["_root"] = path  # xmen's field, for the eye: nothing reads it back
                    self.save_params(params, path)
        self._save_config()
        remember_root(target)
        if not embedded:
            self._refile_trials(uri, old)
        return target

    def _refile_trials(self, uri: str, old_root: str) -> None:
        """Move the trials of this set from the group of ``old_root`` to the group of the root (a shared backend)."""
        protocol = get_protocol(uri)
        try:
            after = experiment_group(protocol, self.root, uri)
            before = TrialGroup(name=group_name(old_root), project_id=after.project_id)
            for trial in protocol.find_trial_summaries({"group_id": before.uid}):
                directory = str(trial.metadata.get("directory") or "")
                moved = os.path.join(self.root, os.path.basename(directory)) if directory else None
                protocol.update_trial(
                    trial.uid,
                    TrialUpdate(group_id=after.uid, metadata={"directory": moved} if moved else {}),
                )
            protocol.commit()
        finally:
            protocol.close()

    def rm(self) -> str:
        """Delete the whole experiment set: its root folder and everything in it (xmen's ``rm``).

        The trials of a backend outside the root (``UNITRACK_URI``) are marked ``deleted``, not removed.

        Returns:
            The root that was deleted.

        Raises:
            InvalidExperimentRoot: the folder is not an experiment root (nothing is deleted).
        """
        self.check_initialised()
        root = os.path.realpath(self.root)
        backend = resolve_uri(None, self.root)
        if not backend.startswith(("hdf5://", "cox://")):
            try:
                self._set_trial_status({p: "deleted" for p in self.experiments})
            except UnitrackError as exc:  # the folder goes whatever the backend says; say what was kept
                logger.warning("trials of %s could not be marked deleted in %s: %s", root, backend, exc)
        shutil.rmtree(root)
        logger.info("Removed experiment root %s", root)
        return root

    def run(self, pattern: str = "*", *flags: str) -> dict[str, int]:
        """Run (one at a time) every runnable experiment matching ``pattern``: ``[*flags, run.sh]``.

        With ``sbatch`` among the flags each job is named after its experiment and writes its output to
        ``<experiment>/slurm.out`` (``--job-name=``/``--output=`` added, as xmen did, unless given).

        Returns:
            Each experiment folder's exit code.
        """
        from unitrack.experiment.runner import Runner

        folders = self._matching(pattern)
        current = self.statuses(folders)
        runner = Runner(self, list(flags), jobs=1)
        results = runner.run(self.select(folders, current), expected=current)
        return {r.folder: r.returncode for r in results if r.status != "skipped"}

    def slurm_script(
        self,
        pattern: str = "*",
        *,
        sbatch_args: str | Sequence[str] | None = None,
        rerun: bool = False,
        requeue_grace_s: int | None = None,
    ) -> tuple[str, list[str]]:
        """Write an sbatch job array over the runnable experiments matching ``pattern`` (see ``slurm.py``).

        With ``rerun`` the finished ones are included and set back to ``registered``. With ``requeue_grace_s``
        an experiment warned (SIGUSR1) that many seconds before the time limit stops and requeues its task.

        Returns:
            The script's path and the experiment folders, in array order.
        """
        folders = self.runnable(pattern, rerun=rerun)
        path = write_array_script(
            self.root, folders, sbatch_args=sbatch_args, requeue_grace_s=requeue_grace_s
        )
        again = [f for f in folders if self.status(f) != "registered"]
        if again:
            self.set_status(again, "registered")
        return path, folders

    def statuses(self, folders: Iterable[str] | None = None) -> dict[str, str]:
        """The status word of each managed experiment (default: all), as ``unitrack view`` shows it.

        Read from the backend through the run catalog (``lost`` for a running one whose process is gone); an
        experiment without a trial gets its params.yml's status, and ``damaged`` when that file cannot be read.
        """
        from unitrack.persistence.catalog import read_listing

        wanted = list(self.experiments if folders is None else folders)
        listing = read_listing(self.root)
        newest: dict[str, tuple[int, str]] = {}
        for row in listing.rows:
            name, revision = str(row["name"]), int(row.get("revision") or 0)
            if name not in newest or revision >= newest[name][0]:
                newest[name] = (revision, str(row["status"]))
        out = {}
        for folder in wanted:
            found = newest.get(os.path.basename(folder))
            out[folder] = found[1] if found is not None else self.status(folder)
        return out

    def runnable(
        self, pattern: str = "*", rerun: bool = False, statuses: str | Iterable[str] | None = None
    ) -> list[str]:
        """The matching experiments to run: status registered/timeout/requeue, those with one of ``statuses``
        (``"stopped,lost,error"``), or all of them with ``rerun``. A damaged experiment never runs.

        Raises:
            ConfigError: for an unknown status word (naming the closest ones).
        """
        folders = self._matching(pattern)
        return self.select(folders, self.statuses(folders), rerun=rerun, statuses=statuses)

    @staticmethod
    def select(
        folders: Sequence[str],
        current: Mapping[str, str],
        *,
        rerun: bool = False,
        statuses: str | Iterable[str] | None = None,
    ) -> list[str]:
        """The folders :meth:`runnable` keeps, given each one's status word (``current``)."""
        from unitrack.persistence.lifecycle import parse_status_words

        wanted = set(parse_status_words(statuses)) if statuses is not None else None
        if rerun and wanted is None:
            return [f for f in folders if current[f] != "damaged"]
        allowed = wanted if wanted is not None else set(RUNNABLE)
        return [f for f in folders if current[f] in allowed and current[f] != "damaged"]
