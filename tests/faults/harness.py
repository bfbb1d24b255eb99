"""Reusable pieces of the fault tests (STYLE §10): forked workers that acknowledge through a pipe, a gate that
releases them together, kills at random moments, the exactly-once count, and bit-flip iterators.

Workers are forked from the already-imported test process (``os.fork``), so starting one costs milliseconds
and 200 kills stay cheap. A worker runs ``target(ack, *args)``; ``ack(key, value)`` writes one line to a pipe
right after the call it acknowledges returned, so the parent knows exactly what was acknowledged even when it
kills the worker a moment later.

Example (in a test)::

    gate = Gate()
    workers = [fork_worker(write_values, uri, f"w{i}", gate=gate) for i in range(16)]
    gate.open(len(workers))
    for worker in workers:
        worker.join(timeout_s=120)
    problems = exactly_once({w.name: w.acked("v") for w in workers}, stored)
    assert not problems, problems
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Environment variable that fixes the seed of every fault test (to replay a failure).
SEED_ENV = "UNITRACK_FAULT_SEED"


def fault_seed() -> int:
    """The seed for this run: ``$UNITRACK_FAULT_SEED`` when set, else a fresh random one."""
    text = os.environ.get(SEED_ENV)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def _readable(fds: list[int], timeout_s: float) -> list[int]:
    """The descriptors among ``fds`` with data (or end of file) within ``timeout_s`` (poll: any fd number)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLHUP)
    return [fd for fd, _ in poller.poll(timeout_s * 1000)]


#: Workers forked and not yet reaped, so a failed test leaves none behind (see conftest.py).
LIVE: dict[int, Worker] = {}


class Ack:
    """The acknowledging end of a worker's pipe: ``ack(key, value)`` after each call that returned."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, key: str, value: Any = "") -> None:
        line = f"{key} {value}\n".encode()
        while line:
            line = line[os.write(self.fd, line) :]


class Gate:
    """Releases forked workers together: each ``wait()`` blocks until ``open(n)`` lets ``n`` of them through."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()

    def wait(self) -> None:
        """Block until the gate opens (in a worker)."""
        os.read(self._read, 1)

    def open(self, count: int) -> None:
        """Release ``count`` waiting workers at once (in the parent)."""
        os.write(self._write, b"x" * count)

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class Worker:
    """A forked worker: its pid, the read end of its acknowledgement pipe and what it acknowledged so far."""

    name: str
    pid: int
    fd: int
    lines: list[tuple[str, str]] = field(default_factory=list)
    status: int | None = None
    _buffer: bytes = b""

    def _read(self, timeout_s: float) -> bool:
        """Read what is in the pipe (waiting up to ``timeout_s``); False at end of file."""
        if self.fd < 0:
            return False
        if not _readable([self.fd], timeout_s):
            return True
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            os.close(self.fd)
            self.fd = -1
            return False
        data = self._buffer + chunk
        *complete, self._buffer = data.split(b"\n")
        for line in complete:
            key, _, value = line.decode().partition(" ")
            self.lines.append((key, value))
        return True

    def wait_for(self, predicate: Callable[[Worker], bool], timeout_s: float = 60.0, what: str = "") -> None:
        """Read acknowledgements until ``predicate(self)`` holds; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker {self.name} (pid {self.pid}): timed out waiting for {what}")
            if not self._read(min(left, 0.5)) and not predicate(self):
                raise AssertionError(
                    f"worker {self.name} (pid {self.pid}) ended before {what}; it acknowledged "
                    f"{len(self.lines)} lines (see its traceback on stderr)"
                )

    def wait_acks(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until the worker acknowledged ``count`` lines in all."""
        self.wait_for(lambda w: len(w.lines) >= count, timeout_s, f"{count} acknowledgements")

    def kill(self) -> None:
        """SIGKILL the worker, then collect every acknowledgement it made before dying."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.join(timeout_s=60, expect_success=False)

    def join(self, timeout_s: float = 120.0, *, expect_success: bool = True) -> int:
        """Read the pipe to its end and reap the worker; with ``expect_success`` fail unless it exited 0."""
        deadline = time.monotonic() + timeout_s
        while self._read(max(0.0, min(0.5, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                LIVE.pop(self.pid, None)
                self.status = -signal.SIGKILL
                raise AssertionError(f"worker {self.name} (pid {self.pid}) still running after {timeout_s} s")
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
            LIVE.pop(self.pid, None)
        if expect_success and self.status != 0:
            raise AssertionError(
                f"worker {self.name} exited with {self.status} (see its traceback on stderr)"
            )
        return self.status

    def acked(self, key: str) -> list[str]:
        """Every value acknowledged under ``key``, in order."""
        return [value for k, value in self.lines if k == key]

    def acked_ints(self, key: str) -> list[int]:
        return [int(value) for value in self.acked(key)]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the test process dies, so no worker outlives a run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the conftest reaper still runs
        pass


def fork_worker(
    name: str, target: Callable[..., None], *args: Any, gate: Gate | None = None, **kwargs: Any
) -> Worker:
    """Fork a worker that runs ``target(ack, *args, **kwargs)`` (after ``gate.wait()`` when given).

    The child leaves with ``os._exit`` (status 1 and a traceback on stderr when ``target`` raised), so no
    atexit handler or buffered output of the parent runs twice.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            LIVE.clear()
            _die_with_parent()
            os.close(read_fd)
            if gate is not None:
                gate.wait()
            target(Ack(write_fd), *args, **kwargs)
            code = 0
        except BaseException:  # noqa: BLE001 - report anything, then leave without running the parent's code
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_fd)
    worker = LIVE[pid] = Worker(name, pid, read_fd)
    return worker


