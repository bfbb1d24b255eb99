"""``unitrack backends`` and ``unitrack dump``: what backends exist, and everything one of them holds."""

from __future__ import annotations

import json

import typer


def add_commands(app: typer.Typer) -> None:
    """Register this module's commands on ``app``."""

    @app.command("backends")
    def backends() -> None:
        """List the backend URI schemes this installation knows."""
        from unitrack.persistence.registry import known_schemes

        for scheme, backend in sorted(known_schemes().items()):
            extra = f" (extra: {backend.extra})" if backend.extra else ""
            typer.echo(f"{scheme}://\t{backend.description}{extra}")

    @app.command("dump")
    def dump(
        uri: str = typer.Argument(..., help="Backend URI, e.g. file://runs/unitrack.json or hdf5://runs."),
        query: str = typer.Option(
            None, "--query", help='JSON query for trials, e.g. \'{"parameters.lr": {"$lt": 0.1}}\'.'
        ),
        short: bool = typer.Option(False, "--short", help="Leave out ids and bookkeeping."),
    ) -> None:
        """Print the projects, groups and trials a backend holds, as JSON."""
        from unitrack.errors import InvalidQueryError
        from unitrack.persistence.registry import get_protocol
        from unitrack.persistence.serialization import to_json

        try:
            trial_query = json.loads(query) if query else None
        except ValueError as exc:
            raise InvalidQueryError(repr(query), f"not valid JSON: {exc}") from exc
        with get_protocol(uri) as protocol:
            data = {
                "projects": [to_json(p) for p in protocol.fetch_projects(None)],
                "groups": [to_json(g) for g in protocol.fetch_groups(None)],
                "trials": [to_json(t, short=short) for t in protocol.fetch_trials(trial_query)],
            }
        typer.echo(json.dumps(data, indent=2, default=str))
