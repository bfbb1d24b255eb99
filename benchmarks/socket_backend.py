"""socket:// figures: many client processes logging through one ``unitrack serve``, and single-call latency.

Prints:
- load: 16 client processes x 10,000 metric values (batched by the client) into one server in front of an
  ``ephemeral://`` (default), ``file://`` or ``hdf5://`` backend; every value checked present exactly once;
  values/s from the release of all writers to the last acknowledged flush. Target >= 100,000 values/s.
- load under attack: the same, while 300 connections that never log in sit idle (those the server closes are
  opened again) and another client logs one value and calls ``commit()`` in a loop. Target: at least 80% of the
  first figure.
- latency: p50/p99 of single unbatched round trips: a ping, a ``find_trials`` by uid, and a
  synchronous ``set_trial_status`` (one stamped update, acknowledged).

Usage: python benchmarks/socket_backend.py [--processes 16] [--values 10000] [--backend hdf5]
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

IDLE = """
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
opened = []
def open_one():
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    opened.append(s)
while len(opened) < count:
    open_one()
print("ready", flush=True)
while True:  # once a second, reopen what the server closed, until killed
    alive = []
    for s in opened:
        try:
            gone = s.recv(1) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        (s.close() if gone else alive.append(s))
    opened = alive
    while len(opened) < count:
        open_one()
    time.sleep(1.0)
"""

COMMITTER = """
import sys
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.structure import Trial
p = SocketProtocol(sys.argv[1])
trial = p.new_trial(Trial(name=sys.argv[2], project_id="bench"))
print("ready", flush=True)
i = 0
while True:  # until killed
    p.log_trial_metrics(trial, step=i, v=float(i))
    p.commit()
    i += 1
"""

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


def _load(uri: str, processes: int, values: int, prefix: str, env: dict[str, str]) -> float:
    """Run ``processes`` writers of ``values`` values each; check every value; return values/s."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, f"{prefix}{i}", str(values)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"writer failed with {proc.returncode}")
        t0, t1 = map(float, out.split())
        spans.append((t0, t1))
    elapsed = max(t1 for _, t1 in spans) - min(t0 for t0, _ in spans)
    with SocketProtocol(uri) as check:
        for i in range(processes):
            (trial,) = check.fetch_trials({"name": f"{prefix}{i}"})
            if list(trial.metrics["v"].values) != [float(v) for v in range(values)]:
                raise SystemExit(f"{trial.name}: values lost or duplicated")
    return processes * values / elapsed


def _started(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--backend", choices=["ephemeral", "file", "hdf5"], default="ephemeral")
    parser.add_argument("--idle", type=int, default=300, help="unauthenticated connections during the attack")
    parser.add_argument("--calls", type=int, default=2_000, help="round trips for the latency figures")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each load (medians are printed)")
    parser.add_argument("--backend-threads", type=int, default=4, help="the server's worker threads")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        users = UserStore(Path(tmp) / "users.json")
        users.add("bench", PASSWORD, role="writer")
        backend_uri = {
            "ephemeral": "ephemeral://",
            "file": f"file://{tmp}/db.json",
            "hdf5": f"hdf5://{tmp}/runs",
        }[args.backend]
        backend = get_protocol(backend_uri)
        with ServerThread(backend, users, backend_threads=args.backend_threads) as server:
            uri = f"socket://bench:{PASSWORD}@127.0.0.1:{server.port}"
            with SocketProtocol(uri) as setup:
                setup.new_project(Project(name="bench"))
            env = {"PYTHONPATH": str(ROOT)}
            total = args.processes * args.values
            quiet_runs: list[float] = []
            attacked_runs: list[float] = []
            for run in range(args.repeats):  # interleaved, so the machine's own drift hits both alike
                quiet_runs.append(_load(uri, args.processes, args.values, f"w{run}_", env))
                attackers = [
                    _started([IDLE, str(server.port), str(args.idle)], env),
                    _started([COMMITTER, uri, f"committer{run}"], env),
                ]
                try:
                    attacked_runs.append(_load(uri, args.processes, args.values, f"a{run}_", env))
                finally:
                    for proc in attackers:
                        proc.kill()
                        proc.communicate()
            quiet = statistics.median(quiet_runs)
            attacked = statistics.median(attacked_runs)
            print(
                f"load ({args.backend}): {args.processes} processes x {args.values} values = {total} values "
                f"-> {quiet:,.0f} values/s (median of {args.repeats}; each value exactly once)"
            )
            print(
                f"load ({args.backend}) while {args.idle} unauthenticated connections idle and a client commits in "
                f"a loop: {attacked:,.0f} values/s = {attacked / quiet:.0%} of the first figure   target >= 80%"
            )

            with SocketProtocol(uri) as check:
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
