"""``unitrack view``: a table of runs from a folder or any backend, read through the run catalog."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer

#: Display columns of view itself (never filter keys).
AGE = "age"


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeated options, each of which may hold comma-separated names."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        text = "; ".join(str(v) for v in value) or "-"
    else:
        text = str(value)
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(value: Any) -> Any:
    """A value for CSV and JSON: times as ISO text, NaN as empty."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _age_s(row: dict[str, Any], now: datetime) -> float | None:
    for key in ("ended", "last_seen", "started", "created"):
        when = row.get(key)
        if isinstance(when, datetime):
            return max((now - when).total_seconds(), 0.0)
    return None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _sort_key(column: str) -> Any:
    def by(row: dict[str, Any]) -> tuple[int, float, str]:
        value = row.get(column)
        if isinstance(value, bool):
            return (1, 0.0, str(value))
        if isinstance(value, (int, float)) and not math.isnan(value):
            return (0, float(value), "")
        if isinstance(value, datetime):
            return (0, value.timestamp(), "")
        return (1 if value not in (None, "", []) else 2, 0.0, str(value))

    return by


def _varying(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The columns whose values differ between rows (all of them when there is one row)."""
    if len(rows) <= 1:
        return list(columns)
    out = []
    for column in columns:
        first = repr(rows[0].get(column))
        if any(repr(r.get(column)) != first for r in rows[1:]):
            out.append(column)
    return out


def _labels(columns: Sequence[str], aliases: dict[str, str]) -> dict[str, str]:
    """The header of each column: the bare name of a parameter or metric when it names that column."""
    out = {}
    for column in columns:
        _, dot, bare = column.partition(".")
        out[column] = (
            bare
            if dot and column.split(".")[0] in ("parameters", "metrics") and aliases.get(bare) == column
            else column
        )
    return out


def _write(
    rows: list[dict[str, Any]],
    shown: list[str],
    labels: dict[str, str],
    csv_file: str | None,
    as_json: bool,
    footer: str | None = None,
) -> None:
    from unitrack.errors import ConfigError

    if csv_file:
        try:
            handle = open(csv_file, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"Cannot write {csv_file}: {exc.strerror or exc}.") from exc
        with handle:
            writer = csv.writer(handle)
            writer.writerow([labels.get(c, c) for c in shown])
            for row in rows:
                writer.writerow(["" if (v := _plain(row.get(c))) is None else v for c in shown])
        typer.echo(f"{len(rows)} run(s) written to {csv_file}")
        return
    if as_json:
        for row in rows:
            typer.echo(json.dumps({labels.get(c, c): _plain(row.get(c)) for c in shown}, default=str))
        return
    table = [[labels.get(c, c) for c in shown]] + [
        [_age(row.get(AGE)) if c == AGE else _cell(row.get(c)) for c in shown] for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    sys.stdout.write("\n".join(lines) + f"\n{footer or f'{len(rows)} run(s)'}\n")


def _grouped(
    rows: list[dict[str, Any]], columns: list[str], over: list[str], space: Any, raw: bool
) -> tuple[list[dict[str, Any]], list[str], dict[str, str]]:
    """Rows of ``--group-by``: the other parameters that vary, ``n``, each metric's mean ± std (as two numbers
    with ``raw``, for CSV and JSON)."""
    from unitrack.persistence.catalog import group_rows

    grouped = group_rows(rows, over, columns)
    dropped = {space.resolve(o, "group-by key") for o in over}
    params = [c for c in columns if c.startswith("parameters.") and c not in dropped]
    metrics = [c for c in columns if c.startswith("metrics.")]
    labels = _labels(columns, space.aliases)
    shown = [*_varying(grouped, params), "n"]
    for metric in metrics:
        if raw:
            shown += [metric, f"{metric}.std"]
            labels[f"{metric}.std"] = f"{labels[metric]}.std"
            continue
        for row in grouped:
            mean, std = row.get(metric), row.get(f"{metric}.std")
            text = "-" if mean is None else f"{mean:.6g}" + ("" if std is None else f" ± {std:.3g}")
            row[f"{metric} ±"] = text
        shown.append(f"{metric} ±")
        labels[f"{metric} ±"] = labels[metric]
    return grouped, shown, labels


def add_commands(app: typer.Typer) -> None:
    """Register ``view`` on ``app``."""

    @app.command("view")
    def view(
        target: str = typer.Argument(
            None, help="A folder of runs (default: $UNITRACK_URI, else runs) or a backend URI."
        ),
        filters: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None,
            "--filter",
            "-f",
            help="e.g. 'lr<0.1', '0<=depth<4', 'loss', 'status==error' (all must hold).",
        ),
        status: str = typer.Option(
            None, "--status", "-S", help="Only runs with these statuses, e.g. 'stopped,lost,error'."
        ),
        sort: str = typer.Option("name", "--sort", help="Column to sort by (a parameter, metric or field)."),
        descending: bool = typer.Option(False, "--desc", help="Sort in descending order."),
        columns: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None, "--columns", "-c", help="Columns to show (repeatable or comma-separated)."
        ),
        group_by: list[str] = typer.Option(  # noqa: B008 - typer reads it
            None,
            "--group-by",
            "-g",
            help="Aggregate over these parameters (e.g. seed): one row per combination of the others, each "
            "metric as mean ± std, n = runs.",
        ),
        csv_file: str = typer.Option(None, "--csv", help="Write the table to this CSV file."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    ) -> None:
        """Show a table of runs: name, status, parameters that differ, latest metrics, error, notes, age."""
        from unitrack.persistence.catalog import read_listing, select
        from unitrack.persistence.filters import KeySpace

        if target is None:
            import os

            target = os.environ.get("UNITRACK_URI") or "runs"
        listing = read_listing(target)
        all_columns = listing.columns()
        space = KeySpace(all_columns)
        rows = select(listing.rows, all_columns, filters=_split(filters) or None, status=status)
        over = _split(group_by)
        for name in over:
            space.resolve(name, "group-by key")
        sort_column = space.resolve(sort, "sort key", extra=(AGE,))
        requested = [
            space.resolve(c, "column", extra=(AGE, "n") if over else (AGE,)) for c in _split(columns)
        ]
        now = datetime.now()
        for row in rows:
            row[AGE] = _age_s(row, now)
        rows.sort(key=_sort_key(sort_column), reverse=descending)
        if over:
            raw = bool(csv_file or as_json)
            grouped, shown, labels = _grouped(rows, all_columns, over, space, raw)
            if requested:
                shown = [c for c in shown if c in requested or c == "n" or c.split(" ")[0] in requested]
            footer = f"{len(grouped)} group(s) of {len(rows)} run(s)"
            _write(grouped, shown, labels, csv_file, as_json, footer)
            return
        labels = _labels(all_columns, space.aliases)
        if requested:
            shown = requested
        else:
            params = [c for c in all_columns if c.startswith("parameters.")]
            metrics = [c for c in all_columns if c.startswith("metrics.") and any(c in r for r in rows)]
            named = []
            if filters:
                from unitrack.persistence.filters import compile_filters

                named = compile_filters(_split(filters)).bind(space, strict=False).columns
            shown = ["name", "status", *_varying(rows, params), *metrics]
            shown += [c for c in named if c not in shown]
            shown += [c for c in ("error", "notes") if any(r.get(c) for r in rows) and c not in shown]
            shown.append(AGE)
        _write(rows, shown, labels, csv_file, as_json)
