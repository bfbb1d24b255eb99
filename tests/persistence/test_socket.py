"""socket:// and ``unitrack serve``: wire, load, faults, bad input, security, transparency.

The contract suite runs against a served backend through ``conftest.BACKENDS['socket']``; this file tests what
is specific to remote mode. Real sockets on 127.0.0.1 and real subprocesses; no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.persistence.conftest import ADMIN, ADMIN_PASSWORD, make_users
from unitrack.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLostError,
    FrameError,
    InvalidQueryError,
    ItemNotFound,
    NotFoundError,
    PermissionDeniedError,
    ProtocolMismatchError,
    SchemaError,
    StorageError,
)
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.query import Query
from unitrack.persistence.server import ServerThread, check_bind_address, generate_self_signed
from unitrack.persistence.structure import Project, Status, Trial, TrialUpdate
from unitrack.persistence.users import UserStore
from unitrack.persistence.wire import (
    Call,
    ErrorReply,
    Login,
    Ping,
    Pong,
    Reply,
    decode_payload,
    encode_frame,
    encode_frames,
    encode_payload,
    encode_pieces,
    read_frame,
    recv_frame,
    recv_message,
    send_frame,
)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PASSWORDS = {"ada": "ada-password-1", "bob": "bob-password-1", "rita": "rita-password-1"}


def _values(protocol: SocketProtocol | FileProtocol, name: str) -> list[float]:
    (trial,) = protocol.fetch_trials({"name": name})
    metric = trial.metrics.get("v")
    return list(metric.values) if metric is not None else []


@pytest.fixture
def users(tmp_path: Path) -> UserStore:
    return make_users(
        tmp_path / "users.json",
        ada=(PASSWORDS["ada"], "writer"),
        bob=(PASSWORDS["bob"], "writer"),
        rita=(PASSWORDS["rita"], "reader"),
    )


@pytest.fixture
def server(users: UserStore) -> Iterator[ServerThread]:
    with ServerThread(EphemeralProtocol(), users) as srv:
        yield srv


def _uri(user: str, port: int, query: str = "") -> str:
    password = ADMIN_PASSWORD if user == ADMIN else PASSWORDS[user]
    return f"socket://{user}:{password}@127.0.0.1:{port}{query}"


def _serve(tmp_path: Path, users: UserStore, backend: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """`unitrack serve` in a subprocess; returns once it printed the port it listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unitrack", "serve", "--backend", backend, "--users", str(users.path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, int(line.rsplit(":", 1)[1])
    proc.wait(10)
    pytest.fail(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# ------------------------------------------------------------------------------------------------- wire
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_payload_decodes_to_a_message_or_a_frame_error(payload: bytes) -> None:
    try:
        decode_payload(payload)
    except FrameError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=20,
    )
)
def test_replies_round_trip_including_nan_and_infinity(result: object) -> None:
    decoded = decode_payload(encode_payload(Reply(result=result, id=3)))
    assert isinstance(decoded, Reply) and decoded.id == 3
    assert json.dumps(decoded.result, sort_keys=True) == json.dumps(
        result, sort_keys=True
    )  # NaN-aware compare


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_byte_stream_gives_messages_a_frame_error_or_the_end_never_a_hang(data: bytes) -> None:
    async def consume() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        while True:
            try:
                payload = await read_frame(reader, max_frame_bytes=1024, idle_timeout_s=5, read_timeout_s=5)
            except FrameError:
                return
            if payload is None:
                return
            with contextlib.suppress(FrameError):
                decode_payload(payload)

    asyncio.run(consume())


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "JSON|deeper"),
        (
            json.dumps({"kind": "reply", "result": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]})
            .replace("[]", "[" * 70 + "]" * 70)
            .encode(),
            "deeper",
        ),
        (b'{"kind": "call", "method": "x", "args": NaN}', "constant"),
        (b'{"kind": "pickle"}', "unknown message kind"),
        (b'{"kind": "call", "method": 3}', "wrong type"),
        (b'{"kind": "call", "method": "find_trials", "extra": 1}', "unknown fields"),
        (b'{"kind": "login", "user": "x"}', "incomplete"),
        (b"\xff\xfe\x00", "JSON"),
    ],
)
def test_malformed_payloads_raise_frame_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(FrameError, match=fragment):
        decode_payload(payload)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(_JSON, st.integers(min_value=1, max_value=64))
