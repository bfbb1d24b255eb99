"""Through ``unitrack serve`` (a real server subprocess in front of file://) restarted under load: 16 client
writers on their own trials and one shared trial with a reader polling, the server SIGKILLed and restarted
three times meanwhile; then 200 clients SIGKILLed at random moments across more restarts. A value counts as
acknowledged when the client's ``flush()`` returned after logging it (issue #12 item 1 through the server)."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Ack, Gate, Worker, exactly_once, fork_worker, kill_at_random_moments
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.structure import Trial

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "fault-test-password"  # noqa: S105 - a test user's password
FLUSH_EVERY = 5


class Server:
    """``unitrack serve`` in a subprocess, restarted on the same port."""

    def __init__(self, backend: str, users: Path, log: Path) -> None:
        self.backend, self.users, self.log = backend, users, log
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "unitrack", "serve", "--backend", self.backend, "--port", str(self.port),
                 "--users", str(self.users)],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = self.proc.stdout.readline() if ready else ""
            if line.startswith("listening on"):
                self.port = int(line.rsplit(":", 1)[1])
                return
            if not line or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {self.log.read_text()[-2000:]}")

    def kill_and_restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        """SIGKILL the server (no clean shutdown: what it acknowledged must already be on disk)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None

    @property
    def uri(self) -> str:
        return f"socket://writer:{PASSWORD}@127.0.0.1:{self.port}?retry_timeout_s=120"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    from unitrack.persistence.users import UserStore

    UserStore(tmp_path / "users.json").add("writer", PASSWORD, role="writer")
    srv = Server(f"file://{tmp_path}/db.json", tmp_path / "users.json", tmp_path / "server.log")
    yield srv
    srv.stop()


def _create_shared(ack: Ack, uri: str) -> None:
    with _client(uri) as db:  # through the server, so the writer user owns it and may write to it
        trial = db.new_trial(Trial(name="shared"))
        assert trial is not None
        ack("uid", trial.uid)


def _shared_trial(server: Server) -> str:
    worker = fork_worker("shared", _create_shared, server.uri)
    worker.join()
    return worker.acked("uid")[0]


def _client(uri: str) -> Any:
    from unitrack.persistence.client import SocketProtocol

    return SocketProtocol(uri)


def _write(ack: Ack, uri: str, shared: str, name: str, count: int, gate: Gate | None) -> None:
    """Log ``count`` values to an own trial and the shared one; acknowledge each batch once flush() returned."""
    db = _client(uri)
    own = db.new_trial(Trial(name=name))
    assert own is not None
    ack("ready")
    if gate is not None:
        gate.wait()
    for i in range(count):
        db.log_trial_metrics(own, step=i, v=i)
        db.log_trial_metrics(shared, **{name: i})
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 or i == count - 1:
            db.flush()
            for j in range(i - i % FLUSH_EVERY, i + 1):
                ack(f"{name}.v", j)
                ack(f"shared.{name}", j)
    db.close()


def _poll(ack: Ack, uri: str, stop: str) -> None:
    db = _client(uri)
    while not os.path.exists(stop):
        time.sleep(0.05)
        for trial in db.fetch_trials(None):
            for name, metric in trial.metrics.items():
                if len(set(metric.values)) != len(metric.values):
                    ack("problem", f"{trial.name}.{name}:duplicate")
    db.close()


def _dump(ack: Ack, uri: str, out: str) -> None:
    with FileProtocol(uri, strict=False) as db:
        data = {t.name: {n: list(m.values) for n, m in t.metrics.items()} for t in db.fetch_trials(None)}
    Path(out).write_text(json.dumps(data))


def _stored(tmp_path: Path) -> dict[str, list[Any]]:
    out = str(tmp_path / f"dump-{time.monotonic_ns()}.json")
    fork_worker("dump", _dump, f"file://{tmp_path}/db.json", out).join()
    series: dict[str, list[Any]] = {}
    for trial, metrics in json.loads(Path(out).read_text()).items():
        for name, values in metrics.items():
            series[f"shared.{name}" if trial == "shared" else f"{trial}.{name}"] = values
    return series


def _acked(workers: list[Worker]) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = {}
    for worker in workers:
        for key, value in worker.lines:
            if key.startswith("shared.") or key.endswith(".v"):
                acked.setdefault(key, []).append(int(value))
    return acked


def test_sixteen_clients_lose_nothing_while_the_server_is_killed_and_restarted(
    server: Server, tmp_path: Path
) -> None:
    server.start()
    shared = _shared_trial(server)
    gate = Gate()
    count = 300
    writers = [fork_worker(f"w{w}", _write, server.uri, shared, f"w{w}", count, gate) for w in range(16)]
    for worker in writers:
        worker.wait_acks(1)  # connected and created its trial
    stop = str(tmp_path / "stop")
    reader = fork_worker("reader", _poll, server.uri, stop)
    gate.open(len(writers))
    total = 16 * count * 2
    for share in (0.15, 0.45, 0.75):  # restart while the writers are busy
        deadline = time.monotonic() + 120
        while sum(len(w.lines) for w in writers) < share * total:
            alive = [worker._read(0.01) for worker in writers]
            assert any(alive) and time.monotonic() < deadline, "the writers stopped; see their tracebacks"
        server.kill_and_restart()
    for worker in writers:
        worker.join(timeout_s=240)
    Path(stop).touch()
    reader.join(timeout_s=120)
    assert reader.acked("problem") == [], reader.acked("problem")
    server.stop()
    problems = exactly_once(_acked(writers), _stored(tmp_path), in_flight=0)
    assert not problems, problems
    assert server.restarts == 3


def _write_until_killed(ack: Ack, uri: str, shared: str, k: int) -> None:
    name = f"k{k}"
    _write(ack, uri, shared, name, 100_000, None)


def test_two_hundred_client_kills_and_server_restarts_lose_nothing_acknowledged(
    server: Server, tmp_path: Path, rng: random.Random
) -> None:
    server.start()
    shared = _shared_trial(server)
    started = [0]

    def start(k: int) -> Worker:
        if k and k % 50 == 0:
            server.kill_and_restart()  # the running clients reconnect and resend
        started[0] += 1
        return fork_worker(f"k{k}", _write_until_killed, server.uri, shared, k)

    killed = kill_at_random_moments(start, rng, most=40, timeout_s=300)
    server.stop()
    problems = exactly_once(_acked(killed), _stored(tmp_path), in_flight=FLUSH_EVERY)
    assert not problems, problems
    assert server.restarts == 3
