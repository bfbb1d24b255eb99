"""Run registered experiments in local worker processes: ``[*flags, run.sh]``, never through a shell string.

**Claims.** Before an experiment starts, the runner takes its claim: an exclusive lock on ``{experiment}/.run.lock``
(``flock``, released by the kernel if the runner dies), held until the run ends. Two ``unitrack run`` on one root
therefore never run one experiment twice: the second skips what the first holds, and it re-reads the status of
what it claims, so an experiment another runner finished meanwhile is skipped too. ``run.log`` is opened only once
the claim is held, so a loser never touches the winner's log.

**Output.** Each run writes its output to ``{experiment}/run.log``, unbuffered (``PYTHONUNBUFFERED=1``): a run
killed with SIGKILL keeps what it printed until then.

**Settling.** After a run its status is settled: a run that exited 0 but left ``registered``/``running`` (a plain
bash script) becomes ``finished``; one that failed becomes ``error`` (the experiment itself may already have
said so, with its traceback), with the reason recorded in the trial's errors — the exit code or signal and the
last line of ``run.log`` — so ``unitrack view`` shows why. Ctrl-C interrupts every worker (SIGINT to its process
group), waits for them, and marks the unfinished ones ``stopped``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import filelock

if TYPE_CHECKING:
    from unitrack.experiment.manager import ExperimentManager

__all__ = ["CLAIM", "RunResult", "Runner", "job_flags"]

logger = logging.getLogger(__name__)

#: Seconds a worker gets to stop after Ctrl-C before it is killed.
STOP_TIMEOUT_S = 10.0
#: The claim file in each experiment folder.
CLAIM = ".run.lock"
#: How much of the end of run.log is read for a failed run's reason.
_LOG_TAIL_BYTES = 4096


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
    """The outcome of one run (``status`` is ``skipped`` for one not started, with the reason in ``reason``)."""

    folder: str
    returncode: int
    status: str
    seconds: float
    reason: str = ""


def _tail_line(path: str) -> str:
    """The last non-empty line of a file (its last few kB), or ''."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    started: float
    claim: filelock.BaseFileLock


