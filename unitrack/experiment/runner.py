"""Run registered experiments in local worker processes: ``[*flags, run.sh]``, never through a shell string.

Each run writes its output to ``{experiment}/run.log``. After a run the experiment's status is settled: a run
that exited 0 but left ``registered``/``running`` (a plain bash script) becomes ``finished``; one that failed
becomes ``error`` (the experiment itself may already have said so). Ctrl-C interrupts every worker (SIGINT to
its process group), waits for them, and marks the unfinished ones ``stopped``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unitrack.experiment.manager import ExperimentManager

__all__ = ["RunResult", "Runner", "job_flags"]

logger = logging.getLogger(__name__)

#: Seconds a worker gets to stop after Ctrl-C before it is killed.
STOP_TIMEOUT_S = 10.0


def job_flags(flags: Sequence[str], folder: str) -> list[str]:
    """``flags`` for one experiment: with ``sbatch``, its job name and output file are added as xmen did.

    ``--job-name=<experiment>`` and ``--output=<experiment>/slurm.out`` go right after ``sbatch``, unless the
    flags already set them.

    Example:
        >>> job_flags(["sbatch", "-p", "gpu"], "/runs/lr=0.1")
        ['sbatch', '--job-name=lr=0.1', '--output=/runs/lr=0.1/slurm.out', '-p', 'gpu']
        >>> job_flags(["bash"], "/runs/lr=0.1")
        ['bash']
    """
    out = list(flags)
    if "sbatch" not in out:
        return out
    at = out.index("sbatch") + 1
    given = " ".join(out)
    extra = []
    if "--job-name" not in given and not any(f == "-J" or f.startswith("-J") for f in out):
        extra.append(f"--job-name={os.path.basename(folder)}")
    if "--output" not in given and not any(f == "-o" or f.startswith("-o") for f in out):
        extra.append(f"--output={os.path.join(folder, 'slurm.out')}")
    return out[:at] + extra + out[at:]


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run."""

    folder: str
    returncode: int
    status: str
    seconds: float


class Runner:
    """Run experiments of ``manager`` with up to ``jobs`` at once.

    Args:
        manager: the experiment set.
        flags: the command run.sh is given to (default: run it directly).
        jobs: how many run at once.
        on_done: called with each result as it finishes (the CLI prints a progress line).
    """

    def __init__(
        self,
        manager: ExperimentManager,
        flags: Sequence[str] = (),
        *,
        jobs: int = 1,
        on_done: Callable[[RunResult], None] | None = None,
    ) -> None:
        self.manager = manager
        self.flags = list(flags)
        self.jobs = max(1, jobs)
        self.on_done = on_done

    def _start(self, folder: str) -> tuple[subprocess.Popen[bytes], float]:
        log = open(os.path.join(folder, "run.log"), "wb")  # noqa: SIM115 - closed when the process ends
        try:
            command = [*job_flags(self.flags, folder), os.path.join(folder, "run.sh")]
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the workers in order.
            process = subprocess.Popen(  # noqa: S603 - an argument list, no shell
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        return process, time.monotonic()

    def _settle(self, folder: str, returncode: int, stopped: bool = False) -> str:
        status = self.manager.status(folder)
        if stopped and status in ("registered", "running"):
            new = "stopped"
        elif returncode == 0 and status in ("registered", "running"):
            new = "finished"
        elif returncode != 0 and status not in ("error", "stopped", "timeout"):
            new = "error"
        else:
            return status
        self.manager.set_status([folder], new)
        return new

    def run(self, folders: Sequence[str], *, rerun: bool = False) -> list[RunResult]:
        """Run ``folders`` (status reset to ``registered`` first when ``rerun``) and return their results."""
        if rerun:
            again = [f for f in folders if self.manager.status(f) != "registered"]
            if again:
                self.manager.set_status(again, "registered")
        pending = list(folders)
        running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        results: list[RunResult] = []
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    folder = pending.pop(0)
                    running[folder] = self._start(folder)
                finished = self._wait_any(running)
                for folder in finished:
                    process, started = running.pop(folder)
                    status = self._settle(folder, process.returncode)
                    result = RunResult(folder, process.returncode, status, time.monotonic() - started)
                    results.append(result)
                    if self.on_done is not None:
                        self.on_done(result)
        except KeyboardInterrupt:
            self._stop(running, results)
            raise
        return results

    @staticmethod
    def _wait_any(running: dict[str, tuple[subprocess.Popen[bytes], float]]) -> list[str]:
        """Block until at least one worker has exited; return those that have."""
        while True:
            done = [f for f, (p, _) in running.items() if p.poll() is not None]
            if done:
                return done
            try:
                pid, _status = os.waitpid(-1, 0)  # wakes when any child exits
            except ChildProcessError:
                continue
            for process, _ in running.values():
                if process.pid == pid:
                    process.returncode = os.waitstatus_to_exitcode(_status)

    def _stop(
        self, running: dict[str, tuple[subprocess.Popen[bytes], float]], results: list[RunResult]
    ) -> None:
        for process, _ in running.values():
            try:
                os.killpg(process.pid, signal.SIGINT)
            except ProcessLookupError:
                continue
        for folder, (process, started) in running.items():
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            status = self._settle(folder, process.returncode if process.returncode is not None else -2, True)
            results.append(RunResult(folder, process.returncode or -2, status, time.monotonic() - started))
