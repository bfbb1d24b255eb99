"""What an experiment records about where and from which code it runs: machine, git, version, launcher.

**The environment is never recorded.** xmen saved every environment variable (tokens and passwords included)
into params.yml and sent it to a server (SEED_NOTES S8). Here only an allow-list of variables that describe the
job (SLURM ids, CUDA_VISIBLE_DEVICES, the conda env name) is read.

Example:
    >>> get_size(1253656), get_size(1253656678)
    ('1.20MB', '1.17GB')
    >>> sorted(get_meta())
    ['home', 'host', 'mac', 'user']
"""

from __future__ import annotations

import getpass
import inspect
import logging
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from unitrack.errors import ConfigError

__all__ = [
    "ENVIRON_ALLOW_LIST",
    "get_git",
    "get_meta",
    "get_run_script",
    "get_size",
    "get_version",
    "version_string",
]

logger = logging.getLogger(__name__)

#: Environment variables that may be recorded (job identity only, never credentials).
SLURM_ALLOW_LIST = (
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_NUM_NODES",
    "SLURM_RESTART_COUNT",
)
ENVIRON_ALLOW_LIST = (*SLURM_ALLOW_LIST, "CUDA_VISIBLE_DEVICES", "CONDA_DEFAULT_ENV", "OMP_NUM_THREADS")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def get_size(bytes: float, suffix: str = "B") -> str:  # noqa: A002 - the seed's argument name
    """Scale a byte count to a 1024-based unit with two decimals (``1253656`` → ``'1.20MB'``)."""
    factor = 1024.0
    value = float(bytes)
    for unit in ("", "K", "M", "G", "T", "P"):
        if abs(value) < factor:
            return f"{value:.2f}{unit}{suffix}"
        value /= factor
    return f"{value:.2f}E{suffix}"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _allowed(names: tuple[str, ...]) -> dict[str, str]:
    return {k: os.environ[k] for k in names if k in os.environ}


