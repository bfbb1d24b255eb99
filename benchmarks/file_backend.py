"""file:// backend figures: many writers into one database, and cost per call as the database grows.

Prints:
- load: 16 processes released together, each logging N values to a trial it creates and N values to one shared
  trial (issue #12's shape: 16 x 2,000 x 2 by default), every call acknowledged when it returns; then every
  value is checked present exactly once. Values/s while logging, and including each writer's close (which folds
  the journal into the JSON file when its own lines are not folded yet). Target >= 20,000 values/s on a 2-core
  machine (track: 83 values/s; the first unitrack version 1,200-2,900 values/s while losing 12,000-24,000 of
  64,000 values).
- single: one writer, the same calls, for the speed of one process (target: no slower than before).
- linear: one writer, 200,000 values; speed of the last 10k relative to the first 10k (target >= 0.8), and CPU
  time per call (steady on a busy machine, where wall-clock figures are not).
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
from unitrack.persistence.structure import Trial
uri, shared, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = FileProtocol(uri, strict=False)
own = db.new_trial(Trial(name=name))
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
c0 = time.process_time()
for i in range(count):
    db.log_trial_metrics(own, step=i, v=i)
    db.log_trial_metrics(shared, **{name: i})
t1 = time.perf_counter()
c1 = time.process_time()
db.close()
t2 = time.perf_counter()
print(t0, t1, t2, c1 - c0, flush=True)
"""


def load(writers: int, values: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        uri = f"file://{folder}/db.json"
        with FileProtocol(uri, strict=False) as db:
            shared = db.new_trial(Trial(name="shared"))
            assert shared is not None
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, uri, shared.uid, f"w{w}", str(values)],
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
        cpu_s = sum(t[3] for t in times)
        with FileProtocol(uri) as db:
            trials = {t.name: t.metrics for t in db.fetch_trials(None)}
        total = writers * values * 2
        want = Counter(range(values))
        exact = all(
            Counter(trials[f"w{w}"]["v"].values) == want and Counter(trials["shared"][f"w{w}"].values) == want
            for w in range(writers)
        )
        print(
            f"load: {writers} processes x {values:,} values x 2 trials (own + shared) = {total:,}; "
            f"every value exactly once: {exact}"
        )
        print(
            f"  logging:            {total / logging_s:12,.0f} values/s  ({logging_s:.2f} s)   target >= 20,000"
        )
        print(f"  incl. close/fold:   {total / wall:12,.0f} values/s  ({wall:.2f} s)")
        print(f"  CPU per value:      {cpu_s / total * 1e6:12.1f} us (all writers, logging)")


def single(values: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with FileProtocol(f"file://{folder}/db.json", strict=False) as db:
            own = db.new_trial(Trial(name="own"))
            shared = db.new_trial(Trial(name="shared"))
            assert own is not None and shared is not None
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(values):
                db.log_trial_metrics(own, step=i, v=i)
                db.log_trial_metrics(shared, w0=i)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"single: one process, {values:,} values x 2 trials")
        print(f"  {2 * values / wall:12,.0f} values/s   CPU {cpu / (2 * values) * 1e6:.1f} us per value")


def linear(values: int, chunk: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with FileProtocol(f"file://{folder}/db.json", strict=False) as db:
            trial = db.new_trial(Trial(name="linear"))
            assert trial is not None
            rates, cpus = [], []
            for start in range(0, values, chunk):
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(start, start + chunk):
                    db.log_trial_metrics(trial, step=i, loss=1.0 / (i + 1))
                rates.append(chunk / (time.perf_counter() - t0))
                cpus.append((time.process_time() - c0) / chunk)
            t0 = time.perf_counter()
        close_s = time.perf_counter() - t0
        first, last = rates[0], rates[-1]
        print(f"linear: one writer, {values:,} values in chunks of {chunk:,}")
        print(
            f"  first 10k: {first:10,.0f} values/s   last 10k: {last:10,.0f} values/s   ratio {last / first:.2f}  (target >= 0.8)"
        )
        print(
            f"  CPU per call: first 10k {cpus[0] * 1e6:.1f} us, last 10k {cpus[-1] * 1e6:.1f} us, "
            f"median {sorted(cpus)[len(cpus) // 2] * 1e6:.1f} us"
        )
        print(f"  slowest chunk: {min(rates):10,.0f} values/s   close (fold into JSON): {close_s:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--values", type=int, default=2_000, help="values per writer and trial")
    parser.add_argument("--single-values", type=int, default=50_000)
    parser.add_argument("--linear-values", type=int, default=200_000)
    args = parser.parse_args()
    load(args.writers, args.values)
    single(args.single_values)
    linear(args.linear_values)


if __name__ == "__main__":
    main()
