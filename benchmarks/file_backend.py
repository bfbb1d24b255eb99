"""file:// backend figures: many writers into one database, and cost per call as the database grows.

Prints:
- load: 16 processes x 10,000 metric values into one file:// database, every value checked present exactly
  once; values/s while logging (all writers released at once) and including each writer's close (fold).
  Target >= 20,000 values/s on a 2-core machine (track: 83 values/s with 16 writers).
- linear: one writer, 200,000 values; speed of the last 10k relative to the first 10k. Target >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unitrack.persistence.backends.file import FileProtocol  # noqa: E402
from unitrack.persistence.structure import Trial  # noqa: E402

WRITER = """
import sys, time
from unitrack.persistence.backends.file import FileProtocol
uri, uid, writer, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = FileProtocol(uri, strict=False, eager=False)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for seq in range(count):
    db.log_trial_metrics(uid, **{writer: seq})
t1 = time.perf_counter()
db.close()
t2 = time.perf_counter()
print(t0, t1, t2, flush=True)
"""


def load(writers: int, values: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        uri = f"file://{folder}/db.json"
        with FileProtocol(uri, strict=False) as db:
            trial = db.new_trial(Trial(name="load"))
            assert trial is not None
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, uri, trial.uid, f"w{w}", str(values)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for w in range(writers)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        wall0 = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        times = []
        for p in procs:
            out, _ = p.communicate()
            times.append(tuple(map(float, out.split())))
        wall = time.perf_counter() - wall0
        logging_s = max(t[1] for t in times) - min(t[0] for t in times)
        with FileProtocol(uri) as db:
            metrics = db.fetch_trials(None)[0].metrics
        total = writers * values
        exact = all(Counter(metrics[f"w{w}"].values) == Counter(range(values)) for w in range(writers))
        print(f"load: {writers} processes x {values:,} values = {total:,}; every value exactly once: {exact}")
        print(
            f"  logging:            {total / logging_s:12,.0f} values/s  ({logging_s:.2f} s)   target >= 20,000"
        )
        print(f"  incl. close/fold:   {total / wall:12,.0f} values/s  ({wall:.2f} s)")


def linear(values: int, chunk: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with FileProtocol(f"file://{folder}/db.json", strict=False) as db:
            trial = db.new_trial(Trial(name="linear"))
            assert trial is not None
            rates = []
            for start in range(0, values, chunk):
                t0 = time.perf_counter()
                for i in range(start, start + chunk):
                    db.log_trial_metrics(trial, step=i, loss=1.0 / (i + 1))
                rates.append(chunk / (time.perf_counter() - t0))
            t0 = time.perf_counter()
        close_s = time.perf_counter() - t0
        first, last = rates[0], rates[-1]
        print(f"linear: one writer, {values:,} values in chunks of {chunk:,}")
        print(
            f"  first 10k: {first:10,.0f} values/s   last 10k: {last:10,.0f} values/s   ratio {last / first:.2f}  (target >= 0.8)"
        )
        print(f"  slowest chunk: {min(rates):10,.0f} values/s   close (fold into JSON): {close_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--linear-values", type=int, default=200_000)
    args = parser.parse_args()
    load(args.writers, args.values)
    linear(args.linear_values)


if __name__ == "__main__":
    main()