def test_a_message_of_any_size_travels_in_parts_and_comes_back_equal(result: object, chunk: int) -> None:
    frames = encode_frames(Reply(result=result, id=9), chunk_bytes=chunk)
    a, b = socket.socketpair()
    with a, b:
        writer = threading.Thread(target=lambda: [a.sendall(f) for f in frames])
        writer.start()
        decoded = recv_message(b)
        writer.join()
    assert isinstance(decoded, Reply) and decoded.id == 9
    assert json.dumps(decoded.result, sort_keys=True) == json.dumps(result, sort_keys=True)
    assert (
        "".join(encode_pieces(Reply(result=result, id=9)))
        == encode_payload(Reply(result=result, id=9)).decode()
    )


def test_parts_of_another_message_or_over_the_limit_are_frame_errors() -> None:
    frames = encode_frames(Reply(result="x" * 100, id=1), chunk_bytes=10)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(frames[0] + encode_frame(Pong(id=1)))
        with pytest.raises(FrameError, match="interrupted"):
            recv_message(b)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"".join(frames))
        with pytest.raises(FrameError, match="max_reply_bytes"):
            recv_message(b, max_message_bytes=50)


def test_signatures_come_from_the_protocol_so_a_new_primitive_is_served() -> None:
    from unitrack.persistence.protocol import PRIMITIVES
    from unitrack.persistence.server import SIGNATURES, _signature

    assert set(SIGNATURES) == PRIMITIVES

    class Wider(EphemeralProtocol):
        def fetch_points(  # a primitive another helper might add
            self,
            uids: Sequence[str],
            names: list[str] | None = None,
            max_points: int = 100,
            query: Query = None,
        ) -> dict[str, object]:
            return {}

    params = {p.name: p for p in _signature("fetch_points", Wider)}
    assert list(params) == ["uids", "names", "max_points", "query"] and params["max_points"].default == 100
    assert params["uids"].decode(["a", "b"]) == ["a", "b"] and params["names"].decode(None) is None
    for name, bad in [("uids", "a"), ("names", [1]), ("max_points", True), ("query", {"a": {"$bad": 1}})]:
        with pytest.raises((SchemaError, InvalidQueryError)):
            params[name].decode(bad)


def test_frame_length_is_checked_before_reading_the_body(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", 2**31))  # 2 GiB announced, nothing sent
        reply = recv_frame(sock)
        assert isinstance(reply, ErrorReply) and "exceeds the limit" in reply.message
        assert sock.recv(1) == b""  # then closed: the stream is out of step
    with pytest.raises(FrameError, match="exceeds the frame limit"):
        encode_frame(Reply(result="x" * 100), max_frame_bytes=50)


# ------------------------------------------------------------------------------------------------- load
def _workers(uri: str, names: list[str], count: int, log: Path | None = None) -> list[subprocess.Popen[str]]:
    procs = []
    for name in names:
        with contextlib.ExitStack() as stack:
            stderr = (
                subprocess.PIPE
                if log is None
                else stack.enter_context((log.parent / f"{log.name}.{name}").open("w"))
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.persistence._socket_worker", uri, name, str(count)],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    env=ENV,
                    cwd=ROOT,
                )
            )
    return procs


