"""Slurm job arrays for an experiment set: one sbatch script, one array task per experiment's ``run.sh``.

The script maps ``$SLURM_ARRAY_TASK_ID`` to a ``run.sh`` through a bash array whose every element is
``shlex.quote``d, so no folder or root name ever reaches the shell unquoted (SEED_NOTES S6); the task id itself is
checked to be digits before it is used as an index (bash evaluates array subscripts arithmetically). No Python is
generated. User ``sbatch`` options become ``#SBATCH`` lines: each must start with ``-``, and no control character
(a newline would start a new line of the script) is accepted.

Time limits: with ``requeue_grace_s`` the script asks Slurm for SIGUSR1 that many seconds before the limit
(``--signal=B:USR1@N``; every launcher ``exec``s, so the experiment's Python process is the one signalled) and
exports ``UNITRACK_REQUEUE=1``. An experiment running under :meth:`Experiment.catch_sigterm` then stops cleanly,
asks Slurm to requeue its task (:func:`requeue_current_job`) and records status ``requeue``; the requeued task
runs it again.

Example:
    >>> print(sbatch_lines("--time=1:00:00 -p gpu --comment 'two words'"))
    ['--time=1:00:00', '-p gpu', "--comment 'two words'"]
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime

from unitrack.errors import ConfigError, UnitrackError

__all__ = [
    "REQUEUE_ENV",
    "SlurmRequeueError",
    "SlurmSubmitError",
    "requeue_current_job",
    "requeue_requested",
    "sbatch_lines",
    "submit",
    "write_array_script",
]

logger = logging.getLogger(__name__)

#: Options the script sets itself; a user's copy would silently break the array-to-run.sh mapping.
_OWNED = ("--array", "-a", "--output", "-o")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JOB_ID = re.compile(r"Submitted batch job (\d+)")
#: Options the script sets itself when it asks for requeueing.
_OWNED_REQUEUE = ("--signal", "--requeue", "--no-requeue", "--open-mode")
#: Set to 1 by a requeueing job script: an experiment that times out asks Slurm to requeue its task.
REQUEUE_ENV = "UNITRACK_REQUEUE"


class SlurmRequeueError(UnitrackError):
    """A timed-out experiment could not requeue its Slurm job; it keeps status ``timeout``."""


class SlurmSubmitError(UnitrackError):
    """``sbatch`` refused the script or did not print a job id."""

    def __init__(self, script: str, returncode: int, output: str) -> None:
        self.script = script
        self.returncode = returncode
        self.output = output
        detail = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"sbatch {script} failed (exit {returncode}): {detail}. Check the #SBATCH lines.")


def sbatch_lines(sbatch_args: str | Sequence[str] | None, *, requeue: bool = False) -> list[str]:
    """Split user sbatch options into ``#SBATCH`` line bodies: an option and the values that follow it, quoted.

    Args:
        sbatch_args: a shell-like string (``"-p gpu --time=1:00:00"``) or already split tokens.

    Returns:
        One string per option, each token ``shlex.quote``d.

    Raises:
        ConfigError: a token that is not after an option, holds a control character, or sets ``--array``/``--output``
            (or, with ``requeue``, ``--signal``/``--requeue``/``--open-mode``).
    """
    if not sbatch_args:
        return []
    try:
        tokens = shlex.split(sbatch_args) if isinstance(sbatch_args, str) else list(sbatch_args)
    except ValueError as exc:
        raise ConfigError(f"--sbatch-args {sbatch_args!r} cannot be split: {exc}.") from exc
    groups: list[list[str]] = []
    for token in tokens:
        if _CONTROL.search(token):
            raise ConfigError(f"sbatch option {token!r} holds a control character; give it on one line.")
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            if option in _OWNED:
                raise ConfigError(
                    f"sbatch option {token!r} is set by unitrack (one array task per experiment); drop it."
                )
            if requeue and option in _OWNED_REQUEUE:
                raise ConfigError(
                    f"sbatch option {token!r} is set by unitrack for --requeue; drop one of them."
                )
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            raise ConfigError(f"sbatch argument {token!r} is not an option (start with '-').")
    return [" ".join(shlex.quote(t) for t in group) for group in groups]


def _job_name(root: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.=-]", "_", os.path.basename(root.rstrip("/"))) or "root"
    return f"unitrack-{name}"


def write_array_script(
    root: str,
    folders: Sequence[str],
    *,
    sbatch_args: str | Sequence[str] | None = None,
    job_name: str | None = None,
    now: datetime | None = None,
    requeue_grace_s: int | None = None,
) -> str:
    """Write ``{root}/slurm/{timestamp}.sbatch``: a job array with one task per folder's ``run.sh``.

    Args:
        root: the experiment root (the script and the ``%A_%a.out`` logs go in ``{root}/slurm``).
        folders: the experiment folders, in array order.
        sbatch_args: extra sbatch options (see :func:`sbatch_lines`).
        job_name: default ``unitrack-{root name}``.
        now: the timestamp of the file name (default: now).
        requeue_grace_s: when given, SIGUSR1 arrives this many seconds before the time limit and a timed-out
            experiment requeues its task (see the module docstring).

    Returns:
        The script's path.

    Raises:
        ConfigError: no folders, bad sbatch options, or a grace period that is not a positive int.
    """
    if not folders:
        raise ConfigError(f"no experiments to submit in {root}.")
    requeue = requeue_grace_s is not None
    if requeue and (
        not isinstance(requeue_grace_s, int)
        or isinstance(requeue_grace_s, bool)
        or not 0 < requeue_grace_s <= 65535
    ):
        raise ConfigError(f"the requeue grace period {requeue_grace_s!r} must be whole seconds in 1..65535.")
    user = sbatch_lines(sbatch_args, requeue=requeue)
    folder = os.path.join(root, "slurm")
    os.makedirs(folder, exist_ok=True)
    # '%' is Slurm's file-name pattern character: a root holding one must not become a pattern.
    output = os.path.join(folder.replace("%", "%%"), "%A_%a.out")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --array=0-{len(folders) - 1}",
        f"#SBATCH --job-name={shlex.quote(job_name or _job_name(root))}",
        f"#SBATCH --output={shlex.quote(output)}",
        *(
            [f"#SBATCH --signal=B:USR1@{requeue_grace_s}", "#SBATCH --requeue", "#SBATCH --open-mode=append"]
            if requeue
            else []
        ),
        *(f"#SBATCH {line}" for line in user),
        "set -euo pipefail",
        *([f"export {REQUEUE_ENV}=1"] if requeue else []),
        "runs=(",
        *(f"  {shlex.quote(os.path.join(os.path.abspath(f), 'run.sh'))}" for f in folders),
        ")",
        'task="${SLURM_ARRAY_TASK_ID:-}"',
        "# Digits only: bash evaluates an array subscript as arithmetic, which can run commands.",
        'case "$task" in',
        "  ''|*[!0-9]*) echo \"SLURM_ARRAY_TASK_ID is not a task number: '$task'\" >&2; exit 2 ;;",
        "esac",
        "if (( 10#$task >= ${#runs[@]} )); then",
        '  echo "no experiment for array task $task (${#runs[@]} in this array)" >&2; exit 2',
        "fi",
        'run="${runs[10#$task]}"',
        'echo "unitrack: array task $task runs $run"',
        'exec "$run"',
    ]
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S-%f")
    path = os.path.join(folder, f"{stamp}.sbatch")
    with open(path, "x", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)  # noqa: S103 - a job script the user may also run by hand
    logger.info("sbatch script for %d experiment(s) written to %s", len(folders), path)
    return path


def submit(script: str, sbatch: str = "sbatch") -> str:
    """Submit ``script`` with ``sbatch`` (an argument list, no shell) and return the job id.

    Raises:
        SlurmSubmitError: sbatch exited non-zero or printed no job id.
    """
    result = subprocess.run(  # noqa: S603 - an argument list, no shell
        [sbatch, script], capture_output=True, text=True, check=False
    )
    found = _JOB_ID.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise SlurmSubmitError(script, result.returncode, result.stderr or result.stdout)
    return found.group(1)


def requeue_requested() -> bool:
    """Whether this process runs under a job script that asked for requeueing (``$UNITRACK_REQUEUE`` is 1)."""
    return os.environ.get(REQUEUE_ENV, "").strip().lower() in ("1", "true", "yes")


def requeue_current_job(scontrol: str = "scontrol") -> str:
    """Ask Slurm to requeue the job (or array task) this process runs in, with ``scontrol requeue``.

    Returns:
        The requeued job id (``123``, or ``123_4`` for an array task).

    Raises:
        SlurmRequeueError: the process is not in a Slurm job, or scontrol is missing or refused.
    """
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")
    if not re.fullmatch(r"\d+(_\d+)?", job):
        raise SlurmRequeueError(f"not in a Slurm job (SLURM_JOB_ID is {job!r}): nothing to requeue")
    path = shutil.which(scontrol)
    if path is None:
        raise SlurmRequeueError(f"{scontrol} is not on PATH: job {job} was not requeued")
    try:
        result = subprocess.run(  # noqa: S603 - an argument list, no shell; the id is digits
            [path, "requeue", job], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmRequeueError(f"{scontrol} requeue {job} failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or f"exit {result.returncode}"
        raise SlurmRequeueError(f"{scontrol} requeue {job} failed: {detail}")
    logger.info("job %s requeued", job)
    return job
