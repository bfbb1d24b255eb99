"""Issue #13, clients: failed logins of one user do not lock out a colleague; what retrying cannot heal fails at
once, naming the cause and the fix; what may heal is retried quietly."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.server.conftest import PASSWORDS, Served
from unitrack.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLostError,
    ProtocolMismatchError,
)
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.wire import ErrorReply, Login, Reply, recv_frame, send_frame


# ------------------------------------------------------------------------------------ 7. login throttle
def _login_s(port: int, user: str, password: str) -> tuple[float, str]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        send_frame(sock, Login(user=user, password=password, id=1))
        reply = recv_frame(sock)
    return time.monotonic() - started, type(reply).__name__


def test_guesses_at_one_users_password_do_not_delay_a_colleague_on_the_same_host(
    serve: Callable[..., Served],
) -> None:
    served = serve("ephemeral://")
    for _ in range(7):  # the old throttle, keyed by host alone, then held every login from 127.0.0.1 for 4 s
        assert _login_s(served.port, "ada", "wrong-guess")[1] == "ErrorReply"
    took, answer = _login_s(served.port, "bob", PASSWORDS["bob"])
    assert answer == "Reply"
    assert took < 2.0, f"bob's correct login waited {took:.1f} s for guesses at ada's password"
    with SocketProtocol(served.uri("bob")) as bob:
        assert bob.role == "writer"


# ------------------------------------------------------------------------------------ 8. fail fast
def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_plaintext_uri_to_a_tls_server_fails_at_once_naming_the_fingerprint(
    serve: Callable[..., Served], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve("ephemeral://", "--tls-self-signed", str(tmp_path / "tls"))
    assert served.fingerprint
    started = time.monotonic()
    with pytest.raises(ProtocolMismatchError, match=f"uses TLS.*fingerprint={served.fingerprint}"):
        SocketProtocol(served.uri("ada", "?retry_timeout_s=20&connect_timeout_s=20"))
    assert time.monotonic() - started < 15  # not the retry budget
    assert _warnings(caplog) == []
    with SocketProtocol(
        served.uri("ada", f"?fingerprint={served.fingerprint}")
    ) as fixed:  # the named fix works
        assert fixed.ping() >= 0


def test_a_tls_uri_to_a_plaintext_server_fails_at_once(serve: Callable[..., Served]) -> None:
    served = serve("ephemeral://")
    with pytest.raises(ProtocolMismatchError, match="does not speak TLS.*Drop \\?fingerprint"):
        SocketProtocol(served.uri("ada", "?fingerprint=" + "ab" * 32 + "&connect_timeout_s=20"))


def test_a_wrong_port_fails_within_the_connect_timeout_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        with pytest.raises(ConnectionLostError, match="nothing accepts connections .*check the port"):
            SocketProtocol(f"socket://ada:{PASSWORDS['ada']}@127.0.0.1:{port}?connect_timeout_s=1")
        assert time.monotonic() - started < 10
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "retrying quietly" in warnings[0], warnings


def test_an_unknown_host_fails_at_once() -> None:
    with pytest.raises(ConfigError, match="Cannot resolve the host 'no-such-host.invalid'.*check the host"):
        SocketProtocol(
            f"socket://ada:{PASSWORDS['ada']}@no-such-host.invalid:1?insecure=true&connect_timeout_s=30"
        )


def test_refused_credentials_fail_at_once(serve: Callable[..., Served]) -> None:
    served = serve("ephemeral://")
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match="unknown user or wrong password"):
        SocketProtocol(f"socket://ada:not-her-password@127.0.0.1:{served.port}?connect_timeout_s=30")
    assert time.monotonic() - started < 15


def test_another_protocol_version_fails_at_once_naming_the_fix(serve: Callable[..., Served]) -> None:
    served = serve("ephemeral://")
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        send_frame(sock, Login(user="ada", password=PASSWORDS["ada"], id=1, version=99))
        reply = recv_frame(sock)
        assert isinstance(reply, ErrorReply) and reply.error == "ProtocolMismatchError"
        assert "same unitrack version" in reply.message
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:  # version 1 still served
        send_frame(sock, Login(user="ada", password=PASSWORDS["ada"], id=1, version=1))
        assert isinstance(recv_frame(sock), Reply)


def test_a_server_restart_is_retried_quietly_with_one_warning(
    serve: Callable[..., Served], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = f"file://{tmp_path}/db.json"
    served = serve(backend)
    client = SocketProtocol(served.uri("ada", "?retry_timeout_s=60"))
    try:
        assert client.ping() >= 0
        served.stop()
        again = serve(backend, "--port", str(served.port))
        assert client.ping() >= 0  # reconnected by itself
        assert again.alive()
    finally:
        client.close()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "retrying quietly" in warnings[0], warnings