def writers_beside_readers(
    write: Callable[..., None],
    poll: Callable[..., None],
    target: str,
    shared: str,
    counts: Sequence[int],
    stop: str,
    readers: int = 2,
) -> list[Worker]:
    """One writer per count (``write(ack, target, shared, name, count)``, own trial plus ``shared``) and
    ``readers`` pollers (``poll(ack, target, stop)``), released together; once the writers are done the pollers
    are stopped (``stop`` is created) and none may have acknowledged a ``problem``. Returns the writers."""
    gate = Gate()
    writers = [
        fork_worker(f"w{w}", write, target, shared, f"w{w}", count, gate=gate)
        for w, count in enumerate(counts)
    ]
    pollers = [fork_worker(f"r{r}", poll, target, stop, gate=gate) for r in range(readers)]
    gate.open(len(writers) + len(pollers))
    for worker in writers:
        worker.join(timeout_s=240)
    open(stop, "w").close()  # noqa: SIM115 - an empty file is the signal
    for poller in pollers:
        poller.join(timeout_s=60)
        assert poller.acked("problem") == [], poller.acked("problem")
    return writers


def reap_leftovers() -> None:
    """SIGKILL and reap every worker a test left running (a failed assertion before its join)."""
    for worker in list(LIVE.values()):
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.join(timeout_s=30, expect_success=False)
        if worker.fd >= 0:
            os.close(worker.fd)
            worker.fd = -1


