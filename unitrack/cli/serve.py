"""``unitrack serve`` and ``unitrack user``: the remote server and the users who may log in to it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer


def _default_users() -> Path:
    home = os.environ.get("UNITRACK_HOME")
    return (Path(home) if home else Path.home() / ".unitrack") / "users.json"


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def add_commands(app: typer.Typer) -> None:
    """Register ``serve`` and the ``user`` group on ``app``."""

    @app.command("serve")
    def serve(
        backend: str = typer.Option(
            ..., "--backend", help="Backend URI to expose, e.g. file://runs/db.json."
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        port: int = typer.Option(
            8123, "--port", help="Port to bind (0 picks a free one; the real one is printed)."
        ),
        users: str = typer.Option(None, "--users", help="Users file (default $UNITRACK_HOME/users.json)."),
        tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate chain for TLS."),
        tls_key: str = typer.Option(None, "--tls-key", help="PEM private key for TLS."),
        tls_self_signed: str = typer.Option(
            None, "--tls-self-signed", help="Folder for a generated key and self-signed certificate (reused)."
        ),
        max_connections: int = typer.Option(
            256, "--max-connections", help="Logged-in connections at once; more logins are told to retry."
        ),
        max_unauthenticated: int = typer.Option(
            64,
            "--max-unauthenticated",
            help="Connections not logged in yet, a cap of their own (a new one replaces the oldest waiting).",
        ),
        login_timeout_s: float = typer.Option(
            10.0, "--login-timeout-s", help="Close a connection that has not logged in after this."
        ),
        idle_timeout_s: float = typer.Option(
            600.0, "--idle-timeout-s", help="Close logged-in connections idle for this long."
        ),
        read_timeout_s: float = typer.Option(
            30.0,
            "--read-timeout-s",
            help="A started frame (or a reply being read) must complete within this.",
        ),
        max_frame_bytes: int = typer.Option(
            8 * 1024 * 1024, "--max-frame-bytes", help="Largest frame after login."
        ),
        max_login_frame_bytes: int = typer.Option(
            16 * 1024, "--max-login-frame-bytes", help="Largest frame before login."
        ),
        backend_threads: int = typer.Option(
            4, "--backend-threads", help="Worker threads calling the backend."
        ),
        insecure: bool = typer.Option(False, "--insecure", help="Allow plaintext on a non-loopback address."),
        init_admin: bool = typer.Option(
            False,
            "--init-admin",
            help="With no users yet, create 'admin' with a random password, printed once.",
        ),
    ) -> None:
        """Serve a backend to socket:// clients (authenticated; TLS with a certificate or a pinned one)."""
        from unitrack.errors import ConfigError
        from unitrack.persistence.registry import get_protocol
        from unitrack.persistence.server import (
            certificate_fingerprint,
            generate_self_signed,
            server_ssl_context,
            start_track_server,
        )
        from unitrack.persistence.users import UserStore, generate_password

        store = UserStore(Path(users) if users else _default_users())
        if init_admin and not store.load():
            password = generate_password()
            store.add("admin", password, role="admin")
            typer.echo(f"created user 'admin' (role admin) with password: {password}")
            typer.echo("it is shown only now; change it with 'unitrack user passwd admin'")
        if tls_self_signed is not None and (tls_cert or tls_key):
            raise ConfigError("use either --tls-self-signed DIR or --tls-cert/--tls-key, not both")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        context = None
        fingerprint = None
        cert_path: str | None = tls_cert or None
        key_path: str | None = tls_key or None
        if tls_self_signed is not None:
            cert, key, fingerprint = generate_self_signed(tls_self_signed, (host,))
            cert_path, key_path = str(cert), str(key)
        if cert_path is not None and key_path is not None:
            context = server_ssl_context(cert_path, key_path)
            fingerprint = fingerprint or certificate_fingerprint(cert_path)
        protocol = get_protocol(backend)

        def listening(address: tuple[str, int]) -> None:
            typer.echo(f"listening on {address[0]}:{address[1]}")
            if fingerprint:
                typer.echo(f"TLS certificate sha256 fingerprint: {fingerprint}")
                typer.echo(f"clients: socket://USER@{address[0]}:{address[1]}?fingerprint={fingerprint}")
            sys.stdout.flush()

        try:
            start_track_server(
                protocol,
                host,
                port,
                users=store,
                ssl_context=context,
                on_listening=listening,
                insecure=insecure,
                max_connections=max_connections,
                max_unauthenticated=max_unauthenticated,
                login_timeout_s=login_timeout_s,
                idle_timeout_s=idle_timeout_s,
                read_timeout_s=read_timeout_s,
                max_frame_bytes=max_frame_bytes,
                max_login_frame_bytes=max_login_frame_bytes,
                backend_threads=backend_threads,
            )
        finally:
            protocol.close()

    user_app = typer.Typer(help="Manage the users of 'unitrack serve' (passwords are stored scrypt-hashed).")
    app.add_typer(user_app, name="user")

    users_option = typer.Option(None, "--users", help="Users file (default $UNITRACK_HOME/users.json).")

    @user_app.command("add")
    def user_add(
        name: str = typer.Argument(..., help="User name."),
        role: str = typer.Option("writer", "--role", help="reader, writer or admin."),
        users: str = users_option,
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    ) -> None:
        """Add a user (the password is prompted twice, or read from stdin)."""
        from unitrack.persistence.users import UserStore

        store = UserStore(Path(users) if users else _default_users())
        store.add(name, _read_password(password_stdin), role=role)
        typer.echo(f"added user {name!r} ({role}) to {store.path}")

    @user_app.command("passwd")
    def user_passwd(
        name: str = typer.Argument(..., help="User name."),
        users: str = users_option,
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    ) -> None:
        """Change a user's password."""
        from unitrack.persistence.users import UserStore

        store = UserStore(Path(users) if users else _default_users())
        store.set_password(name, _read_password(password_stdin))
        typer.echo(f"changed the password of {name!r}")

    @user_app.command("remove")
    def user_remove(name: str = typer.Argument(..., help="User name."), users: str = users_option) -> None:
        """Remove a user."""
        from unitrack.persistence.users import UserStore

        UserStore(Path(users) if users else _default_users()).remove(name)
        typer.echo(f"removed user {name!r}")

    @user_app.command("list")
    def user_list(users: str = users_option) -> None:
        """List users and their roles."""
        from unitrack.persistence.users import UserStore

        for name, role in UserStore(Path(users) if users else _default_users()).list():
            typer.echo(f"{name}\t{role}")
