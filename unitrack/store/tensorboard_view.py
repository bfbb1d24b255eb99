"""View the TensorBoards of many stores at once, named by their hyper-parameters (``cox-tensorboard``).

Usage::

    python -m unitrack.store.tensorboard_view --logdir OUT_DIR --format-str slope-{slope} \\
        --filter-param slope '[1-3]' --metadata-table metadata [--port 6006] [--dry-run]

Each store with a ``tensorboard/`` folder and a row in the metadata table becomes a run named
``<format-str filled with the metadata>-<exp_id>``. TensorBoard is started with an argument list, never through
a shell (SEED_NOTES S3); ``,`` and ``:`` in run names, which ``--logdir_spec`` would misread, become ``_``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from unitrack.errors import ConfigError, NotFoundError, UnitrackError
from unitrack.store.fs import has_tensorboard
from unitrack.store.readers import CollectionReader

__all__ = ["build_command", "collect_runs", "main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cox-tensorboard", description="Start TensorBoard over every store in a folder."
    )
    parser.add_argument("--logdir", required=True, help="the folder holding the stores")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default 6006)")
    parser.add_argument(
        "--metadata-table",
        default="metadata",
        help="the one-row table of hyper-parameters (default metadata)",
    )
    parser.add_argument(
        "--filter-param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "REGEX"),
        help="keep only stores whose parameter NAME matches REGEX (repeatable)",
    )
    parser.add_argument("--format-str", required=True, help="run name template, e.g. 'slope-{slope}'")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    return parser


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ".".join(str(v) for v in value)
    return str(value)


def escape_run_name(name: str) -> str:
    """Replace the characters ``--logdir_spec`` uses as separators (``,`` and ``:``) with ``_``."""
    return name.replace(",", "_").replace(":", "_")


def collect_runs(
    logdir: str, metadata_table: str, filters: Sequence[tuple[str, str]], format_str: str
) -> list[tuple[str, str]]:
    """Return ``(run name, tensorboard folder)`` for every store to show.

    Args:
        logdir: The folder of stores.
        metadata_table: The table with one row of parameters per store.
        filters: ``(parameter, regex)`` pairs; a store is kept when ``re.match(regex, str(value))`` for all.
        format_str: ``str.format`` template over the parameters; ``-<exp_id>`` is appended.

    Returns:
        The runs, sorted by name.

    Raises:
        ConfigError: A regex is invalid, or the template names a parameter no store has.
        NotFoundError: No store has the metadata table.
    """
    try:
        compiled = [(name, re.compile(regex)) for name, regex in filters]
    except re.error as exc:
        raise ConfigError(f"Invalid --filter-param regex: {exc}") from exc
    reader = CollectionReader(logdir, log_warnings=False, skip_errs=True)
    frame = reader.df(metadata_table, skip_errors=True)
    first_rows: dict[str, dict[str, Any]] = {}
    for record in frame.to_dict("records"):
        first_rows.setdefault(str(record.pop("exp_id")), record)
    runs = []
    for exp_id in reader.exp_ids:
        path = os.path.join(logdir, exp_id)
        if not has_tensorboard(path):
            continue
        params = first_rows.get(exp_id)
        if params is None:
            logger.warning("Skipping experiment %s: no %r row", exp_id, metadata_table)
            continue
        if not all(name in params and rx.match(_text(params[name])) for name, rx in compiled):
            continue
        try:
            formatted = format_str.format(**{k: _text(v) for k, v in params.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"--format-str {format_str!r} does not fit the parameters of {exp_id} "
                f"({', '.join(sorted(params))}): {exc!r}"
            ) from exc
        tb_dir = os.path.join(path, "tensorboard")
        if "," in tb_dir:
            logger.warning(
                "Skipping experiment %s: its path contains ',' which --logdir_spec cannot hold", exp_id
            )
            continue
        runs.append((escape_run_name(f"{formatted}-{exp_id}"), tb_dir))
    return sorted(runs)


def build_command(runs: Sequence[tuple[str, str]], port: int) -> list[str]:
    """Return TensorBoard's argument list for ``runs``."""
    program = shutil.which("tensorboard")
    prefix = [program] if program else [sys.executable, "-m", "tensorboard.main"]
    spec = ",".join(f"{name}:{path}" for name, path in runs)
    return [*prefix, "--logdir_spec", spec, "--port", str(port)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Example:
        >>> import tempfile
        >>> main(["--logdir", tempfile.mkdtemp(), "--format-str", "x", "--dry-run"])
        1
    """
    args = _parser().parse_args(argv)
    try:
        runs = collect_runs(
            args.logdir, args.metadata_table, [tuple(f) for f in args.filter_param], args.format_str
        )
    except (NotFoundError, ConfigError) as exc:
        sys.stderr.write(f"cox-tensorboard: {exc}\n")
        return 1
    except UnitrackError as exc:
        sys.stderr.write(f"cox-tensorboard: {exc}\n")
        return 2
    if not runs:
        sys.stderr.write(f"cox-tensorboard: no store in {args.logdir} matches.\n")
        return 1
    command = build_command(runs, args.port)
    if args.dry_run:
        sys.stdout.write(shlex.join(command) + "\n")
        return 0
    sys.stdout.write(f"Running {shlex.join(command)}\n")
    sys.stdout.flush()
    return subprocess.run(command, check=False).returncode  # noqa: S603 - argument list, no shell


if __name__ == "__main__":
    sys.exit(main())
