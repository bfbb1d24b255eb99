"""A well-behaved client for the denial-of-service tests: logs in, then pings the server every few
milliseconds until told to stop, and reports the round-trip times.

Usage: python -m tests.server._pinger PORT USER PASSWORD [INTERVAL_S]

Prints ``ready`` once logged in. Each line on stdin (``mark``) starts a new series; EOF or ``stop`` ends. Prints
one JSON object per series: ``{"count", "p50_ms", "p99_ms", "max_ms", "errors"}``. A ping that gets no answer
within 30 s counts as 30 s and an error. Started with a raised priority by the tests (when they may), so what
it measures is the server, not the machine's other work.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import threading
import time

from unitrack.persistence.wire import Login, Ping, Pong, Reply, recv_frame, send_frame


def _connect(port: int, user: str, password: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_frame(sock, Login(user=user, password=password, id=0))
    reply = recv_frame(sock)
    if not isinstance(reply, Reply):
        raise SystemExit(f"login failed: {reply}")
    return sock


def _report(samples: list[float], errors: int) -> str:
    if len(samples) < 2:
        return json.dumps({"count": len(samples), "p50_ms": 0, "p99_ms": 0, "max_ms": 0, "errors": errors})
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return json.dumps(
        {
            "count": len(samples),
            "p50_ms": round(q[49] * 1e3, 2),
            "p99_ms": round(q[98] * 1e3, 2),
            "max_ms": round(max(samples) * 1e3, 2),
            "errors": errors,
        }
    )


def main() -> None:
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.005
    sock = _connect(port, user, password)
    commands: list[str] = []
    arrived = threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.append(line.strip())
            arrived.set()
        commands.append("stop")
        arrived.set()

    threading.Thread(target=read_commands, daemon=True).start()
    print("ready", flush=True)
    samples: list[float] = []
    errors = 0
    ident = 0
    while True:
        while commands:
            command = commands.pop(0)
            print(_report(samples, errors), flush=True)
            samples, errors = [], 0
            if command == "stop":
                return
        ident += 1
        t0 = time.perf_counter()
        try:
            send_frame(sock, Ping(id=ident))
            ok = recv_frame(sock) == Pong(id=ident)
        except OSError:
            ok = False
            sock.close()
            sock = _connect(port, user, password)
        samples.append(time.perf_counter() - t0)
        errors += not ok
        arrived.clear()
        if not commands:
            arrived.wait(interval)


if __name__ == "__main__":
    main()
