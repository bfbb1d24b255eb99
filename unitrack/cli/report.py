"""``unitrack report``: one self-contained HTML file with the runs table and their charts."""

from __future__ import annotations

import typer

from unitrack.cli.ui import TARGET_HELP


def add_commands(app: typer.Typer) -> None:
    """Register ``report`` on ``app``."""

    @app.command("report")
    def report(
        target: str = typer.Argument(None, help=TARGET_HELP, show_default=False),
        filters: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--filter", "-f", help="Runs to include, as in 'view -f' (e.g. 'lr<0.1'); repeatable."
        ),
        metrics: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--metrics", "-m", help="Metrics to chart (repeatable; default: every metric, at most 12)."
        ),
        group_by: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--group-by", "-g", help="Group runs by these parameters ('*-seed': all but seeds)."
        ),
        status: str = typer.Option(
            None,
            "--status",
            "-S",
            help="Only runs with these statuses, as in 'view --status' (e.g. finished).",
        ),
        output: str = typer.Option("report.html", "--output", "-o", help="The HTML file to write."),
        points: int = typer.Option(1000, "--points", help="Points per line (downsampled at the backend)."),
    ) -> None:
        """Write the runs table and charts into one HTML file that opens offline."""
        from unitrack.ui.report import write_report

        path = write_report(
            target, output, filters or [], metrics or None, group_by or None, points=points, status=status
        )
        typer.echo(f"report written to {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
