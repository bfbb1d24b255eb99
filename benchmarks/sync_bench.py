"""``unitrack sync`` figures: copying runs from a local ``hdf5://`` store to PostgreSQL and to ``unitrack serve``.

Prints, for each destination:
- first sync: N runs x M points (one metric, steps 0..M-1) from ``hdf5://`` into an empty destination;
  values/s over the whole sync (reading the source included). Target >= 100,000 values/s.
- second sync: the same again with nothing new; seconds. Target <= 2 s.

Each is measured ``--repeat`` times (a fresh destination schema each time) and the median printed with every run,
beside the load average (the figures are only comparable on a quiet machine).

The destinations: a private PostgreSQL server (``initdb``/``pg_ctl`` from Debian's ``postgresql`` package, as the
tests use), and a ``unitrack serve`` process in front of another schema of it (``socket://``). Without the
PostgreSQL binaries only the server in front of ``ephemeral://`` is measured.

Usage: python benchmarks/sync_bench.py [--runs 1000] [--points 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.persistence import pg  # noqa: E402
from unitrack.persistence.registry import get_protocol  # noqa: E402
from unitrack.persistence.structure import MetricPoint, Project, Trial, TrialGroup  # noqa: E402
from unitrack.persistence.sync import sync  # noqa: E402
from unitrack.persistence.users import UserStore  # noqa: E402

PASSWORD = "benchmark-password"


def make_source(root: Path, runs: int, points: int) -> float:
    """Write ``runs`` finished trials of ``points`` points each into hdf5://root; return the seconds taken."""
    started = time.perf_counter()
    with get_protocol(f"hdf5://{root}") as db:
        project = db.new_project(Project(name="bench"))
        group = db.new_trial_group(TrialGroup(name="sweep", project_id=project.uid))
        assert group is not None
        for i in range(runs):
            trial = db.new_trial(
                Trial(
                    name=f"run-{i}",
                    parameters={"lr": 1e-3 * (i + 1)},
                    project_id=project.uid,
                    group_id=group.uid,
                )
            )
            assert trial is not None
            db.log_trial_start(trial)
            db.log_trial_metric_points(trial, [MetricPoint("loss", s, 1.0 / (s + 1)) for s in range(points)])
            db.log_trial_finish(trial, None, None, None)
    return time.perf_counter() - started


def measure(label: str, src_uri: str, dst_uris: list[str], runs: int, points: int) -> None:
    """Sync into each of ``dst_uris`` (empty) twice; print every run and the medians."""
    rates, seconds = [], []
    for dst_uri in dst_uris:
        with get_protocol(src_uri) as src, get_protocol(dst_uri) as dst:
            first = sync(src, dst)
            assert first.points == runs * points and not first.failed, first
            second = sync(src, dst)
            assert second.points == 0 and second.trials_unchanged == runs, second
        rates.append(first.points / first.seconds)
        seconds.append(second.seconds)
        print(
            f"  {label}: first {first.points:,} values in {first.seconds:.2f} s = {rates[-1]:,.0f} values/s; "
            f"second {second.seconds:.2f} s (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    print(
        f"{label}: first sync median {statistics.median(rates):,.0f} values/s (target >= 100,000); "
        f"second sync with nothing new median {statistics.median(seconds):.2f} s (target <= 2 s)",
        flush=True,
    )


def serve(stack: ExitStack, backend: str, folder: Path) -> str:
    users = UserStore(folder / f"users-{len(list(folder.glob('users-*.json')))}.json")
    users.add("bench", PASSWORD, role="admin")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unitrack",
            "serve",
            "--backend",
            backend,
            "--users",
            str(users.path),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=folder,
    )
    stack.callback(proc.wait, 30)
    stack.callback(proc.terminate)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            port = int(line.rsplit(":", 1)[1])
            return f"socket://bench:{PASSWORD}@127.0.0.1:{port}?batch_size=20000"
    raise RuntimeError("unitrack serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="syncs into fresh destinations per figure")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        made = make_source(folder / "runs", args.runs, args.points)
        print(f"source: {args.runs} runs x {args.points} points written to hdf5:// in {made:.1f} s")
        src = f"hdf5://{folder / 'runs'}"
        bin_dir = pg.find_bin_dir()
        if bin_dir is None:
            print(
                f"no PostgreSQL binaries ({pg.ENABLE_HINT}); measuring unitrack serve in front of ephemeral://"
            )
            served = [serve(stack, "ephemeral://", folder) for _ in range(args.repeat)]
            measure("unitrack serve (ephemeral://)", src, served, args.runs, args.points)
            return
        base = stack.enter_context(pg.postgres_server(bin_dir))
        direct = [pg.schema_uri(base, f"sync_direct_{i}") for i in range(args.repeat)]
        measure("postgresql://", src, direct, args.runs, args.points)
        served = [serve(stack, pg.schema_uri(base, f"sync_served_{i}"), folder) for i in range(args.repeat)]
        measure("unitrack serve (postgresql://)", src, served, args.runs, args.points)
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
