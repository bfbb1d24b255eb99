"""CLI figures: ``unitrack --help``, ``unitrack view`` on 1,000 runs and ``register`` of a 1,000-point grid.

Targets: --help <= 0.3 s, view of 1,000 runs <= 1.5 s, register of 1,000 experiments <= 3 s (each beside
``python -c pass``, the interpreter's own start-up).

    python benchmarks/cli_bench.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(*args: str, cwd: str | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - start


def best(n: int, *args: str) -> float:
    return min(timed(*args) for _ in range(n))


def main() -> None:
    python = sys.executable
    print(f"python -c pass:                  {best(3, python, '-c', 'pass'):.3f} s")
    print(
        f"unitrack --help:                 {best(3, python, '-m', 'unitrack', '--help'):.3f} s  (target 0.3 s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "d.yml").write_text("a: 0\nb: 0\nc: 0\nlr: 0.1\n")
        Path(tmp, "s.sh").write_text("#!/bin/bash\ntrue\n")
        grid = "{a: " + " | ".join(map(str, range(10))) + ", b: " + " | ".join(map(str, range(10)))
        grid += ", c: " + " | ".join(map(str, range(10))) + "}"
        root = os.path.join(tmp, "R")
        secs = timed(
            python,
            "-m",
            "unitrack",
            "register",
            "-r",
            root,
            "-d",
            f"{tmp}/d.yml",
            "-s",
            f"{tmp}/s.sh",
            "-u",
            grid,
        )
        print(f"register 1,000 (hdf5 default):   {secs:.3f} s  (target 3 s)")
        root2 = os.path.join(tmp, "R2")
        secs = timed(
            python,
            "-m",
            "unitrack",
            "register",
            "-r",
            root2,
            "-d",
            f"{tmp}/d.yml",
            "-s",
            f"{tmp}/s.sh",
            "-u",
            grid,
            "--backend",
            "ephemeral://",
        )
        print(f"register 1,000 (files only):     {secs:.3f} s")
        print(
            f"view 1,000 runs:                 {best(3, python, '-m', 'unitrack', 'view', root):.3f} s  (target 1.5 s)"
        )


if __name__ == "__main__":
    main()
