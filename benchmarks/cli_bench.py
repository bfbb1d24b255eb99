"""CLI figures: ``unitrack --help``, ``register`` of a 1,000-point grid, ``view`` of 1,000 finished runs.

Targets (#14): view of 1,000 finished runs <= 0.4 s wall, register of a 1,000-point grid <= 3 s on the default
backend (each beside ``python -c pass``, the interpreter's own start-up). The finished runs each hold a store with
two metrics of 20 points, messages and a status, as runs of ``unitrack run`` do.

    python benchmarks/cli_bench.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Finishes every registered trial of a root as a run would: points, messages, timestamps, status.
FINISH = """
import sys, time
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status, TrialUpdate
with get_protocol("hdf5://" + sys.argv[1]) as db:
    for trial in db.find_trial_summaries(None):
        for step in range(20):
            db.log_trial_step(trial, step, {"loss": 1.0 / (step + 1), "acc": step / 20})
        db.update_trial(trial.uid, TrialUpdate(status=Status.Completed,
                        metadata={"status": "finished", "messages": {"loss": 0.05}, "end_time": time.time()}))
        db.commit()
"""


#: CPU seconds (user + system) of the last command timed: a figure a loaded machine disturbs less than wall time.
CPU = [0.0]


def timed(*args: str, cwd: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[0] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall


def best(n: int, *args: str) -> str:
    """The best of ``n`` runs: wall seconds, and the CPU seconds of that run."""
    runs = []
    for _ in range(n):
        wall = timed(*args)
        runs.append((wall, CPU[0]))
    wall, cpu = min(runs)
    return f"{wall:.3f} s (cpu {cpu:.3f} s)"


def main() -> None:
    python = sys.executable
    unitrack = [python, "-m", "unitrack"]
    print(f"python -c pass:                     {best(3, python, '-c', 'pass')}")
    print(f"unitrack --help:                    {best(3, *unitrack, '--help')}  (target 0.3 s)")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNITRACK_HOME"] = os.path.join(
            tmp, "home"
        )  # roots are remembered here, not in ~/.unitrack
        Path(tmp, "d.yml").write_text("a: 0\nb: 0\nc: 0\nlr: 0.1\n")
        Path(tmp, "s.sh").write_text("#!/bin/bash\ntrue\n")
        grid = "{" + ", ".join(f"{k}: " + " | ".join(map(str, range(10))) for k in "abc") + "}"
        register = [*unitrack, "register", "-d", f"{tmp}/d.yml", "-s", f"{tmp}/s.sh", "-u", grid]
        root = os.path.join(tmp, "R")
        secs = timed(*register, "-r", root)
        print(f"register 1,000 (hdf5 default):      {secs:.3f} s (cpu {CPU[0]:.3f} s)  (target 3 s)")
        secs = timed(*register, "-r", os.path.join(tmp, "R2"), "--backend", "ephemeral://")
        print(f"register 1,000 (files only):        {secs:.3f} s (cpu {CPU[0]:.3f} s)")
        print(f"view 1,000 registered runs:         {best(3, *unitrack, 'view', root)}")
        secs = timed(python, "-c", FINISH, root)
        print(f"(finishing 1,000 runs: 20 steps x 2 metrics each, {secs:.1f} s)")
        print(f"view 1,000 finished runs:           {best(3, *unitrack, 'view', root)}  (target 0.4 s)")
        code = f"import unitrack; assert len(unitrack.runs({root!r})) == 1000"
        print(f"unitrack.runs() of them (Python):   {best(3, python, '-c', code)}  (with pandas)")
        print(f"view --group-by a of them:          {best(3, *unitrack, 'view', root, '--group-by', 'a')}")


if __name__ == "__main__":
    main()