def _finish(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "done" in out, err


def test_sixteen_client_processes_log_every_value_exactly_once(server: ServerThread) -> None:
    names = [f"w{i}" for i in range(16)]
    _finish(_workers(_uri("ada", server.port, "?flush_interval_s=0.05"), names, 1000))
    with SocketProtocol(_uri(ADMIN, server.port)) as reader:
        for name in names:
            assert _values(reader, name) == [float(i) for i in range(1000)], name


def test_server_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    tmp_path: Path, users: UserStore
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    backend = f"file://{data}/db.json"
    proc, port = _serve(tmp_path, users, backend, "--port", "0")
    names = [f"k{i}" for i in range(4)]
    uri = _uri("ada", port, "?batch_size=50&flush_interval_s=0.01&retry_timeout_s=60")
    procs = _workers(uri, names, 4000, log=tmp_path / "worker.log")
    try:
        for worker in procs:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "half"
        proc.send_signal(signal.SIGKILL)  # workers are streaming their second half
        proc.wait()
        _stop(proc)
        proc, again = _serve(tmp_path, users, backend, "--port", str(port))
        assert again == port
        for worker in procs:
            assert worker.stdout is not None
            rest = worker.stdout.read()  # what readline() buffered, then the rest
            worker.stdout.close()
            assert worker.wait(120) == 0 and "done" in rest, (tmp_path / f"worker.log.{names[0]}").read_text()
    finally:
        for worker in procs:
            if worker.poll() is None:
                worker.kill()
        _stop(proc)
    with FileProtocol(backend) as stored:
        for name in names:
            assert _values(stored, name) == [float(i) for i in range(4000)], name


def test_client_killed_mid_frame_leaves_no_partial_batch(server: ServerThread) -> None:
    with SocketProtocol(_uri("ada", server.port)) as client:
        client.new_project(Project(name="p"))
        trial = client.new_trial(Trial(name="t", project_id="p"))
        assert trial is not None
    script = (
        "import os, signal, socket, sys\n"
        "from unitrack.persistence.wire import Batch, Login, encode_frame\n"
        f"s = socket.create_connection(('127.0.0.1', {server.port}))\n"
        f"s.sendall(encode_frame(Login(user='ada', password={PASSWORDS['ada']!r})))\n"
        "s.recv(4096)\n"
        f"items = [[{trial.uid!r}, {{'dtype': 'trial_update', 'metrics': [['v', None, float(i)] for i in range(500)]}}]]\n"
        "frame = encode_frame(Batch(items=items, id=1))\n"
        "s.sendall(frame[: len(frame) // 2])\n"
        "print('sent', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert result.returncode == -signal.SIGKILL and "sent" in result.stdout, result.stderr
    with SocketProtocol(_uri(ADMIN, server.port)) as admin:
        assert admin.ping() >= 0
        assert _values(admin, "t") == []


class ChaosProxy:
    """A loopback TCP proxy that splits chunks into single bytes, merges them and cuts connections, seeded."""

    def __init__(self, target_port: int, seed: int, max_cuts: int = 25) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.max_cuts = max_cuts
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()
        while tasks := asyncio.all_tasks(self.loop):  # handlers may start while others are cancelled
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def __enter__(self) -> ChaosProxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = b""
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.01) if held else await reader.read(4096)
            except TimeoutError:
                data, held = held, b""  # nothing more came: release what was merged
                writer.write(data)
                await writer.drain()
                continue
            if not data:
                break
            data, held = held + data, b""
            roll = self.rng.random()
            if roll < 0.04 and self.cuts < self.max_cuts:
                self.cuts += 1
                writer.write(data[: self.rng.randrange(len(data) + 1)])  # cut at a random byte
                await writer.drain()
                raise ConnectionAbortedError("chaos cut")
            if roll < 0.35 and len(data) <= 2048:
                for i in range(len(data)):
                    writer.write(data[i : i + 1])
                    await writer.drain()
            elif roll < 0.6:
                held = data  # merged with whatever comes next
            else:
                writer.write(data)
                await writer.drain()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        writers = [client_w]
        pumps: list[asyncio.Future[None]] = []
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            writers.append(server_w)
            pumps = [
                asyncio.ensure_future(self._pump(client_r, server_w)),
                asyncio.ensure_future(self._pump(server_r, client_w)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in writers:
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()


@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_proxy_splitting_merging_and_cutting_still_gives_exactly_once(
    server: ServerThread, seed: int
) -> None:
    with ChaosProxy(server.port, seed) as proxy:
        uri = _uri("ada", proxy.port, "?batch_size=20&flush_interval_s=0.005&retry_timeout_s=60&timeout_s=5")
        errors: list[BaseException] = []

        def work(name: str) -> None:
            try:
                with SocketProtocol(uri) as client:
                    client.new_project(Project(name="chaos"))
                    trial = client.new_trial(Trial(name=name, project_id="chaos"))
                    assert trial is not None
                    for i in range(300):
                        client.log_trial_metrics(trial, v=float(i))
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"c{seed}-{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert proxy.cuts > 0
    with SocketProtocol(_uri(ADMIN, server.port)) as admin:
        for i in range(3):
            assert _values(admin, f"c{seed}-{i}") == [float(v) for v in range(300)]


# ------------------------------------------------------------------------------------------------- bad input
def _login(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    send_frame(sock, Login(user=ADMIN, password=ADMIN_PASSWORD))
    assert isinstance(recv_frame(sock), Reply)
    return sock


def _garbage(rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(64))
    if choice == 1:
        return b"[" * rng.randrange(1, 5000)
    if choice == 2:
        depth = rng.randrange(60, 400)
        return b'{"kind":"call","method":"find_trials","args":[' + b"[" * depth + b"]" * depth + b"]}"
    if choice == 3:
        method = rng.choice(
            ["__init__", "__class__", "_db", "close", "log_trial_metrics", "commit", "fetch_trials"]
        )
        return json.dumps({"kind": "call", "method": method, "args": [], "kwargs": {"x": 1}}).encode()
    if choice == 4:
        return json.dumps(
            {"kind": "call", "method": "commit", "kwargs": {"file_name_override": "/tmp/unitrack-evil.json"}}
        ).encode()
    if choice == 5:
        query = rng.choice([{"$where": "1"}, {"a": {"$regex": "("}}, "x", [[1, 2, 3]], {"": 1}])
        return json.dumps({"kind": "call", "method": "find_trials", "args": [query]}).encode()
    if choice == 6:
        return json.dumps(
            {
                "kind": "call",
                "method": "insert_trial",
                "args": [{"dtype": "trial", "name": "../x", "revision": "z"}],
            }
        ).encode()
    payload = bytearray(
        json.dumps({"kind": "call", "method": "find_trials", "args": [{"name": "x"}]}).encode()
    )
    payload[rng.randrange(len(payload))] = rng.randrange(256)
    return bytes(payload)


def test_ten_thousand_malformed_frames_leave_the_server_up_and_run_no_code(
    tmp_path: Path, users: UserStore
) -> None:
    data, events = tmp_path / "data", tmp_path / "events.log"
    data.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.persistence._audited_server", str(data), str(users.path), str(events)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=data,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        before = sorted(p for p in tmp_path.rglob("*") if data not in p.parents and p != data)
        rng = random.Random(1234)
        sock = _login(port)
        sent = 0
        while sent < 10_000:
            for _ in range(500):
                sent += 1
                if rng.random() < 0.01:  # a wrong or huge length: the server answers or closes; start over
                    sock.sendall(
                        struct.pack(">I", rng.choice([0, 3, 2**32 - 1, 9 * 2**20])) + rng.randbytes(8)
                    )
                    sock.close()
                    sock = _login(port)
                    continue
                payload = _garbage(rng)
                sock.sendall(struct.pack(">I", len(payload)) + payload)
                reply = recv_frame(sock)
                assert isinstance(reply, (ErrorReply, Reply)), (
                    payload[:80],
                    reply,
                )  # a mutation may still be valid
            send_frame(sock, Ping(id=sent))
            assert recv_frame(sock) == Pong(id=sent)
        sock.close()
        assert proc.poll() is None
        after = sorted(p for p in tmp_path.rglob("*") if data not in p.parents and p != data)
        assert after == before, "a file was written outside the data root"
        assert not Path("/tmp/unitrack-evil.json").exists()
    finally:
        _stop(proc)
    assert not events.exists() or events.read_text() == "", events.read_text()


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "fragment"),
    [
        ("__init__", [], {}, "unknown method"),
        ("log_trial_metrics", ["x"], {"v": 1}, "unknown method"),
        ("commit", [], {"file_name_override": "/etc/passwd"}, "unknown argument"),
        ("commit", ["/etc/passwd"], {}, "at most 0 arguments"),
        ("find_trials", [], {"attr": "set_trial_status"}, "unknown argument"),
        ("update_trial", ["uid"], {}, "missing argument 'update'"),
        ("insert_trial", [{"dtype": "project", "name": "p"}], {}, "must be a Trial"),
        ("find_trials", [{"status": {"$where": "x"}}], {}, "unknown operator"),
    ],
)
def test_calls_outside_the_primitive_table_are_rejected_and_the_server_keeps_serving(
    server: ServerThread, method: str, args: list[object], kwargs: dict[str, object], fragment: str
) -> None:
    with _login(server.port) as sock:
        send_frame(sock, Call(method=method, args=args, kwargs=kwargs, id=5))
        reply = recv_frame(sock)
        assert isinstance(reply, ErrorReply) and reply.id == 5
        assert fragment in reply.message
        send_frame(sock, Ping(id=6))
        assert recv_frame(sock) == Pong(id=6)


def test_server_decodes_updates_with_or_without_a_description(server: ServerThread) -> None:
    with SocketProtocol(_uri(ADMIN, server.port)) as client:
        client.new_project(Project(name="p"))
        trial = client.new_trial(Trial(name="t", project_id="p", description="first"))
        assert trial is not None
        with _login(server.port) as sock:
            old_client = {"dtype": "trial_update", "metadata": {"k": 1}}  # sent before the field existed
            send_frame(sock, Call(method="update_trial", args=[trial.uid, old_client], id=1))
            assert isinstance(recv_frame(sock), Reply)
            bad = {"dtype": "trial_update", "metadata": {"k": 2}, "description": 5}
            send_frame(sock, Call(method="update_trial", args=[trial.uid, bad], id=2))
            reply = recv_frame(sock)
            assert isinstance(reply, ErrorReply) and "description" in reply.message
            new = {"dtype": "trial_update", "description": "second"}
            send_frame(sock, Call(method="update_trial", args=[trial.uid, new], id=3))
            assert isinstance(recv_frame(sock), Reply)
        (stored,) = client.fetch_trials({"uid": trial.uid})
        assert stored.description == "second" and dict(stored.metadata) == {"k": 1}


def test_server_errors_are_raised_as_the_same_class(server: ServerThread) -> None:
    with SocketProtocol(_uri(ADMIN, server.port)) as client:
        with pytest.raises(NotFoundError, match="No trial"):
            client.update_trial("nope_0", TrialUpdate(tags={"a": 1}))
        with pytest.raises(ConfigError, match="no arguments"):
            client.commit(file_name_override="/tmp/x")


def test_a_batch_over_the_frame_limit_is_split_not_lost(server: ServerThread) -> None:
    uri = _uri(ADMIN, server.port, "?max_frame_bytes=1500&batch_size=1000&flush_interval_s=60")
    with SocketProtocol(uri) as client:
        client.new_project(Project(name="p"))
        trials = [client.new_trial(Trial(name=f"t{i}", project_id="p")) for i in range(4)]
        for trial in trials:
            assert trial is not None
            client.log_trial_metrics(trial, v=-1.0)
        for i in range(25):
            for trial in trials:
                assert trial is not None
                client.log_trial_metrics(trial, v=float(i))
        client.flush()
        for i in range(4):
            assert _values(client, f"t{i}") == [-1.0, *map(float, range(25))]


def test_ping_before_login_and_calls_before_login_are_refused(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        send_frame(sock, Ping(id=1))
        assert recv_frame(sock) == Pong(id=1)
        send_frame(sock, Call(method="find_trials", id=2))
        reply = recv_frame(sock)
        assert (
            isinstance(reply, ErrorReply)
            and reply.error == "AuthenticationError"
            and "log in first" in reply.message
        )


def test_logins_beyond_the_limit_are_refused_as_busy_and_retried(users: UserStore) -> None:
    with ServerThread(EphemeralProtocol(), users, max_connections=1) as srv:
        with SocketProtocol(_uri(ADMIN, srv.port)) as first:
            with _raw(srv.port) as second:  # connected, not logged in: a slot of its own
                send_frame(second, Login(user=ADMIN, password=ADMIN_PASSWORD, id=1, version=2))
                reply = recv_frame(second)
                assert isinstance(reply, ErrorReply) and reply.error == "ServerBusyError"
                assert "--max-connections" in reply.message
                assert second.recv(1) == b""  # closed: its slot is free again
            with pytest.raises(ConnectionLostError, match="busy"):
                SocketProtocol(_uri(ADMIN, srv.port, "?connect_timeout_s=0.3"))
            assert first.ping() >= 0
        with SocketProtocol(_uri(ADMIN, srv.port)) as again:  # the slot came back
            assert again.ping() >= 0


def _raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


# ------------------------------------------------------------------------------------------------- security
def test_no_plaintext_password_on_disk_or_in_the_server_command_line(
    tmp_path: Path, users: UserStore
) -> None:
    proc, port = _serve(tmp_path, users, f"file://{tmp_path}/data/db.json", "--port", "0")
    try:
        with SocketProtocol(_uri("ada", port)) as client:
            client.new_project(Project(name="p"))
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        for password in [ADMIN_PASSWORD, *PASSWORDS.values()]:
            assert password.encode() not in cmdline
    finally:
        _stop(proc)
    assert users.path.stat().st_mode & 0o777 == 0o600
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for password in [ADMIN_PASSWORD, *PASSWORDS.values()]:
                assert password.encode() not in content, path


def test_unknown_user_and_wrong_password_get_the_same_error(server: ServerThread) -> None:
    messages = []
    for user, password in [("nobody", "whatever-1"), ("ada", "wrong-password")]:
        with pytest.raises(AuthenticationError) as info:
            SocketProtocol(f"socket://{user}:{password}@127.0.0.1:{server.port}")
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "unknown user or wrong password"


def test_repeated_failures_grow_the_delay_of_that_user_from_that_source_only(server: ServerThread) -> None:
    throttle = server.server._throttle
    delays = []
    for _ in range(6):
        delays.append(throttle.delay_s("x", "h"))
        throttle.failed("x", "h")
    assert delays[:3] == [0.0, 0.0, 0.0] and delays[3] < delays[4] < delays[5]
    assert throttle.delay_s("y", "h") == 0.0 and throttle.delay_s("x", "other") == 0.0
    throttle.succeeded("x", "h")
    assert throttle.delay_s("x", "h") == 0.0


def test_a_reader_cannot_write(server: ServerThread) -> None:
    with SocketProtocol(_uri("ada", server.port)) as ada:
        ada.new_project(Project(name="p"))
        trial = ada.new_trial(Trial(name="t", project_id="p"))
        assert trial is not None
    with SocketProtocol(_uri("rita", server.port)) as rita:
        assert [t.name for t in rita.fetch_trials(None)] == ["t"]
        with pytest.raises(PermissionDeniedError, match="rita"):
            rita.new_project(Project(name="q"))
        with pytest.raises(PermissionDeniedError):
            rita.log_trial_metrics(trial, v=1.0)
        with pytest.raises(PermissionDeniedError):
            rita.set_trial_status(trial, Status.Completed)


def test_one_writer_cannot_touch_another_writers_trials(server: ServerThread) -> None:
    with SocketProtocol(_uri("ada", server.port)) as ada, SocketProtocol(_uri("bob", server.port)) as bob:
        ada.new_project(Project(name="p"))
        mine = ada.new_trial(Trial(name="ada-run", project_id="p", tags={"owner": "bob"}))
        assert mine is not None and mine.tags["owner"] == "ada"  # the server records the real owner
        ada.log_trial_metrics(mine, v=1.0)
        with pytest.raises(PermissionDeniedError, match="belongs to someone else"):
            bob.log_trial_metrics(mine, v=2.0)
        with pytest.raises(PermissionDeniedError):
            bob.add_trial_tags(mine, owner="bob")
        with pytest.raises(ItemNotFound):
            bob.fetch_and_update_trial({"name": "ada-run"}, "set_trial_status", status=Status.Running)
        with pytest.raises(PermissionDeniedError):
            ada.add_trial_tags(mine, owner="bob")  # nobody but an admin changes an owner
        assert _values(bob, "ada-run") == [1.0]


def test_tls_with_a_pinned_fingerprint_or_a_ca_file(tmp_path: Path, users: UserStore) -> None:
    cert, _, fingerprint = generate_self_signed(tmp_path / "tls")
    proc, port = _serve(
        tmp_path, users, "ephemeral://", "--port", "0", "--tls-self-signed", str(tmp_path / "tls")
    )
    try:
        with SocketProtocol(_uri("ada", port, f"?fingerprint={fingerprint}")) as pinned:
            pinned.new_project(Project(name="p"))
        with SocketProtocol(_uri("ada", port, f"?cafile={cert}")) as verified:
            assert [p.name for p in verified.fetch_projects(None)] == ["p"]
        with pytest.raises(AuthenticationError, match="fingerprint"):
            SocketProtocol(_uri("ada", port, "?fingerprint=" + "0" * 64))
        with pytest.raises(ProtocolMismatchError, match=f"uses TLS.*fingerprint={fingerprint}"):
            SocketProtocol(_uri("ada", port))  # plaintext against TLS: at once, naming the fix
        with pytest.raises(AuthenticationError, match="not trusted"):
            SocketProtocol(_uri("ada", port, "?tls=true&retry_timeout_s=0.5"))  # system CAs do not know it
        with SocketProtocol(_uri("ada", port, f"?fingerprint={fingerprint}")) as again:  # still serving
            assert again.ping() >= 0
    finally:
        _stop(proc)


def test_startup_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plaintext"):
        check_bind_address("0.0.0.0", tls=False, insecure=False)  # noqa: S104
    check_bind_address("0.0.0.0", tls=False, insecure=True)  # noqa: S104
    check_bind_address("::1", tls=False, insecure=False)
    with pytest.raises(ConfigError, match="no default password"):
        ServerThread(EphemeralProtocol(), UserStore(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match="TLS"):
        SocketProtocol("socket://a:b@127.0.0.1:1?security_layer=AES")
    with pytest.raises(ConfigError, match="plaintext"):
        SocketProtocol("socket://a:b@10.1.2.3:1")


def test_password_from_environment_or_a_private_credentials_file(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNITRACK_PASSWORD", raising=False)
    monkeypatch.setenv("UNITRACK_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match="No password"):
        SocketProtocol(f"socket://ada@127.0.0.1:{server.port}")
    creds = tmp_path / "home" / "credentials"
    creds.parent.mkdir()
    creds.write_text(f"ada@127.0.0.1:{server.port} {PASSWORDS['ada']}\n")
    creds.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        SocketProtocol(f"socket://ada@127.0.0.1:{server.port}")
    creds.chmod(0o600)
    with SocketProtocol(f"socket://ada@127.0.0.1:{server.port}") as client:
        assert client.role == "writer"
        assert PASSWORDS["ada"] not in repr(client)
    monkeypatch.setenv("UNITRACK_PASSWORD", PASSWORDS["bob"])
    with SocketProtocol(f"socket://bob@127.0.0.1:{server.port}") as client:
        assert client.role == "writer"


def test_users_file_must_be_private(tmp_path: Path) -> None:
    users = make_users(tmp_path / "u.json")
    users.path.chmod(0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        users.load()
    with pytest.raises(ConfigError, match="too short"):
        UserStore(tmp_path / "v.json").add("x", "short")


# ------------------------------------------------------------------------------------------------- transparency
def test_unitrack_uri_makes_track_client_log_remotely(
    users: UserStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from unitrack.persistence.track import TrackClient

    backend = EphemeralProtocol()
    with ServerThread(backend, users) as srv:
        monkeypatch.setenv("UNITRACK_URI", f"socket://ada@127.0.0.1:{srv.port}")
        monkeypatch.setenv("UNITRACK_PASSWORD", PASSWORDS["ada"])
        client = TrackClient()
        client.set_project(name="remote")
        client.new_trial(name="run", parameters={"lr": 0.1})
        with client:
            for step in range(5):
                client.log_metrics(step=step, loss=1.0 / (step + 1))
        client.close()
        (trial,) = backend.fetch_trials({"name": "run"})
        assert trial.status is Status.Completed
        assert trial.metrics["loss"].to_dict() == {0: 1.0, 1: 0.5, 2: pytest.approx(1 / 3), 3: 0.25, 4: 0.2}
        assert trial.tags["owner"] == "ada"


def test_updates_of_an_unknown_trial_raise_at_once_and_schema_errors_before_sending(
    server: ServerThread,
) -> None:
    with SocketProtocol(_uri(ADMIN, server.port)) as client:
        with pytest.raises(NotFoundError):
            client.log_trial_metrics("missing_0", v=1.0)
        with pytest.raises(SchemaError):
            client.log_trial_metrics("missing_0", v="text")


def test_a_primitive_without_a_client_method_is_called_generically(server: ServerThread) -> None:
    from unitrack.persistence.client import _remote_primitive

    with SocketProtocol(_uri(ADMIN, server.port)) as client:
        client.new_project(Project(name="p"))
        trial = client.new_trial(Trial(name="t", project_id="p"))
        assert trial is not None
        find_trials = _remote_primitive("find_trials")
        found = find_trials(client, {"name": "t"})
        assert [t.uid for t in found] == [trial.uid] and isinstance(found[0], Trial)
        update = _remote_primitive("update_trial")
        update(client, trial.uid, TrialUpdate(tags={"k": "v"}))
        assert client.fetch_trials({"tags.k": "v"})[0].uid == trial.uid
