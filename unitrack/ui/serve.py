"""Serving the web view: the bind policy (loopback, or a users file, or ``--insecure``) and uvicorn."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from unitrack.errors import ConfigError
from unitrack.persistence.wire import is_loopback
from unitrack.ui.app import bind_hosts, create_app
from unitrack.ui.data import Source

__all__ = ["bind", "serve"]

logger = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one).

    Raises:
        ConfigError: when the address cannot be bound (in use, not an address of this machine).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Try another --port."
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    target: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    users_file: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the runs at ``target`` until interrupted.

    A loopback address needs nothing. Any other address needs a users file (every request then logs in as
    one of its users, any role) or ``insecure=True`` (anyone who reaches the port reads every run).

    Args:
        target: A root folder of runs or a backend URI.
        host, port: Where to listen (port 0: a free port).
        users_file: The users file of ``unitrack serve`` (default ``$UNITRACK_HOME/users.json``, used for a
            non-loopback address).
        insecure: Serve a non-loopback address without logins.
        tls_cert, tls_key: Serve HTTPS with this certificate chain and key.
        on_ready: Called with the URL once the socket listens (the CLI prints it).

    Raises:
        ConfigError: for a non-loopback address without users or ``insecure``, or a users file with no users.
    """
    import uvicorn

    from unitrack.persistence.users import UserStore

    users = None
    if users_file is not None or not (is_loopback(host) or insecure):
        if users_file is None:
            home = os.environ.get("UNITRACK_HOME")
            users_file = (Path(home) if home else Path.home() / ".unitrack") / "users.json"
        users = UserStore(Path(users_file))
        if not users.load():
            raise ConfigError(
                f"Serving {host} needs logins, and {users_file} has no users: add one with "
                f"'unitrack user add NAME --users {users_file} --role reader', or pass --insecure on a trusted "
                "network, or serve 127.0.0.1."
            )
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("Give both --tls-cert and --tls-key, or neither.")
    if users is not None and not tls_cert and not is_loopback(host):
        logger.warning(
            "passwords cross the network in clear on %s; give --tls-cert/--tls-key for HTTPS", host
        )
    source = Source(target)
    try:
        app = create_app(source, hosts=bind_hosts(host), users=users)
        sock = bind(host, port)
        real_port = sock.getsockname()[1]
        scheme = "https" if tls_cert else "http"
        shown = f"[{host}]" if ":" in host else host
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(f"{scheme}://{shown}:{real_port}/")
        server.run(sockets=[sock])
    finally:
        source.close()
