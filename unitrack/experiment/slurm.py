"""Slurm job arrays for an experiment set: one sbatch script, one array task per experiment's ``run.sh``.

The script maps ``$SLURM_ARRAY_TASK_ID`` to a ``run.sh`` through a bash array whose every element is
``shlex.quote``d, so no folder or root name ever reaches the shell unquoted (SEED_NOTES S6); the task id itself is
checked to be digits before it is used as an index (bash evaluates array subscripts arithmetically). No Python is
generated. User ``sbatch`` options become ``#SBATCH`` lines: each must start with ``-``, and no control character
(a newline would start a new line of the script) is accepted.

Example:
    >>> print(sbatch_lines("--time=1:00:00 -p gpu --comment 'two words'"))
    ['--time=1:00:00', '-p gpu', "--comment 'two words'"]
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime

from unitrack.errors import ConfigError, UnitrackError

__all__ = ["SlurmSubmitError", "sbatch_lines", "submit", "write_array_script"]

logger = logging.getLogger(__name__)

#: Options the script sets itself; a user's copy would silently break the array-to-run.sh mapping.
_OWNED = ("--array", "-a", "--output", "-o")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JOB_ID = re.compile(r"Submitted batch job (\d+)")


class SlurmSubmitError(UnitrackError):
    """``sbatch`` refused the script or did not print a job id."""

    def __init__(self, script: str, returncode: int, output: str) -> None:
        self.script = script
        self.returncode = returncode
        self.output = output
        detail = output.strip().splitlines()[-1] if output.strip() else "no output"
        super().__init__(f"sbatch {script} failed (exit {returncode}): {detail}. Check the #SBATCH lines.")


def sbatch_lines(sbatch_args: str | Sequence[str] | None) -> list[str]:
    """Split user sbatch options into ``#SBATCH`` line bodies: an option and the values that follow it, quoted.

    Args:
        sbatch_args: a shell-like string (``"-p gpu --time=1:00:00"``) or already split tokens.

    Returns:
        One string per option, each token ``shlex.quote``d.

    Raises:
        ConfigError: a token that is not after an option, holds a control character, or sets ``--array``/``--output``.
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
            if token.split("=", 1)[0] in _OWNED:
                raise ConfigError(
                    f"sbatch option {token!r} is set by unitrack (one array task per experiment); drop it."
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
) -> str:
    """Write ``{root}/slurm/{timestamp}.sbatch``: a job array with one task per folder's ``run.sh``.

    Args:
        root: the experiment root (the script and the ``%A_%a.out`` logs go in ``{root}/slurm``).
        folders: the experiment folders, in array order.
        sbatch_args: extra sbatch options (see :func:`sbatch_lines`).
        job_name: default ``unitrack-{root name}``.
        now: the timestamp of the file name (default: now).

    Returns:
        The script's path.

    Raises:
        ConfigError: no folders, or bad sbatch options.
    """
    if not folders:
        raise ConfigError(f"no experiments to submit in {root}.")
    user = sbatch_lines(sbatch_args)
    folder = os.path.join(root, "slurm")
    os.makedirs(folder, exist_ok=True)
    # '%' is Slurm's file-name pattern character: a root holding one must not become a pattern.
    output = os.path.join(folder.replace("%", "%%"), "%A_%a.out")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --array=0-{len(folders) - 1}",
        f"#SBATCH --job-name={shlex.quote(job_name or _job_name(root))}",
        f"#SBATCH --output={shlex.quote(output)}",
        *(f"#SBATCH {line}" for line in user),
        "set -euo pipefail",
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
