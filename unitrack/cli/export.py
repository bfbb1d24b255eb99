"""``unitrack export ROOT|URI --format parquet|csv|tensorboard -o DIR``: runs for pandas, Parquet and TensorBoard."""

from __future__ import annotations

import typer

from unitrack.cli.sync import as_uri, parse_query


def add_commands(app: typer.Typer) -> None:
    """Register ``export`` on ``app``."""

    @app.command("export")
    def export(
        source: str = typer.Argument(..., help="An experiment root folder or a backend URI."),
        fmt: str = typer.Option("parquet", "--format", "-f", help="parquet, csv or tensorboard."),
        out: str = typer.Option(..., "--out", "-o", help="Folder to write into (created if missing)."),
        query: str = typer.Option(None, "--query", help="Only trials matching this JSON query."),
    ) -> None:
        """Write a runs table and a long-form metrics table (parquet, csv), or TensorBoard event files per run."""
        from unitrack.persistence.exporting import export_tables, export_tensorboard
        from unitrack.persistence.registry import get_protocol

        trial_query = parse_query(query)
        with get_protocol(as_uri(source)) as protocol:
            if fmt == "tensorboard":
                written = export_tensorboard(protocol, out, trial_query)
                typer.echo(f"{len(written)} run(s) written to {out} (tensorboard --logdir {out})")
            else:
                for path in export_tables(protocol, out, fmt, trial_query):
                    typer.echo(str(path))
