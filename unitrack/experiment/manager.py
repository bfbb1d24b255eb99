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

import fnmatch
import hashlib
import importlib.util
import inspect
import io
import logging
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
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
from unitrack.experiment.link import experiment_group, holds_run, newest_trial, to_status
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
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol, resolve_uri
from unitrack.persistence.structure import Trial, TrialUpdate

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


def load_experiment_class(target: str) -> type[Experiment]:
    """Load an Experiment class from ``module:Class`` or a Python file (its one Experiment subclass).

    Raises:
        ConfigError: when nothing (or more than one class) fits.
    """
    if target.endswith(".py") or os.path.isfile(target):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ConfigError(f"Experiment file {target!r} does not exist.")
        # As `python file.py` would: modules beside the file import (e.g. `from models import Net`).
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = "_unitrack_experiment_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"Cannot import {target!r} as Python.")
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
        if len(found) != 1:
            raise ConfigError(
                f"{target} defines {len(found)} Experiment subclasses; name one as module:Class."
            )
        return found[0]
    from unitrack.experiment.launch import load_experiment

    try:
        return load_experiment(target)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot load experiment {target!r}: {exc}") from exc


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
        os.makedirs(self.root, exist_ok=True)
        if os.path.exists(self._config_path):
            self._load_config()

    # ------------------------------------------------------------------------------------------- config
    @property
    def _config_path(self) -> str:
        return os.path.join(self.root, _CONFIG)

    def _load_config(self) -> None:
        data = dic_from_yml(path=self._config_path)
        self.defaults = str(data.get("defaults") or "")
        self.script = str(data.get("script") or "")
        self.experiments = [str(p) for p in data.get("experiments") or []]
        self.overides = [dict(o or {}) for o in data.get("overides") or []]
        self.created = str(data.get("created") or "")
        self.purpose = str(data.get("purpose") or "")
        self.notes = [str(n) for n in data.get("notes") or []]
        self.type = str(data.get("type") or "")

    def _save_config(self) -> None:
        data = {
            "root": self.root,
            "defaults": self.defaults,
            "script": self.script,
            "experiments": list(self.experiments),
            "overides": [to_yaml_value(o) for o in self.overides],
            "created": self.created,
            "purpose": self.purpose,
            "notes": list(self.notes),
            "type": self.type,
        }
        atomic_write_text(self._config_path, dic_to_yaml(data))

    def check_initialised(self) -> None:
        """Raise InvalidExperimentRoot unless ``experiment.yml``, ``script.sh`` and ``defaults.yml`` exist."""
        missing = [
            f
            for f in (_CONFIG, "script.sh", "defaults.yml")
            if not os.path.isfile(os.path.join(self.root, f))
        ]
        if missing:
            raise InvalidExperimentRoot(self.root, missing)

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
        if target.endswith(".py") or os.path.isfile(target):
            # A file: the launcher loads its class (no PYTHONPATH, no generated Python, and the file needs no
            # `if __name__ == "__main__"` block), with the file's folder first on sys.path as a script has.
            exp.to_defaults(self.root)
            command = [sys.executable, "-m", "unitrack.experiment.launch", os.path.abspath(target)]
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
        repeats: int = 1,
        *,
        samples: int | None = None,
        seed: int | None = None,
        zip: bool = False,  # noqa: A002 - the CLI flag's name
        backend: str | None = None,
    ) -> list[str]:
        """Register one experiment per combination of ``string_params`` (see :mod:`unitrack.experiment.sweep`).

        Each experiment gets ``{root}/{k=v__k=v}/params.yml`` (defaults with the overrides applied), ``run.sh``
        and a trial in the backend (``backend``, then ``$UNITRACK_URI``, then ``hdf5://{root}``).

        Returns:
            The experiment folders created.

        Raises:
            InvalidExperimentRoot: when the root is not initialised.
            ValueError: (ConfigError) when neither name nor string_params is given, or the string is invalid.
            AlreadyExistsError: when every ``_1`` … ``_99`` suffix of a name is taken (nothing is overwritten).
        """
        self.check_initialised()
        if not name and not string_params:
            raise ConfigError("register needs a name or string_params (e.g. '{lr: 0.1 | 0.01}').")
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
        taken: set[str] = set()
        planned: list[tuple[str, dict[str, Any]]] = []
        for override in overrides:
            base = name or "__".join(f"{k}={_format_value(v)}" for k, v in override.items()) or "default"
            for _ in range(repeats):
                folder = self._free_folder(base, taken)
                taken.add(folder)
                planned.append((folder, override))
        now = now_iso()
        user, host = _user(), socket.gethostname()
        version = commented_to_py(defaults.get("_version")) or {}
        meta = commented_to_py(defaults.get("_meta")) or {}
        dumper = _rt_yaml()
        for folder, override in planned:
            os.makedirs(folder, exist_ok=True)
            doc = CommentedMap()
            specials: dict[str, Any] = {
                "_root": folder,
                "_status": "registered",
                "_purpose": purpose or self.purpose,
                "_notes": [],
                "_messages": {},
                "_timestamps": {
                    "created": now,
                    "registered": now,
                    "start": None,
                    "stopped": None,
                    "last": now,
                },
                "_user": user,
                "_host": host,
                "_version": version,
            }
            for key, value in specials.items():
                doc[key] = value
                if not isinstance(value, (dict, list)):
                    # ruamel moves comments of collection values into later keys on rewrite: scalars only.
                    doc.yaml_add_eol_comment(_SPECIAL_HELP[key], key)
            doc["_meta"] = meta
            for key, value in defaults.items():
                if not str(key).startswith("_"):
                    doc[key] = value
            for key, value in override.items():
                doc[key] = to_yaml_value(value)
            stream = io.StringIO()
            dumper.dump(doc, stream)  # one dumper for the whole grid: building one per file dominated
            atomic_write_text(os.path.join(folder, "params.yml"), stream.getvalue(), fsync=False)
            self._write_run_sh(folder, shell, header_text)
        self._link_trials(planned, parameters, version, purpose or self.purpose, backend)
        self.experiments.extend(folder for folder, _ in planned)
        self.overides.extend(o for _, o in planned)
        self._save_config()
        return [folder for folder, _ in planned]

    link = register

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
    def _protocol(self, backend: str | None) -> Protocol:
        return get_protocol(resolve_uri(backend, self.root))

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
        protocol = self._protocol(backend)
        try:
            group = experiment_group(protocol, self.root)
            status = to_status("registered")
            assert status is not None  # "registered" is persisted (SEED_NOTES C25)
            for folder, override in planned:
                values = {**parameters, **override}
                # Status, metadata and tags go in with the trial: one write per experiment.
                protocol.new_trial(
                    Trial(
                        name=os.path.basename(folder),
                        version=version_string(dict(version)) if version else "script",
                        parameters={k: to_yaml_value(v) for k, v in values.items()},
                        description=purpose,
                        project_id=group.project_id,
                        group_id=group.uid,
                        status=status,
                        metadata={"status": "registered", "directory": folder},
                        tags={"notes": [], "user": _user()},
                    ),
                    auto_increment=True,
                )
            protocol.commit()
        finally:
            protocol.close()

    def _set_trial_status(self, statuses: Mapping[str, str], backend: str | None = None) -> None:
        """Set the trial status of experiments by folder (best effort: a missing trial is skipped)."""
        if not statuses:
            return
        protocol = self._protocol(backend)
        try:
            group = experiment_group(protocol, self.root)
            for folder, status in statuses.items():
                trial = newest_trial(protocol, group, os.path.basename(folder))
                if trial is not None:
                    protocol.update_trial(
                        trial.uid, TrialUpdate(status=to_status(status), metadata={"status": status})
                    )
            protocol.commit()
        finally:
            protocol.close()

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
        """The ``_status`` in an experiment's params.yml (``missing`` when it has none)."""
        try:
            return str(load_param(folder).get("_status", "missing"))
        except IncompatibleYmlException:
            return "missing"

    def set_status(self, folders: Iterable[str], status: str, *, backend: str | None = None) -> None:
        """Write ``status`` into each experiment's params.yml and trial."""
        changed = {}
        for folder in folders:
            params = load_param(folder)
            params["_status"] = status
            self.save_params(params, folder)
            changed[folder] = status
        self._set_trial_status(changed, backend)

    # --------------------------------------------------------------------------------------- operations
    def note(self, pattern: str, msg: str, remove: bool = False) -> list[str]:
        """Add (or with ``remove=True`` remove) a note on every experiment matching ``pattern``."""
        folders = self._matching(pattern)
        for folder in folders:
            params = load_param(folder)
            notes = params.get("_notes")
            if not isinstance(notes, list):
                notes = params["_notes"] = []
            if remove:
                while msg in notes:
                    notes.remove(msg)  # in place: the list keeps its place and comments
            elif msg not in notes:
                notes.append(msg)
            self.save_params(params, folder)
        return folders

    def reset(self, pattern: str, status: str = "registered") -> list[str]:
        """Set the status of every experiment matching ``pattern`` (default back to ``registered``)."""
        from unitrack.experiment.experiment import STATUSES

        if status not in STATUSES:
            raise ConfigError(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.")
        folders = self._matching(pattern)
        self.set_status(folders, status)
        return folders

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

    def clean(self) -> list[str]:
        """Delete experiment folders in the root (holding a params.yml) that are no longer managed."""
        self.check_initialised()
        root = os.path.realpath(self.root)
        removed = []
        for entry in os.scandir(self.root):
            path = os.path.realpath(entry.path)
            if (
                entry.is_dir(follow_symlinks=False)
                and os.path.dirname(path) == root
                and entry.path not in self.experiments
                and os.path.isfile(os.path.join(path, "params.yml"))
            ):
                shutil.rmtree(path)
                removed.append(entry.path)
        return sorted(removed)

    def move(self, dest: str | os.PathLike[str]) -> str:
        """Move the whole set to ``dest`` (which must not exist) and rewrite its paths.

        Returns:
            The new root.
        """
        self.check_initialised()
        target = os.path.abspath(os.fspath(dest))
        if os.path.exists(target):
            raise AlreadyExistsError(f"{target} already exists; move needs a new folder.")
        shutil.move(self.root, target)
        old = self.root
        self.root = target

        def replant(path: str) -> str:
            return target + path[len(old) :] if path == old or path.startswith(old + os.sep) else path

        self.defaults, self.script = replant(self.defaults), replant(self.script)
        self.experiments = [replant(p) for p in self.experiments]
        for path in self.experiments:
            if os.path.isfile(os.path.join(path, "params.yml")):
                params = load_param(path)
                params["_root"] = path
                self.save_params(params, path)
        self._save_config()
        return target

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

        runner = Runner(self, list(flags), jobs=1)
        return {r.folder: r.returncode for r in runner.run(self.runnable(pattern))}

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

    def runnable(self, pattern: str = "*", rerun: bool = False) -> list[str]:
        """The matching experiments to run: status registered/timeout/requeue, or all with ``rerun``."""
        folders = self._matching(pattern)
        if rerun:
            return folders
        return [f for f in folders if self.status(f) in RUNNABLE]
