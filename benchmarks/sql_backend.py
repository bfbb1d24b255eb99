"""postgresql:// backend figures: many writers into one database, and a parameter query over many trials.

Prints:
- load: 16 processes x 10,000 metric values into one database (one trial per process), 100 values per
  ``log_trial_metric_points`` call; every value checked present exactly once. Target >= 50,000 values/s on a
  2-core machine. The same load on ``hdf5://`` and ``file://`` for comparison.
- one call per step: 8 processes x 10,000 ``log_trial_metrics`` calls (one value each) through the default
  ``postgresql://`` URI, which batches in the client; the clock stops once ``commit()`` has acknowledged every
  value. Target >= 50,000 values/s.
  Then the same with ``?batch_size=1`` (every call durable when it returns: one transaction per call).
- query: 10,000 trials, then ``fetch_trials({'parameters.lr': {'$lt': 0.1}})``. Target <= 100 ms.

Without ``--uri`` a private server is started with initdb/pg_ctl (as the tests do; needs the PostgreSQL
binaries: ``apt-get install postgresql``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.persistence import pg  # noqa: E402
from unitrack.persistence.backends.sql import SQLProtocol  # noqa: E402
from unitrack.persistence.registry import get_protocol  # noqa: E402
from unitrack.persistence.structure import Trial  # noqa: E402

WRITER = """
import sys, time
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import MetricPoint
uri, uid, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
db = get_protocol(uri, strict=False)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
if batch > 1:
    for start in range(0, count, batch):
        db.log_trial_metric_points(uid, [MetricPoint("v", None, v) for v in range(start, min(count, start + batch))])
else:
    for v in range(count):
        db.log_trial_metrics(uid, v=v)
db.commit()  # every value acknowledged (written to the database) before the clock stops
t1 = time.perf_counter()
db.close()
print(t0, t1, flush=True)
"""


@contextmanager
def database(uri: str | None) -> Iterator[str]:
    if uri is not None:
        yield uri
        return
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        raise SystemExit(pg.ENABLE_HINT)
    with pg.postgres_server(bin_dir) as base:
        yield base


def load(
    uri: str, writers: int, values: int, batch: int, label: str = "postgresql://", target: str = ""
) -> None:
    """16 writer processes, one trial each, into the backend at ``uri``; every value checked exactly once."""
    with get_protocol(uri, strict=False) as db:
        uids = []
        for w in range(writers):
            trial = db.new_trial(Trial(name=f"load{w}"))
            assert trial is not None
            uids.append(trial.uid)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, uid, str(values), str(batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for uid in uids
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    times = []
    for p in procs:
        out, _ = p.communicate()
        times.append(tuple(map(float, out.split())))
    seconds = max(t[1] for t in times) - min(t[0] for t in times)
    with get_protocol(uri) as db:
        trials = db.fetch_trials(None)
    exact = len(trials) == writers and all(
        Counter(t.metrics["v"].values) == Counter(range(values)) for t in trials
    )
    total = writers * values
    how = f"{batch} values per call" if batch > 1 else "one call per value"
    print(
        f"{label} load, {how}: {writers} x {values:,} = {total:,}; exactly once: {exact}; "
        f"{total / seconds:,.0f} values/s ({seconds:.2f} s){target}"
    )


def query(base: str, trials: int, repeats: int = 7) -> None:
    uri = pg.schema_uri(base, f"query-{time.time()}")
    rng = random.Random(0)
    with SQLProtocol(uri, strict=False) as db:
        t0 = time.perf_counter()
        for i in range(trials):
            db.new_trial(Trial(name=f"t{i}", parameters={"lr": rng.random(), "layers": rng.randint(1, 8)}))
        insert_s = time.perf_counter() - t0
        durations = []
        found = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            found = len(db.fetch_trials({"parameters.lr": {"$lt": 0.1}}))
            durations.append(time.perf_counter() - t0)
    print(f"query: {trials:,} trials (inserted at {trials / insert_s:,.0f} trials/s)")
    print(
        f"  fetch_trials({{'parameters.lr': {{'$lt': 0.1}}}}) -> {found:,} trials: median "
        f"{statistics.median(durations) * 1000:.1f} ms, best {min(durations) * 1000:.1f} ms   target <= 100 ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", help="an existing database (default: start a private server)")
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--step-writers", type=int, default=8)
    parser.add_argument("--step-values", type=int, default=10_000)
    parser.add_argument("--per-call-values", type=int, default=2_000)
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    with database(args.uri) as base:
        load(
            pg.schema_uri(base, f"load-{time.time()}"),
            args.writers,
            args.values,
            args.batch,
            target="   target >= 50,000",
        )
        with tempfile.TemporaryDirectory() as folder:  # the same load, same run, on the local backends
            load(f"hdf5://{folder}/runs", args.writers, args.values, args.batch, label="hdf5://")
            load(f"file://{folder}/db.json", args.writers, args.values, args.batch, label="file://")
        load(
            pg.schema_uri(base, f"steps-{time.time()}"),
            args.step_writers,
            args.step_values,
            1,
            label="postgresql:// (default URI)",
            target="   target >= 50,000",
        )
        load(
            pg.schema_uri(base, f"per-call-{time.time()}") + "&batch_size=1",
            args.step_writers,
            args.per_call_values,
            1,
            label="postgresql://?batch_size=1",
        )
        query(base, args.trials)


if __name__ == "__main__":
    main()