class Runner:
    """Run experiments of ``manager`` with up to ``jobs`` at once.

    Args:
        manager: the experiment set.
        flags: the command run.sh is given to (default: run it directly).
        jobs: how many run at once.
        on_done: called with each result as it finishes or is skipped (the CLI shows progress).
        on_start: called with each experiment folder as it starts.
    """

    def __init__(
        self,
        manager: ExperimentManager,
        flags: Sequence[str] = (),
        *,
        jobs: int = 1,
        on_done: Callable[[RunResult], None] | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        self.manager = manager
        self.flags = list(flags)
        self.jobs = max(1, jobs)
        self.on_done = on_done
        self.on_start = on_start

    # ------------------------------------------------------------------------------------------- claims
    def _claim(
        self, folder: str, expected: str | None, again: bool
    ) -> tuple[filelock.BaseFileLock | None, str]:
        """Take the experiment's claim; None and the reason when another runner holds it, it changed since it was
        chosen (another runner ran it meanwhile), or its params.yml cannot be read."""
        claim = filelock.FileLock(os.path.join(folder, CLAIM), timeout=0)
        try:
            claim.acquire()
        except filelock.Timeout:
            return None, "another runner is running it"
        except OSError as exc:
            return None, f"cannot claim it: {exc.strerror or exc}"
        status = self.manager.status(folder)
        reason = ""
        if status in ("damaged", "missing"):
            reason = f"its params.yml is {status}; see `unitrack view {self.manager.root}`"
        elif expected is not None and status != expected and not (expected == "lost" and status == "running"):
            reason = f"it is {status} now (another runner ran it)"
        elif expected is None and not again and status == "running":
            reason = "it is running"
        if reason:
            claim.release()
            return None, reason
        if status != "registered" and not self.manager.set_status([folder], "registered"):
            claim.release()
            return None, "its status cannot be reset"
        return claim, ""

    def _start(self, folder: str, claim: filelock.BaseFileLock) -> _Running:
        log = open(os.path.join(folder, "run.log"), "wb")  # noqa: SIM115 - closed when the process started
        try:
            command = [*job_flags(self.flags, folder), os.path.join(folder, "run.sh")]
            # Unbuffered: a run killed with SIGKILL keeps in run.log what it printed until then.
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            # Own session: a terminal's Ctrl-C reaches only us, and we stop the workers in order.
            process = subprocess.Popen(  # noqa: S603 - an argument list, no shell
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            log.close()
        if self.on_start is not None:
            self.on_start(folder)
        return _Running(process, time.monotonic(), claim)

    # ------------------------------------------------------------------------------------------ settle
    def _settle(self, folder: str, returncode: int, stopped: bool = False) -> str:
        status = self.manager.status(folder)
        error = None
        if stopped and status in ("registered", "running"):
            new = "stopped"
        elif returncode == 0 and status in ("registered", "running"):
            new = "finished"
        elif returncode != 0 and status not in ("error", "stopped", "timeout", "requeue"):
            new = "error"
            last = _tail_line(os.path.join(folder, "run.log"))
            error = f"{_exit_reason(returncode)}" + (f": {last}" if last else "") + f" (see {folder}/run.log)"
        else:
            return status
        self.manager.set_status([folder], new, error=error)
        return new

    def run(
        self,
        folders: Sequence[str],
        *,
        rerun: bool = False,
        expected: Mapping[str, str] | None = None,
    ) -> list[RunResult]:
        """Run ``folders`` and return their results (``skipped`` for those another runner holds or ran).

        Args:
            folders: the experiment folders, in order.
            rerun: run them whatever their status (set back to ``registered`` first).
            expected: the status each folder had when it was chosen; one whose status changed since is skipped.
        """
        with self.manager.backend_session():
            return self._run(list(folders), rerun, expected or {})

    def _run(self, pending: list[str], rerun: bool, expected: Mapping[str, str]) -> list[RunResult]:
        running: dict[str, _Running] = {}
        results: list[RunResult] = []
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    folder = pending.pop(0)
                    claim, reason = self._claim(folder, expected.get(folder), rerun)
                    if claim is None:
                        logger.warning("%s skipped: %s", os.path.basename(folder), reason)
                        self._done(results, RunResult(folder, 0, "skipped", 0.0, reason))
                        continue
                    try:
                        running[folder] = self._start(folder, claim)
                    except OSError as exc:
                        claim.release()
                        self.manager.set_status([folder], "error", error=f"cannot start run.sh: {exc}")
                        self._done(results, RunResult(folder, 127, "error", 0.0, str(exc)))
                if not running:
                    continue
                for folder in self._wait_any(running):
                    job = running.pop(folder)
                    try:
                        status = self._settle(folder, job.process.returncode)
                    finally:
                        job.claim.release()
                    elapsed = time.monotonic() - job.started
                    self._done(results, RunResult(folder, job.process.returncode, status, elapsed))
        except KeyboardInterrupt:
            self._stop(running, results)
            raise
        return results

    def _done(self, results: list[RunResult], result: RunResult) -> None:
        results.append(result)
        if self.on_done is not None:
            self.on_done(result)

    @staticmethod
    def _wait_any(running: dict[str, _Running]) -> list[str]:
        """Block until at least one worker has exited; return those that have."""
        while True:
            done = [f for f, job in running.items() if job.process.poll() is not None]
            if done:
                return done
            try:
                pid, status = os.waitpid(-1, 0)  # wakes when any child exits
            except ChildProcessError:
                continue
            for job in running.values():
                if job.process.pid == pid:
                    job.process.returncode = os.waitstatus_to_exitcode(status)

    def _stop(self, running: dict[str, _Running], results: list[RunResult]) -> None:
        for job in running.values():
            try:
                os.killpg(job.process.pid, signal.SIGINT)
            except ProcessLookupError:
                continue
        for folder, job in running.items():
            try:
                job.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(job.process.pid, signal.SIGKILL)
                job.process.wait()
            code = job.process.returncode if job.process.returncode is not None else -2
            try:
                status = self._settle(folder, code, True)
            finally:
                job.claim.release()
            results.append(RunResult(folder, code, status, time.monotonic() - job.started))