def get_meta(
    get_platform: bool = False,
    get_cpu: bool = False,
    get_memory: bool = False,
    get_disk: bool = False,
    get_slurm: bool = False,
    get_conda: bool = False,
    get_network: bool = False,
    get_gpu: bool = False,
    get_environ: bool = False,
    live: bool = False,
    disk_path: str | None = None,
) -> dict[str, Any]:
    """Describe the machine: always ``mac, host, user, home``; the rest on request.

    ``get_environ=True`` no longer returns the environment: it returns the allow-listed variables
    (:data:`ENVIRON_ALLOW_LIST`) and warns. GPU information is read only when torch is already imported (this
    function never imports it). Optional parts that cannot be read (psutil missing) are left out.
    """
    meta: dict[str, Any] = {
        "mac": ":".join(re.findall("..", f"{uuid.getnode():012x}")),
        "host": socket.gethostname(),
        "user": _user(),
        "home": str(Path.home()),
    }
    if get_platform:
        uname = platform.uname()
        meta["system"] = {
            "system": uname.system,
            "node": uname.node,
            "release": uname.release,
            "version": uname.version,
            "machine": uname.machine,
            "python": platform.python_version(),
        }
    try:
        import psutil
    except ImportError:  # optional: meta without resource figures
        psutil = None
    if get_cpu:
        cpu: dict[str, Any] = {"physical_cores": None, "total_cores": os.cpu_count()}
        if psutil is not None:
            cpu["physical_cores"] = psutil.cpu_count(logical=False)
            if live:
                cpu["usage"] = psutil.cpu_percent(interval=None)
        meta["cpu"] = cpu
    if get_memory and psutil is not None:
        vm, sw = psutil.virtual_memory(), psutil.swap_memory()
        meta["virtual"] = {
            "total": get_size(vm.total),
            "available": get_size(vm.available),
            "used": get_size(vm.used),
        }
        meta["swap"] = {"total": get_size(sw.total), "free": get_size(sw.free), "used": get_size(sw.used)}
    if get_disk and psutil is not None:
        path = disk_path or str(Path.home())
        try:
            usage = psutil.disk_usage(path)
            meta["disks"] = {path: {"total": get_size(usage.total), "free": get_size(usage.free)}}
        except OSError:
            logger.debug("no disk usage for %s", path)
    if get_network and psutil is not None:
        meta["network"] = sorted(psutil.net_if_addrs())
    if get_gpu:
        gpu: dict[str, Any] = _allowed(("CUDA_VISIBLE_DEVICES",))
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_available():
            gpu["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if gpu:
            meta["gpu"] = gpu
    if get_slurm:
        slurm = _allowed(SLURM_ALLOW_LIST)
        if slurm:
            meta["slurm"] = slurm
    if get_conda and os.environ.get("CONDA_DEFAULT_ENV"):
        meta["conda"] = {"env": os.environ["CONDA_DEFAULT_ENV"]}
    if get_environ:
        warnings.warn(
            "get_meta(get_environ=True) returns only allow-listed variables "
            f"({', '.join(ENVIRON_ALLOW_LIST)}); unitrack never records the whole environment.",
            UserWarning,
            stacklevel=2,
        )
        meta["environ"] = _allowed(ENVIRON_ALLOW_LIST)
    return meta


def _git(path: str, *args: str) -> str | None:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            ["git", "-C", path, *args],  # noqa: S607 - git from PATH, as a user would run it
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def get_git(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return ``{local, remote, commit, branch, dirty}`` for the git repository holding ``path``, or ``{}``.

    ``dirty`` is True when tracked files have uncommitted changes (untracked files do not count), so the
    commit alone does not describe the code that ran; it is left out when ``git status`` fails.
    """
    folder = os.fspath(path)
    if os.path.isfile(folder):
        folder = os.path.dirname(folder) or "."
    if not os.path.isdir(folder):
        return {}
    local = _git(folder, "rev-parse", "--show-toplevel")
    if not local:
        return {}
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return {}
    info: dict[str, Any] = {"local": local, "commit": commit}
    remote = _git(folder, "remote", "get-url", "origin")
    info["remote"] = remote or ""
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    info["branch"] = branch or ""
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        info["dirty"] = bool(status)
    return info


def get_version(*, path: str | None = None, cls: type | None = None, fn: Any = None) -> dict[str, Any]:
    """Describe the code: ``{path}``, ``{module, class, path}`` or ``{module, function, path}``, plus ``git``.

    A class made by ``functional_experiment`` is described by its function (``{module, function, path}``), as
    xmen recorded functional experiments.
    """
    version: dict[str, Any] = {}
    if cls is not None and fn is None and callable(vars(cls).get("__unitrack_function__")):
        cls, fn = None, vars(cls)["__unitrack_function__"]
    target = cls if cls is not None else fn
    if path is not None:
        version["path"] = os.path.abspath(path)
    if target is not None:
        version["module"] = target.__module__
        version["class" if cls is not None else "function"] = target.__qualname__
        try:
            source_file = inspect.getsourcefile(target) or inspect.getfile(target)
        except (TypeError, OSError):
            source_file = None
        if source_file:
            version["path"] = os.path.abspath(source_file)
    location = version.get("path")
    if location:
        git = get_git(location)
        if git:
            version["git"] = git
    return version


def version_string(version: dict[str, Any]) -> str:
    """The trial version: the git commit when known, else ``module:Class`` (or ``module:function``).

    The commit is read from ``git.commit``, or from the layouts xmen wrote (SEED_NOTES C12): ``git.hash``
    (params.yml) and a flat ``git_commit``.
    """
    git = version.get("git")
    git = git if isinstance(git, dict) else {}
    commit = git.get("commit") or git.get("hash") or version.get("git_commit")
    if commit:
        return str(commit)
    name = version.get("class") or version.get("function")
    if name:
        return f"{version.get('module')}:{name}"
    return str(version.get("path", "unknown"))


def get_run_script(module: str, name: str, shell: str = "/usr/bin/env python3", comment: str = "#") -> str:
    """Return a launcher script running ``module.name``'s command line (arguments passed through).

    Unlike xmen, no Python is generated: the script calls ``python -m unitrack.experiment.launch module:name``
    with every value quoted, and ``module``/``name`` must be dotted identifiers.

    Raises:
        ConfigError: (a ValueError) when ``module`` or ``name`` is not a (dotted) Python identifier.
    """
    for what, value in (("module", module), ("name", name)):
        if not _IDENTIFIER.fullmatch(value):
            raise ConfigError(
                f"{what} {value!r} is not a Python identifier; refusing to write a launcher. Pass the module's "
                "dotted name and the experiment's name."
            )
    interpreter = " ".join(shlex.quote(part) for part in shlex.split(shell))
    return (
        "#!/bin/sh\n"
        f"{comment} unitrack launcher for {module}:{name}, generated {datetime.now().isoformat(timespec='seconds')}\n"
        f'exec {interpreter} -m unitrack.experiment.launch {shlex.quote(f"{module}:{name}")} "$@"\n'
    )
