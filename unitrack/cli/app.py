"""The ``unitrack`` command: one typer app, one module per command group.

Each command imports the layer it drives inside its function, so ``unitrack --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import typer

from unitrack.cli import backends as backends_cmd
from unitrack.cli import export as export_cmd
from unitrack.cli import importer as import_cmd
from unitrack.cli import report as report_cmd
from unitrack.cli import serve as serve_cmd
from unitrack.cli import sweep as sweep_cmd
from unitrack.cli import sync as sync_cmd
from unitrack.cli import ui as ui_cmd

app = typer.Typer(
    name="unitrack",
    help="Track machine-learning experiments: log runs, sweep parameters, view and serve results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
) -> None:
    """Configure logging for every command (the CLI is the only place that does)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


backends_cmd.add_commands(app)
serve_cmd.add_commands(app)
sweep_cmd.add_commands(app)
sync_cmd.add_commands(app)
import_cmd.add_commands(app)
export_cmd.add_commands(app)
ui_cmd.add_commands(app)
report_cmd.add_commands(app)


def main() -> None:
    """Entry point of the ``unitrack`` console script.

    Usage errors are click's (exit 2). A UnitrackError becomes one line on stderr and exit code 2 for bad
    configuration or input, 1 for an operation that failed; ``-vv`` shows the traceback too.
    """
    from unitrack.errors import ConfigError, UnitrackError

    try:
        app()
    except UnitrackError as exc:
        typer.echo(f"error: {exc}", err=True)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
