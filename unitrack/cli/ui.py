"""``unitrack ui``: the web view of any backend's runs (read-only)."""

from __future__ import annotations

import typer

TARGET_HELP = "A root folder of runs (read as hdf5://) or a backend URI; default $UNITRACK_URI, then ./runs."


def add_commands(app: typer.Typer) -> None:
    """Register ``ui`` on ``app``."""

    @app.command("ui")
    def ui(
        target: str = typer.Argument(None, help=TARGET_HELP, show_default=False),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Address to listen on. The page answers requests naming this address, localhost, and the "
            "names in $UNITRACK_UI_HOSTS (comma-separated; e.g. a proxy's name).",
        ),
        port: int = typer.Option(8080, "--port", help="Port (0 picks a free one; the URL is printed)."),
        open_browser: bool = typer.Option(False, "--open", help="Open the page in a web browser."),
        users: str = typer.Option(
            None,
            "--users",
            help="Users file of 'unitrack serve' whose users may log in (default for a non-loopback --host: "
            "$UNITRACK_HOME/users.json).",
        ),
        insecure: bool = typer.Option(
            False, "--insecure", help="Serve a non-loopback address without logins (trusted networks only)."
        ),
        tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate chain: serve HTTPS."),
        tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    ) -> None:
        """Serve a web view of the runs: table, charts, groups, sweeps, run pages (read-only)."""
        from unitrack.ui.serve import serve

        def ready(url: str) -> None:
            typer.echo(f"unitrack ui: serving {target or 'the default runs'} at {url}  (Ctrl-C stops)")
            if open_browser:
                import webbrowser

                webbrowser.open(url)

        serve(
            target,
            host,
            port,
            users_file=users,
            insecure=insecure,
            tls_cert=tls_cert,
            tls_key=tls_key,
            on_ready=ready,
        )
