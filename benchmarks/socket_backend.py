"""socket:// figures: many client processes logging through one ``unitrack serve``, and single-call latency.

Prints:
- load: 16 client processes x 10,000 metric values (batched by the client) into one server in front of an
  ``ephemeral://`` (default) or ``file://`` backend; every value checked present exactly once; values/s from
  the release of all writers to the last acknowledged flush. Target >= 100,000 values/s.
- latency: p50/p99 of single unbatched round trips: a ping, a ``find_trials`` by uid, and a
  synchronous ``set_trial_status`` (one stamped update, acknowledged).

Usage: python benchmarks/socket_backend.py [--processes 16] [--values 10000] [--backend file]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unitrack.persistence.client import SocketProtocol  # noqa: E402
from unitrack.persistence.registry import get_protocol  # noqa: E402
from unitrack.persistence.server import ServerThread  # noqa: E402
from unitrack.persistence.structure import Project, Status, Trial  # noqa: E402
from unitrack.persistence.users import UserStore  # noqa: E402

PASSWORD = "benchmark-password"

WRITER = """
import sys, time
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.structure import Trial
uri, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = SocketProtocol(uri)
trial = p.new_trial(Trial(name=name, project_id="bench"))
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for i in range(count):
    p.log_trial_metrics(trial, v=float(i))
p.flush()
t1 = time.perf_counter()
p.close()
print(t0, t1, flush=True)
"""


def _percentiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"p50 {q[49] * 1e3:.3f} ms, p99 {q[98] * 1e3:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--backend", choices=["ephemeral", "file"], default="ephemeral")
    parser.add_argument("--calls", type=int, default=2_000, help="round trips for the latency figures")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        users = UserStore(Path(tmp) / "users.json")
        users.add("bench", PASSWORD, role="writer")
        backend_uri = "ephemeral://" if args.backend == "ephemeral" else f"file://{tmp}/db.json"
        backend = get_protocol(backend_uri)
        with ServerThread(backend, users) as server:
            uri = f"socket://bench:{PASSWORD}@127.0.0.1:{server.port}"
            with SocketProtocol(uri) as setup:
                setup.new_project(Project(name="bench"))
            env = {"PYTHONPATH": str(ROOT)}
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, uri, f"w{i}", str(args.values)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for i in range(args.processes)
            ]
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            spans = []
            for proc in procs:
                out, _ = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    raise SystemExit(f"writer failed with {proc.returncode}")
                t0, t1 = map(float, out.split())
                spans.append((t0, t1))
            total = args.processes * args.values
            elapsed = max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)
            with SocketProtocol(uri) as check:
                trials = check.fetch_trials({"project_id": "bench"})
                for trial in trials:
                    values = list(trial.metrics["v"].values)
                    if values != [float(i) for i in range(args.values)]:
                        raise SystemExit(f"{trial.name}: values lost or duplicated")
                if len(trials) != args.processes:
                    raise SystemExit(f"expected {args.processes} trials, found {len(trials)}")
                print(
                    f"load ({args.backend}): {args.processes} processes x {args.values} values = {total} values "
                    f"in {elapsed:.2f} s -> {total / elapsed:,.0f} values/s (each exactly once)"
                )

                small = check.new_trial(Trial(name="latency", project_id="bench"))
                assert small is not None
                pings, finds, updates = [], [], []
                for _ in range(args.calls):
                    t = time.perf_counter()
                    check.ping()
                    pings.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    check.fetch_trials({"uid": small.uid})
                    finds.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    check.set_trial_status(small, Status.Running)
                    updates.append(time.perf_counter() - t)
                print(f"latency ping: {_percentiles(pings)}")
                print(f"latency find_trials(uid): {_percentiles(finds)}")
                print(f"latency set_trial_status (acknowledged): {_percentiles(updates)}")


if __name__ == "__main__":
    main()