def _kill_target(rng: random.Random, most: int) -> int:
    """How many acknowledgements to wait for before a kill: skewed to small numbers (opening, first writes)."""
    return rng.choice([0, 1, 2, rng.randrange(0, max(1, most // 8) + 1), rng.randrange(0, most + 1)])


def _spin(rng: random.Random) -> None:
    """Wait a random sub-millisecond moment, so a kill lands anywhere inside the call after an ack."""
    end = time.perf_counter() + rng.random() * 1e-3
    while time.perf_counter() < end:
        pass


def kill_after_random_acks(worker: Worker, rng: random.Random, most: int, timeout_s: float = 60.0) -> int:
    """SIGKILL ``worker`` once it acknowledged a random number of lines in ``[0, most]`` (skewed to small
    numbers) plus a random sub-millisecond moment; return how many it had acknowledged when killed."""
    worker.wait_acks(_kill_target(rng, most), timeout_s)
    _spin(rng)
    worker.kill()
    return len(worker.lines)


def kill_at_random_moments(
    start: Callable[[int], Worker],
    rng: random.Random,
    *,
    total: int = 200,
    concurrent: int = 4,
    most: int | Callable[[int], int] = 300,
    timeout_s: float = 120.0,
) -> list[Worker]:
    """Start ``total`` workers (``start(k)``), ``concurrent`` at a time, and SIGKILL each after its own random
    number of acknowledgements (see :func:`kill_after_random_acks`; ``most`` may depend on ``k``); return them,
    every acknowledgement read.

    Workers must keep writing until killed: one that ends first fails the test (its traceback is on stderr).
    """
    deadline = time.monotonic() + timeout_s
    killed: list[Worker] = []
    running: dict[int, tuple[Worker, int]] = {}
    started = 0
    while started < total or running:
        while started < total and len(running) < concurrent:
            worker = start(started)
            running[worker.fd] = (worker, _kill_target(rng, most(started) if callable(most) else most))
            started += 1
        for fd, (worker, target) in list(running.items()):
            if len(worker.lines) >= target:
                _spin(rng)
                worker.kill()
                killed.append(worker)
                del running[fd]
        if not running:
            continue
        if time.monotonic() > deadline:
            for worker, _ in running.values():
                worker.kill()
            raise AssertionError(f"workers still short of their kill moment after {timeout_s} s")
        for fd in _readable(list(running), 0.5):
            worker, target = running[fd]
            if not worker._read(0) and len(worker.lines) < target:
                worker.join(timeout_s=10, expect_success=False)
                raise AssertionError(
                    f"worker {worker.name} ended (status {worker.status}) after {len(worker.lines)} "
                    f"acknowledgements, before its kill at {target}; see its traceback on stderr"
                )
    return killed


def exactly_once(
    acked: Mapping[str, Iterable[int]], stored: Mapping[str, Sequence[Any]], *, in_flight: int = 1
) -> list[str]:
    """Problems with ``stored`` against what was acknowledged, per series (empty when everything holds).

    Every acknowledged value must be stored exactly once; nothing may be stored twice; and nothing may be
    stored that was never written: a series' writer writes ``0, 1, 2, ...`` in order, so beyond what it
    acknowledged only its next ``in_flight`` values (calls cut by a kill) may be present.
    """
    problems: list[str] = []
    for key in sorted(set(acked) | set(stored)):
        want = list(acked.get(key, ()))
        got = Counter(stored.get(key, ()))
        missing = [v for v in want if got[v] == 0]
        twice = sorted(v for v, n in got.items() if n > 1)
        limit = max(want, default=-1) + in_flight
        foreign = sorted(v for v in got if not (isinstance(v, (int, float)) and 0 <= v <= limit))
        if missing:
            problems.append(f"{key}: {len(missing)} acknowledged values missing, e.g. {missing[:5]}")
        if twice:
            problems.append(f"{key}: {len(twice)} values stored more than once, e.g. {twice[:5]}")
        if foreign:
            problems.append(f"{key}: values nobody wrote: {foreign[:5]}")
    return problems


def bit_flips(
    data: bytes, rng: random.Random | None = None, count: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(bit, damaged)`` for every single-bit flip of ``data`` (or ``count`` random ones with ``rng``)."""
    bits = len(data) * 8
    positions: Iterable[int] = (
        range(bits) if count is None or rng is None else rng.sample(range(bits), min(count, bits))
    )
    for bit in positions:
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        yield bit, bytes(damaged)


def flipped_in_place(
    path: str | os.PathLike[str], rng: random.Random | None = None, count: int | None = None
) -> Iterator[int]:
    """Flip each bit of the file at ``path`` in turn (or ``count`` random ones), yielding the bit number while
    the file holds the damage, and restore the byte after each (two one-byte writes per flip: renaming a new
    file each time costs milliseconds on a busy disk)."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        bits: Iterable[int] = (
            range(size * 8)
            if count is None or rng is None
            else rng.sample(range(size * 8), min(count, size * 8))
        )
        for bit in bits:
            original = os.pread(fd, 1, bit // 8)
            os.pwrite(fd, bytes([original[0] ^ (1 << (bit % 8))]), bit // 8)
            try:
                yield bit
            finally:
                os.pwrite(fd, original, bit // 8)
    finally:
        os.close(fd)


def flipped_copies(
    path: str | os.PathLike[str], rng: random.Random | None = None, count: int | None = None
) -> Iterator[int]:
    """As :func:`flipped_in_place`, but the whole original content is put back after each flip: for files the
    code under test may rewrite while it holds the damage (an index it rebuilds)."""
    with open(path, "rb") as fh:
        original = fh.read()
    try:
        for bit, damaged in bit_flips(original, rng, count):
            _overwrite(path, damaged)
            yield bit
    finally:
        replace_file(path, original)


def _overwrite(path: str | os.PathLike[str], data: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Put ``data`` in ``path`` as a new file (a new inode, as damage found on disk after a copy would be)."""
    tmp = f"{os.fspath(path)}.fault-tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
