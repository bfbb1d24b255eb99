"""``unitrack register | run | view | note | reset | unlink | relink | clean | move``: sweeps from the command line.

Each command imports the experiment layer inside its function, so ``unitrack --help`` stays fast.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
from typing import Any

import typer

ROOT_HELP = "The experiment root (a folder; created by register)."


def _manager(root: str) -> Any:
    from unitrack.experiment.manager import ExperimentManager

    if not os.path.isdir(root):
        from unitrack.errors import InvalidExperimentRoot

        raise InvalidExperimentRoot(os.path.abspath(root), ["the folder itself"])
    manager = ExperimentManager(root)
    manager.check_initialised()
    return manager


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _sort_key(key: str) -> Any:
    def by(row: dict[str, Any]) -> tuple[int, float, str]:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, float(value), "")
        return (1 if value is not None else 2, 0.0, str(value))

    return by


def _submit_slurm(
    manager: Any, pattern: str, sbatch_args: str | None, rerun: bool, requeue_grace_s: int | None
) -> None:
    import shutil

    from unitrack.experiment.slurm import sbatch_lines, submit

    sbatch_lines(
        sbatch_args, requeue=requeue_grace_s is not None
    )  # bad options exit 2 before anything is written
    if not manager.runnable(pattern, rerun=rerun):
        typer.echo(
            f"nothing to submit: no registered experiment matches {pattern!r} (--rerun includes the rest)"
        )
        return
    script, folders = manager.slurm_script(
        pattern, sbatch_args=sbatch_args, rerun=rerun, requeue_grace_s=requeue_grace_s
    )
    typer.echo(f"sbatch script for {len(folders)} experiment(s) written to {script}")
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        typer.echo(f"sbatch not found; submit it on the cluster with: sbatch {shlex.quote(script)}")
        return
    job = submit(script, sbatch)
    typer.echo(f"submitted job array {job} ({len(folders)} task(s)); logs: {manager.root}/slurm/{job}_*.out")


def add_commands(app: typer.Typer) -> None:
    """Register the sweep commands on ``app``."""

    @app.command("register")
    def register(
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        experiment: str = typer.Option(
            None, "--experiment", "-e", help="module:Class or a .py file defining one Experiment (first use)."
        ),
        defaults: str = typer.Option(None, "--defaults", "-d", help="defaults.yml to copy in (first use)."),
        script: str = typer.Option(None, "--script", "-s", help="script.sh to copy in (first use)."),
        updates: str = typer.Option(None, "--updates", "-u", help='Overrides, e.g. "{lr: 0.1 | 0.01}".'),
        name: str = typer.Option(None, "--name", "-n", help="Folder name instead of k=v__k=v."),
        repeats: int = typer.Option(1, "--repeats", "-x", help="Copies of each experiment (_1, _2, ...)."),
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

    @app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run(
        ctx: typer.Context,
        pattern: str = typer.Argument("*", help="Glob over experiment names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Experiments run at once."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print what would run, run nothing."),
        rerun: bool = typer.Option(
            False, "--rerun", help="Also run finished, failed and stopped experiments."
        ),
        slurm: bool = typer.Option(
            False, "--slurm", help="Write an sbatch job array (one task per experiment) and submit it."
        ),
        sbatch_args: str = typer.Option(
            None, "--sbatch-args", help='Extra sbatch options for --slurm, e.g. "-p gpu --time=2:00:00".'
        ),
        requeue: bool = typer.Option(
            False,
            "--requeue",
            help="With --slurm: an experiment warned before its time limit stops cleanly and requeues its task.",
        ),
        grace: int = typer.Option(
            120, "--grace", min=1, max=65535, help="With --requeue: seconds of warning before the time limit."
        ),
    ) -> None:
        """Run registered experiments in local worker processes (FLAGS after -- prefix each run.sh), or on Slurm."""
        from unitrack.experiment.runner import Runner, RunResult

        manager = _manager(root)
        flags = list(ctx.args)
        if slurm:
            _submit_slurm(manager, pattern, sbatch_args, rerun, grace if requeue else None)
            return
        if sbatch_args or requeue:
            from unitrack.errors import ConfigError

            raise ConfigError(f"{'--sbatch-args' if sbatch_args else '--requeue'} needs --slurm.")
        folders = manager.runnable(pattern, rerun=rerun)
        skipped = len(manager.match(pattern)) - len(folders)
        if dry_run:
            for folder in folders:
                typer.echo(" ".join([*flags, os.path.join(folder, "run.sh")]))
            typer.echo(f"{len(folders)} to run, {skipped} skipped (dry run)")
            return
        total = len(folders)
        counter = {"n": 0}

        def progress(result: RunResult) -> None:
            counter["n"] += 1
            name = os.path.basename(result.folder)
            typer.echo(f"[{counter['n']}/{total}] {name}: {result.status} ({result.seconds:.1f} s)")

        runner = Runner(manager, flags, jobs=jobs, on_done=progress)
        try:
            results = runner.run(folders, rerun=rerun)
        except KeyboardInterrupt:
            typer.echo("interrupted: workers stopped", err=True)
            raise typer.Exit(130) from None
        failed = [r for r in results if r.status != "finished"]
        typer.echo(f"{len(results) - len(failed)} finished, {len(failed)} failed, {skipped} skipped")
        for r in failed:
            typer.echo(
                f"failed: {os.path.basename(r.folder)} ({r.status}); log: {r.folder}/run.log", err=True
            )
        if failed:
            raise typer.Exit(1)

    @app.command("view")
    def view(
        target: str = typer.Argument("runs", help="An experiment root folder or a backend URI."),
        filters: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--filter", "-f", help="e.g. 'lr<0.1', '0<=depth<4', 'loss'."
        ),
        status: str = typer.Option(None, "--status", "-S", help="Only runs with this status."),
        sort: str = typer.Option("name", "--sort", help="Column to sort by."),
        columns: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--columns", "-c", help="Columns to show (repeatable)."
        ),
        csv_file: str = typer.Option(None, "--csv", help="Write the table to this CSV file."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    ) -> None:
        """Show a table of runs: name, status, parameters that differ, latest metrics, age."""
        from unitrack.experiment.listing import runs_from_folder, runs_from_uri, varying_keys
        from unitrack.experiment.search import compile_filters

        if "://" in target:
            runs = runs_from_uri(target)
        elif os.path.isdir(target):
            runs = runs_from_folder(target)
        else:
            from unitrack.errors import ConfigError

            raise ConfigError(f"{target!r} is neither a folder nor a backend URI.")
        checks = compile_filters(filters or [])
        runs = [r for r in runs if (status is None or r["status"] == status) and checks.matches(r)]
        runs.sort(key=_sort_key(sort))
        if columns:
            shown = list(columns)
        else:
            params: list[str] = []
            metrics: list[str] = []
            for r in runs:
                params += [k for k in r.params if k not in params]
                metrics += [k for k in r.metrics if k not in metrics]
            extra = [k for r in runs[:1] for k in checks.keys(r) if k not in params and k not in metrics]
            shown = ["name", "status", *varying_keys(runs, params), *metrics, *extra, "age"]
        if csv_file:
            with open(csv_file, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(shown)
                for r in runs:
                    writer.writerow([r.get(k, "") if k != "age" else r.get("age_s") for k in shown])
            typer.echo(f"{len(runs)} run(s) written to {csv_file}")
            return
        if as_json:
            for r in runs:
                row = {k: (r.get("age_s") if k == "age" else r.get(k)) for k in shown}
                typer.echo(json.dumps(row, default=str))
            return
        table = [shown] + [
            [_age(r.get("age_s")) if k == "age" else _cell(r.get(k)) for k in shown] for r in runs
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(shown))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table
        ]
        sys.stdout.write("\n".join(lines) + f"\n{len(runs)} run(s)\n")

    @app.command("note")
    def note(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        message: str = typer.Argument(..., help="The note."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        delete: bool = typer.Option(False, "--delete", "-d", help="Remove the note instead."),
    ) -> None:
        """Add (or remove) a note on the matching experiments."""
        folders = _manager(root).note(pattern, message, remove=delete)
        typer.echo(f"{'removed from' if delete else 'noted on'} {len(folders)} experiment(s)")

    @app.command("reset")
    def reset(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
        status: str = typer.Option("registered", "--status", "-s", help="The status to set."),
    ) -> None:
        """Set the status of the matching experiments (default: registered, so they run again)."""
        folders = _manager(root).reset(pattern, status)
        typer.echo(f"{len(folders)} experiment(s) set to {status}")

    @app.command("unlink")
    def unlink(
        pattern: str = typer.Argument(..., help="Glob over experiment names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Stop managing the matching experiments (their folders are kept)."""
        folders = _manager(root).unlink(pattern)
        typer.echo(f"{len(folders)} experiment(s) unlinked")

    @app.command("relink")
    def relink(
        pattern: str = typer.Argument("*", help="Glob over folder names."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Manage again the folders in the root whose params.yml fits the defaults."""
        folders = _manager(root).relink(pattern)
        typer.echo(f"{len(folders)} experiment(s) relinked")

    @app.command("clean")
    def clean(root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP)) -> None:
        """Delete experiment folders in the root that are no longer managed (unlinked)."""
        removed = _manager(root).clean()
        for path in removed:
            typer.echo(f"deleted {path}")
        typer.echo(f"{len(removed)} folder(s) deleted")

    @app.command("move")
    def move(
        dest: str = typer.Argument(..., help="The new root (must not exist)."),
        root: str = typer.Option("runs", "--root", "-r", help=ROOT_HELP),
    ) -> None:
        """Move the whole experiment set to DEST and rewrite its paths."""
        target = _manager(root).move(dest)
        typer.echo(f"moved to {target}")
