"""Peak memory of closing a long ``hdf5://`` run, beside the memory it holds while logging (#12 item 15).

One trial logs N steps x 4 scalars with ``log_trial_metrics``; then ``close()`` builds ``store.h5`` from the
journal. Each run is a fresh process, so its peak RSS (``ru_maxrss``) is its own:

- logging RSS: the process's peak after logging every step (before closing);
- close peak: the process's peak after closing (the larger of the two);
- target: the close peak within 1.5x of the logging RSS, whatever N.

    python benchmarks/close_memory.py [--steps 1000000 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(steps: int) -> None:
    """One measured run (in its own process): print a JSON line of figures."""
    from unitrack.persistence.backends.hdf5 import HDF5Protocol
    from unitrack.persistence.structure import Trial

    with tempfile.TemporaryDirectory() as folder:
        db = HDF5Protocol(f"hdf5://{folder}", strict=False)
        trial = db.new_trial(Trial(name="long"))
        assert trial is not None
        uid = trial.uid
        t0 = time.perf_counter()
        for i in range(steps):
            db.log_trial_metrics(uid, step=i, loss=1.0 / (i + 1), acc=i / steps, lr=0.1, grad=0.5)
        logging_s = time.perf_counter() - t0
        logging_mb = _peak_mb()
        t0 = time.perf_counter()
        db.close()
        close_s = time.perf_counter() - t0
        journal = Path(folder, "long", "store.journal").stat().st_size
        h5 = Path(folder, "long", "store.h5").stat().st_size
    print(
        json.dumps(
            {
                "steps": steps,
                "logging_mb": logging_mb,
                "close_mb": _peak_mb(),
                "logging_s": logging_s,
                "close_s": close_s,
                "journal_mb": journal / 2**20,
                "h5_mb": h5 / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.one is not None:
        _run(args.one)
        return
    print("closing one hdf5:// trial of N steps x 4 scalars (each in a fresh process)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for steps in args.steps:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(steps)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = r["close_mb"] / r["logging_mb"]
        print(
            f"  {steps:>11,} steps: logging RSS {r['logging_mb']:7.0f} MB ({r['logging_s']:6.1f} s), "
            f"close peak {r['close_mb']:7.0f} MB = {ratio:4.2f}x (target <= 1.5x), close {r['close_s']:6.1f} s; "
            f"journal {r['journal_mb']:,.0f} MB -> store.h5 {r['h5_mb']:,.0f} MB"
        )


if __name__ == "__main__":
    main()
