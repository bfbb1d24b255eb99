"""``unitrack run``: run registered experiments in local worker processes (or write a Slurm job array)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Any

import typer

from unitrack.cli.sweep import ROOT_HELP, manager_of


def _submit_slurm(
    manager: Any, folders: list[str], pattern: str, sbatch_args: str | None, rerun: bool, grace: int | None
) -> None:
    import shutil

    from unitrack.experiment.slurm import sbatch_lines, submit

    sbatch_lines(sbatch_args, requeue=grace is not None)  # bad options exit 2 before anything is written
    if not folders:
        typer.echo(
            f"nothing to submit: no registered experiment matches {pattern!r} (--rerun includes the rest)"
        )
        return
    script, folders = manager.slurm_script(
        pattern, sbatch_args=sbatch_args, rerun=rerun, requeue_grace_s=grace
    )
    typer.echo(f"sbatch script for {len(folders)} experiment(s) written to {script}")
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        typer.echo(f"sbatch not found; submit it on the cluster with: sbatch {shlex.quote(script)}")
        return
    job = submit(script, sbatch)
    typer.echo(f"submitted job array {job} ({len(folders)} task(s)); logs: {manager.root}/slurm/{job}_*.out")


def _eta(done: int, total: int, started: float) -> str:
    if not done or done >= total:
        return ""
    seconds = (time.monotonic() - started) / done * (total - done)
    return f", ETA {seconds:.0f} s" if seconds < 120 else f", ETA {seconds / 60:.0f} min"


class _Progress:
    """Progress of a run: a live ``rich`` bar on a terminal (count, ETA, failures), a plain line per run otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        if sys.stdout.isatty() and total > 0:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]run"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"),
            )
            self._task = self._bar.add_task("run", total=total, failed=0, last="")
            self._bar.start()

    def done_one(self, result: Any) -> None:
        name = os.path.basename(result.folder)
        self.done += 1
        if result.status == "skipped":
            self.skipped += 1
            line = f"[{self.done}/{self.total}] {name}: skipped ({result.reason})"
        else:
            if result.status != "finished":
                self.failed += 1
            line = f"[{self.done}/{self.total}] {name}: {result.status} ({result.seconds:.1f} s)"
            if self.failed:
                line += f", {self.failed} failed so far"
        line += _eta(self.done, self.total, self.started)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, failed=self.failed, last=f"{name}: {result.status}")
            if result.status not in ("finished", "skipped"):
                self._bar.console.print(f"failed: {name} ({result.status}); log: {result.folder}/run.log")
        else:
            typer.echo(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def add_commands(app: typer.Typer) -> None:
    """Register ``run`` on ``app``."""

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
        status: str = typer.Option(
            None,
            "--status",
            "-S",
            help="Run the experiments with these statuses again, e.g. 'stopped,lost,error' (after Ctrl-C: stopped).",
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
        """Run registered experiments in local worker processes (FLAGS after -- prefix each run.sh), or on Slurm.

        Each experiment is claimed before it starts, so two `unitrack run` on one root never run one twice.
        """
        from unitrack.experiment.runner import Runner

        manager = manager_of(root)
        flags = list(ctx.args)
        if sbatch_args or requeue:
            if not slurm:
                from unitrack.errors import ConfigError

                raise ConfigError(f"{'--sbatch-args' if sbatch_args else '--requeue'} needs --slurm.")
        matching = manager._matching(pattern)
        current = manager.statuses(matching)
        folders = manager.select(matching, current, rerun=rerun, statuses=status)
        if slurm:
            _submit_slurm(manager, folders, pattern, sbatch_args, rerun, grace if requeue else None)
            return
        skipped = len(matching) - len(folders)
        damaged = [f for f in matching if current[f] == "damaged"]
        for folder in damaged:
            typer.echo(f"skipped {os.path.basename(folder)}: damaged (see `unitrack view {root}`)", err=True)
        if dry_run:
            for folder in folders:
                typer.echo(" ".join([*flags, os.path.join(folder, "run.sh")]))
            typer.echo(f"{len(folders)} to run, {skipped} skipped (dry run)")
            return
        progress = _Progress(len(folders))
        runner = Runner(manager, flags, jobs=jobs, on_done=progress.done_one)
        try:
            results = runner.run(folders, rerun=rerun or status is not None, expected=current)
        except KeyboardInterrupt:
            progress.close()
            typer.echo(
                f"interrupted: workers stopped; rerun them with: unitrack run --root {shlex.quote(root)} "
                "--status stopped",
                err=True,
            )
            raise typer.Exit(130) from None
        progress.close()
        ran = [r for r in results if r.status != "skipped"]
        claimed = [r for r in results if r.status == "skipped"]
        failed = [r for r in ran if r.status != "finished"]
        typer.echo(
            f"{len(ran) - len(failed)} finished, {len(failed)} failed, {skipped + len(claimed)} skipped"
        )
        for r in claimed:
            typer.echo(f"skipped: {os.path.basename(r.folder)} ({r.reason})", err=True)
        for r in failed:
            typer.echo(
                f"failed: {os.path.basename(r.folder)} ({r.status}); log: {r.folder}/run.log", err=True
            )
        if failed:
            raise typer.Exit(1)
