"""``unitrack register | run | view | note | reset | unlink | relink | clean | move``: sweeps from the command line.

Each command imports the experiment layer inside its function, so ``unitrack --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

ROOT_HELP = "The experiment root (a folder; created by register)."


def manager_of(root: str) -> Any:
    """The ExperimentManager of an initialised root (an error naming what is missing otherwise; nothing created)."""
    from unitrack.experiment.manager import ExperimentManager

    if not os.path.isdir(root):
        from unitrack.errors import InvalidExperimentRoot

        raise InvalidExperimentRoot(os.path.abspath(root), ["the folder itself"])
    manager = ExperimentManager(root)
    manager.check_initialised()
    return manager


def add_commands(app: typer.Typer) -> None:
    """Register the sweep commands on ``app`` (``view`` lives in :mod:`unitrack.cli.view`)."""
    from unitrack.cli import run as run_cmd
    from unitrack.cli import view as view_cmd

    @app.command("register")
    def register(
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        experiment: str = typer.Option(
            None,
            "--experiment",
            "-e",
            help="module:Class (found from the current folder, as python -m does), path/file.py:Class, or a .py "
            "file defining one Experiment (first use).",
        ),
        defaults: str = typer.Option(None, "--defaults", "-d", help="defaults.yml to copy in (first use)."),
        script: str = typer.Option(None, "--script", "-s", help="script.sh to copy in (first use)."),
        updates: str = typer.Option(None, "--updates", "-u", help='Overrides, e.g. "{lr: 0.1 | 0.01}".'),
        name: str = typer.Option(None, "--name", "-n", help="Folder name instead of k=v__k=v."),
        repeats: int = typer.Option(
            None,
            "--repeats",
            "--repeat",
            "-x",
            help="Copies of each experiment (_1, _2, ...); needed to register a combination again.",
        ),
        purpose: str = typer.Option("", "--purpose", "-p", help="Why these experiments exist."),
        header: str = typer.Option(
            None, "--header", "-H", help="Text or file put at the top of each run.sh."
        ),
        samples: int = typer.Option(None, "--samples", help="Draws of each ~distribution value."),
        seed: int = typer.Option(None, "--seed", help="Seed of the draws."),
        zip_: bool = typer.Option(
            False, "--zip", help="Pair alternatives by position, not every combination."
        ),
        backend: str = typer.Option(None, "--backend", help="Backend URI (default hdf5://ROOT)."),
    ) -> None:
        """Register experiments: one folder per combination of the overrides (initialises ROOT if needed)."""
        from unitrack.experiment.manager import ExperimentManager

        manager = ExperimentManager(root)
        if not os.path.exists(os.path.join(manager.root, "experiment.yml")):
            if not experiment and not (defaults and script):
                from unitrack.errors import InvalidExperimentRoot

                raise InvalidExperimentRoot(
                    manager.root, ["experiment.yml (give --experiment or --defaults/--script)"]
                )
            manager.initialise(defaults=defaults or "", script=script or "", purpose=purpose, name=experiment)
            typer.echo(f"Experiment root created at {manager.root}")
        elif experiment or defaults or script:
            typer.echo(
                f"{manager.root} is already an experiment root; --experiment/--defaults/--script ignored.",
                err=True,
            )
        folders = manager.register(
            name=name,
            string_params=updates or (None if name else "{}"),
            purpose=purpose,
            header=header,
            repeats=repeats,
            samples=samples,
            seed=seed,
            zip=zip_,
            backend=backend,
        )
        for folder in folders:
            typer.echo(f"registered {os.path.basename(folder)}")
        typer.echo(f"{len(folders)} experiment(s) registered in {manager.root}")

    run_cmd.add_commands(app)
    view_cmd.add_commands(app)

    @app.command("note")
    def note(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        message: str = typer.Argument(None, help="The note (without one: show the notes)."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        delete: bool = typer.Option(False, "--delete", "-d", help="Remove the note instead."),
    ) -> None:
        """Add (or remove) a note on the matching experiments; without MESSAGE, show their notes."""
        import fnmatch

        manager = manager_of(root)
        if message is None:
            from unitrack.persistence.catalog import read_listing

            manager._matching(pattern)  # an unknown pattern is an error, not an empty list
            shown = 0
            for row in read_listing(manager.root).rows:
                if fnmatch.fnmatch(str(row["name"]), pattern):
                    for text in row["notes"]:
                        typer.echo(f"{row['name']}: {text}")
                        shown += 1
            typer.echo(f"{shown} note(s)")
            return
        folders = manager.note(pattern, message, remove=delete)
        typer.echo(f"{'removed from' if delete else 'noted on'} {len(folders)} experiment(s)")

    @app.command("reset")
    def reset(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        status: str = typer.Option("registered", "--status", "-s", help="The status to set."),
    ) -> None:
        """Set the status of the matching experiments (default: registered, so they run again)."""
        from unitrack.persistence.lifecycle import parse_status_words

        folders = manager_of(root).reset(pattern, status)
        word = parse_status_words(status)[0] if status else status
        typer.echo(f"{len(folders)} experiment(s) set to {word}")

    @app.command("unlink")
    def unlink(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Stop managing the matching experiments (their folders are kept)."""
        folders = manager_of(root).unlink(pattern)
        typer.echo(f"{len(folders)} experiment(s) unlinked")

    @app.command("relink")
    def relink(
        pattern: str = typer.Argument("*", help="Glob over folder names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Manage again the folders in the root whose params.yml fits the defaults."""
        folders = manager_of(root).relink(pattern)
        typer.echo(f"{len(folders)} experiment(s) relinked")

    @app.command("clean")
    def clean(
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
    ) -> None:
        """Delete experiment folders in the root that are no longer managed (unlinked): lists them first, and
        deletes them with --yes, or after a yes on a terminal."""
        manager = manager_of(root)
        found = manager.cleanable()
        for path in found:
            typer.echo(f"{'would delete' if dry_run or not yes else 'deleting'} {path}")
        if not found:
            typer.echo("0 folder(s) to delete")
            return
        if dry_run:
            typer.echo(f"{len(found)} folder(s) would be deleted (dry run)")
            return
        if not yes:
            if not sys.stdin.isatty():
                from unitrack.errors import ConfigError

                raise ConfigError(
                    f"clean deletes {len(found)} folder(s): pass --yes to delete them (or --dry-run)."
                )
            if not typer.confirm(f"Delete these {len(found)} folder(s)?", default=False):
                typer.echo("nothing deleted")
                raise typer.Exit(1)
        removed = manager.clean()
        typer.echo(f"{len(removed)} folder(s) deleted")

    @app.command("move")
    def move(
        dest: str = typer.Argument(..., help="The new root (must not exist)."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Move the whole experiment set to DEST; its runs stay whole (nothing in a root records where it is)."""
        target = manager_of(root).move(dest)
        typer.echo(f"moved to {target}")
