"""``unitrack import tensorboard LOGDIR`` and ``unitrack import mlflow URI``: runs of other tools as trials."""

from __future__ import annotations

import typer

from unitrack.cli.sync import as_uri

import_app = typer.Typer(
    name="import",
    help="Import runs logged by other tools (TensorBoard event files, MLflow) as trials.",
    no_args_is_help=True,
)


def _copy(source: object, to: str | None, source_name: str) -> None:
    from unitrack.persistence.importing import import_runs
    from unitrack.persistence.registry import get_protocol, resolve_uri

    with get_protocol(as_uri(resolve_uri(to))) as destination:
        report = import_runs(source, destination, source_name=source_name)  # type: ignore[arg-type]
    typer.echo(str(report))
    if report.failed:
        raise typer.Exit(1)


@import_app.command("tensorboard")
def import_tensorboard(
    logdir: str = typer.Argument(
        ..., help="A TensorBoard log folder; every sub-folder with event files is a run."
    ),
    to: str = typer.Option(
        None, "--to", help="Destination backend URI or folder (default $UNITRACK_URI, else runs)."
    ),
    project: str = typer.Option("tensorboard", "--project", help="Project the runs go in."),
) -> None:
    """Import the scalars and hyper-parameters of every run under LOGDIR (read with TensorBoard's reader)."""
    import os

    from unitrack.persistence.importing import read_tensorboard

    _copy(read_tensorboard(logdir, project=project), to, f"tensorboard:{os.path.abspath(logdir)}")


@import_app.command("mlflow")
def import_mlflow(
    uri: str = typer.Argument(
        ..., help="MLflow tracking URI: a file store (folder), sqlite:///db, http://server."
    ),
    to: str = typer.Option(
        None, "--to", help="Destination backend URI or folder (default $UNITRACK_URI, else runs)."
    ),
    experiment: list[str] = typer.Option(  # noqa: B008 - typer reads it
        None, "--experiment", "-e", help="Only this experiment (repeatable)."
    ),
    project: str = typer.Option("mlflow", "--project", help="Project the runs go in."),
) -> None:
    """Import MLflow experiments: runs, params, every metric's history, tags and status (via mlflow's client)."""
    from unitrack.persistence.importing import read_mlflow

    _copy(read_mlflow(uri, experiments=experiment or (), project=project), to, f"mlflow:{uri}")


def add_commands(app: typer.Typer) -> None:
    """Register the ``import`` group on ``app``."""
    app.add_typer(import_app, name="import")
