"""``unitrack sync SRC DST``: copy runs from one backend to another, only what DST lacks (see ``persistence.sync``)."""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType
from typing import Any

import typer


def as_uri(target: str) -> str:
    """A backend URI, or a folder (an experiment root, a folder of cox stores) as ``hdf5://FOLDER``."""
    return target if "://" in target else f"hdf5://{target}"


def parse_query(query: str | None) -> Any:
    """The ``--query`` JSON, or None."""
    from unitrack.errors import InvalidQueryError

    if not query:
        return None
    try:
        return json.loads(query)
    except ValueError as exc:
        raise InvalidQueryError(repr(query), f"not valid JSON: {exc}") from exc


def _finished(trial: Any) -> bool:
    from unitrack.persistence.lifecycle import status_word

    return status_word(trial.status) in ("finished", "error", "stopped", "timeout", "deleted")


def add_commands(app: typer.Typer) -> None:
    """Register ``sync`` on ``app``."""

    @app.command("sync")
    def sync_command(
        src: str = typer.Argument(..., help="Where the runs are: a backend URI or a folder (hdf5://FOLDER)."),
        dst: str = typer.Argument(..., help="Where to copy them: a backend URI or a folder."),
        query: str = typer.Option(
            None, "--query", help='Only trials matching this JSON query, e.g. \'{"name": "a"}\'.'
        ),
        full: bool = typer.Option(
            False, "--full", help="Compare every point, also of trials whose summary did not change."
        ),
        follow: bool = typer.Option(
            False,
            "--follow",
            help="Keep syncing every --interval seconds (beside a running job) until stopped.",
        ),
        interval_s: float = typer.Option(10.0, "--interval", help="Seconds between passes with --follow."),
        until_finished: bool = typer.Option(
            False, "--until-finished", help="With --follow: stop once every run has ended and is copied."
        ),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Show a progress bar on stderr (when it is a terminal)."
        ),
    ) -> None:
        """Copy runs from SRC to DST: only what DST lacks; run again to resume after a crash."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from unitrack.persistence.registry import get_protocol
        from unitrack.persistence.sync import sync

        trial_query = parse_query(query)
        console = Console(stderr=True)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        if follow:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, on_signal)
        with get_protocol(as_uri(src)) as source, get_protocol(as_uri(dst)) as destination:
            while True:
                with Progress(
                    TextColumn("[bold]sync[/bold]"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("trials, {task.fields[points]:,} points"),
                    TimeRemainingColumn(),
                    console=console,
                    transient=True,
                    disable=not progress or not console.is_terminal,
                ) as bar:
                    task = bar.add_task("sync", total=None, points=0)

                    def advance(done: int, total: int, points: int, task: Any = task) -> None:
                        bar.update(task, completed=done, total=total, points=points)

                    report = sync(source, destination, trial_query, full=full, progress=advance)
                typer.echo(str(report))
                sys.stdout.flush()
                if report.failed:
                    for uid, reason in report.failed.items():
                        typer.echo(f"failed: {uid}: {reason}", err=True)
                if not follow or stop.is_set():
                    break
                if until_finished and report.points == 0 and not report.trials_created:
                    if all(_finished(t) for t in source.fetch_trials(trial_query)):
                        break
                if stop.wait(interval_s):
                    break
        if report.failed:
            raise typer.Exit(1)
