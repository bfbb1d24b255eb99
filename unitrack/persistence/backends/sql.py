"""``postgresql://`` (aliases ``postgres``, ``cockroachdb``, ``cockroach``): many machines, one database.

``postgresql://user:password@host:port/db?schema=name`` opens a small connection pool (psycopg 3 and
psycopg_pool, the ``postgres`` extra). The backend creates and migrates its own tables (version in
``unitrack_schema_version``), in ``schema`` when given (default: the server's ``search_path``).

Storage: projects, groups and trials are rows; parameters, metadata and tags are JSONB (so queries on them run
in the database); chronos are JSON text (an aggregate may hold ``inf``, which JSONB cannot); status is kept as
name, value and the lower-case name queries compare with. Metric points live in their own table, one row per
point, with a unique index on ``(trial, name, step)`` for points with a step (a point at an existing step
replaces its value), and ``metric_latest`` holds each series' latest value. Values are stored as double
precision plus, for ints, an exact ``numeric``, so every value round-trips exactly. ``unitrack_writers`` holds
the last ``seq`` applied per ``(trial, writer)``, checked in the same transaction as the write it guards.

Writes are batched by default, as ``socket://`` does (:mod:`unitrack.persistence.batching`): updates that only log
(metric points, timings, metadata) to a trial this object knows are buffered and written by a background thread
every ``batch_size`` updates (default 1000) or ``flush_interval_s`` (default 0.1), one transaction per batch,
each trial's part stamped ``(writer, seq)`` so writing it again applies it once. A value is **acknowledged** once
``flush()``, ``commit()`` or ``close()`` returns after it was logged: it is then in the database. A process
killed before flushing loses what it logged since (never acknowledged). ``?batch_size=1`` writes every call
before it returns (per-call durability, one transaction per call). Reads flush first, so they see every write.

A lost connection (a restart, a failover) is retried transparently for up to ``retry_timeout_s`` (default 60):
the broken connection is dropped from the pool, and work that is safe to repeat (reads, stamped writes, inserts,
metadata merges) runs again on a new one; ``find_and_update_*`` run again only when the database cannot have
applied them (the loss came before the commit). Past the time, or when the outcome is unknown, a
:class:`StorageError` says so.

Every statement is a constant string with bound parameters: no SQL text is ever built from a name or a value.
Query conditions the database can decide exactly become WHERE clauses; the rest are checked in Python with
:func:`unitrack.persistence.query.compile_query`, so results are those of the in-memory backends.

Example:
    >>> from unitrack.persistence.registry import get_protocol
    >>> p = get_protocol("postgresql://unitrack@localhost/unitrack")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from unitrack.errors import ConfigError, NotFoundError, SchemaError, StorageError
from unitrack.persistence.aggregators import aggregator_from_json
from unitrack.persistence.batching import BufferedProtocol, UpdateBuffer
from unitrack.persistence.query import Condition, Query, compile_query, normalize_query
from unitrack.persistence.series import Series, SeriesRequest, downsample
from unitrack.persistence.structure import (
    GroupUpdate,
    Metric,
    MetricPoint,
    Project,
    StatusLike,
    Trial,
    TrialGroup,
    TrialUpdate,
    check_metric_name,
    check_number,
    status_from_json,
)
from unitrack.persistence.uri import ParsedURI, as_uri

__all__ = ["SCHEMA_VERSION", "SQLProtocol"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Version of the tables this module writes (``unitrack_schema_version``).
SCHEMA_VERSION = 2

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: A JSON path part that ``#>`` would read as an array index (our queries never index lists).
_INDEX_LIKE = re.compile(r"-?[0-9]+")
#: Arbitrary constant for the advisory lock that serializes schema creation across processes.
_MIGRATION_LOCK = 7_202_611_001

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE unitrack_projects (
            uid text PRIMARY KEY, name text, description text, metadata jsonb NOT NULL,
            ord bigserial NOT NULL)""",
        """CREATE TABLE unitrack_groups (
            uid text PRIMARY KEY, name text, description text, project_id text, metadata jsonb NOT NULL,
            ord bigserial NOT NULL)""",
        """CREATE TABLE unitrack_trials (
            uid text PRIMARY KEY, hash text NOT NULL, revision integer NOT NULL, name text, description text,
            version text, group_id text, project_id text, tags jsonb NOT NULL, parameters jsonb NOT NULL,
            metadata jsonb NOT NULL, chronos text NOT NULL, status_name text NOT NULL,
            status_value integer NOT NULL, status_key text NOT NULL, errors jsonb NOT NULL,
            ord bigserial NOT NULL, UNIQUE (hash, revision))""",
        "CREATE INDEX unitrack_trials_ord ON unitrack_trials (ord)",
        """CREATE TABLE unitrack_metric_points (
            seq bigserial PRIMARY KEY, trial_uid text NOT NULL, name text NOT NULL, step double precision,
            step_is_int boolean NOT NULL, value double precision NOT NULL, value_int numeric)""",
        """CREATE UNIQUE INDEX unitrack_metric_points_step ON unitrack_metric_points (trial_uid, name, step)
            WHERE step IS NOT NULL""",
        "CREATE INDEX unitrack_metric_points_trial ON unitrack_metric_points (trial_uid, seq)",
        """CREATE TABLE unitrack_metric_latest (
            trial_uid text NOT NULL, name text NOT NULL, value double precision, value_int numeric,
            first_seq bigint NOT NULL, PRIMARY KEY (trial_uid, name))""",
        """CREATE TABLE unitrack_writers (
            trial_uid text NOT NULL, writer text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (trial_uid, writer))""",
    ),
    # 2: each series counts the points logged to it (Metric.logged: summaries tell a changed series without
    # reading it); one index on the points instead of two (a bulk copy maintains half as much). The unique
    # index now covers step-less points too (NULL steps never conflict), so reading a trial's points in order
    # uses it; ON CONFLICT (trial_uid, name, step) WHERE step IS NOT NULL still infers it.
    (
        "ALTER TABLE unitrack_metric_latest ADD COLUMN logged bigint NOT NULL DEFAULT 0",
        """UPDATE unitrack_metric_latest l SET logged = c.n FROM (
            SELECT trial_uid, name, count(*) AS n FROM unitrack_metric_points GROUP BY trial_uid, name) c
            WHERE l.trial_uid = c.trial_uid AND l.name = c.name""",
        "CREATE UNIQUE INDEX unitrack_metric_points_key ON unitrack_metric_points (trial_uid, name, step)",
        "DROP INDEX unitrack_metric_points_step",
        "DROP INDEX unitrack_metric_points_trial",
    ),
)

_SELECT_TRIALS = sql.SQL(
    "SELECT uid, hash, revision, name, description, version, group_id, project_id, tags, parameters, "
    "metadata, chronos, status_name, status_value, errors FROM unitrack_trials "
    "WHERE {where} ORDER BY ord{lock}"
)
_TAKE_TRIAL = sql.SQL(
    "SELECT uid, chronos FROM unitrack_trials WHERE {where} ORDER BY ord LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_BY_UID = sql.SQL("uid = %s")
_NO_LOCK = sql.SQL("")
_LOCK = sql.SQL(" FOR UPDATE SKIP LOCKED")
# find_series: the points of chosen metrics of chosen trials in a step range, downsampled in the database with
# the rules of unitrack.persistence.series (x = step, or the position in the series for a point without one;
# equal-count buckets, each keeping its first smallest and first largest value, NaN counting as +inf for the
# smallest and -inf for the largest; the first and last points always kept).
_SERIES = """
WITH pts AS (
    SELECT trial_uid, name, seq, step, step_is_int, value, value_int,
           row_number() OVER (PARTITION BY trial_uid, name ORDER BY seq) - 1 AS pos
    FROM unitrack_metric_points WHERE trial_uid = ANY(%(uids)s::text[]) AND name = ANY(%(metrics)s::text[])
), ranged AS (
    SELECT *, COALESCE(step, pos) AS x FROM pts
    WHERE (%(lo)s::float8 IS NULL OR COALESCE(step, pos) >= %(lo)s::float8)
      AND (%(hi)s::float8 IS NULL OR COALESCE(step, pos) <= %(hi)s::float8)
), numbered AS (
    SELECT *, row_number() OVER (PARTITION BY trial_uid, name ORDER BY x, seq) - 1 AS i,
           count(*) OVER (PARTITION BY trial_uid, name) AS n
    FROM ranged
), ranked AS (
    SELECT *,
        row_number() OVER (PARTITION BY trial_uid, name, (i * %(buckets)s) / n
                           ORDER BY CASE WHEN value = 'NaN' THEN 'Infinity'::float8 ELSE value END, i) AS rmin,
        row_number() OVER (PARTITION BY trial_uid, name, (i * %(buckets)s) / n
                           ORDER BY CASE WHEN value = 'NaN' THEN '-Infinity'::float8 ELSE value END DESC, i) AS rmax
    FROM numbered
)
SELECT trial_uid, name, step, step_is_int, value, value_int, pos, n FROM ranked
WHERE %(every)s OR n <= %(max_points)s OR i = 0 OR i = n - 1 OR rmin = 1 OR rmax = 1
ORDER BY trial_uid, name, i
"""
_INSERT_TRIAL = (
    "INSERT INTO unitrack_trials (uid, hash, revision, name, description, version, group_id, project_id, tags, "
    "parameters, metadata, chronos, status_name, status_value, status_key, errors) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING uid"
)
_INSERT_POINTS = (
    "INSERT INTO unitrack_metric_points (trial_uid, name, step, step_is_int, value, value_int) "
    "SELECT %s, p.name, p.step, p.step_is_int, p.value, p.value_int "
    "FROM unnest(%s::text[], %s::float8[], %s::bool[], %s::float8[], %s::numeric[]) WITH ORDINALITY "
    "AS p(name, step, step_is_int, value, value_int, i) ORDER BY p.i "
    "ON CONFLICT (trial_uid, name, step) WHERE step IS NOT NULL "
    "DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int"
)
_UPSERT_LATEST = (
    "INSERT INTO unitrack_metric_latest (trial_uid, name, value, value_int, first_seq, logged) "
    "SELECT %s, l.name, l.value, l.value_int, nextval('unitrack_metric_points_seq_seq'), l.logged "
    "FROM unnest(%s::text[], %s::float8[], %s::numeric[], %s::int8[]) AS l(name, value, value_int, logged) "
    "ON CONFLICT (trial_uid, name) DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int, "
    "logged = unitrack_metric_latest.logged + EXCLUDED.logged"
)
# Points only (the common case), in one statement: lock the trial, append points, set the latest values. No
# row comes back when the trial does not exist, and then nothing was written.
_APPEND_POINTS = (
    "WITH t AS (SELECT uid FROM unitrack_trials WHERE uid = %s FOR UPDATE), "
    "p AS (INSERT INTO unitrack_metric_points (trial_uid, name, step, step_is_int, value, value_int) "
    "SELECT t.uid, p.name, p.step, p.step_is_int, p.value, p.value_int FROM t, "
    "unnest(%s::text[], %s::float8[], %s::bool[], %s::float8[], %s::numeric[]) WITH ORDINALITY "
    "AS p(name, step, step_is_int, value, value_int, i) ORDER BY p.i "
    "ON CONFLICT (trial_uid, name, step) WHERE step IS NOT NULL "
    "DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int RETURNING 1), "
    "l AS (INSERT INTO unitrack_metric_latest (trial_uid, name, value, value_int, first_seq, logged) "
    "SELECT t.uid, l.name, l.value, l.value_int, nextval('unitrack_metric_points_seq_seq'), l.logged "
    "FROM t, unnest(%s::text[], %s::float8[], %s::numeric[], %s::int8[]) AS l(name, value, value_int, logged) "
    "ON CONFLICT (trial_uid, name) DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int, "
    "logged = unitrack_metric_latest.logged + EXCLUDED.logged RETURNING 1) "
    "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM p), (SELECT count(*) FROM l)"
)
# Points of a stamped update (a batch's usual content), in one statement: lock the trial, record the stamp, and
# only when it is new append the points and set the latest values. Returns (trial found, stamp new).
_APPEND_STAMPED = (
    "WITH t AS (SELECT uid FROM unitrack_trials WHERE uid = %s FOR UPDATE), "
    "w AS (INSERT INTO unitrack_writers (trial_uid, writer, seq) SELECT t.uid, %s, %s FROM t "
    "ON CONFLICT (trial_uid, writer) DO UPDATE SET seq = EXCLUDED.seq WHERE unitrack_writers.seq < EXCLUDED.seq "
    "RETURNING trial_uid), "
    "p AS (INSERT INTO unitrack_metric_points (trial_uid, name, step, step_is_int, value, value_int) "
    "SELECT w.trial_uid, p.name, p.step, p.step_is_int, p.value, p.value_int FROM w, "
    "unnest(%s::text[], %s::float8[], %s::bool[], %s::float8[], %s::numeric[]) WITH ORDINALITY "
    "AS p(name, step, step_is_int, value, value_int, i) ORDER BY p.i "
    "ON CONFLICT (trial_uid, name, step) WHERE step IS NOT NULL "
    "DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int RETURNING 1), "
    "l AS (INSERT INTO unitrack_metric_latest (trial_uid, name, value, value_int, first_seq, logged) "
    "SELECT w.trial_uid, l.name, l.value, l.value_int, nextval('unitrack_metric_points_seq_seq'), l.logged "
    "FROM w, unnest(%s::text[], %s::float8[], %s::numeric[], %s::int8[]) AS l(name, value, value_int, logged) "
    "ON CONFLICT (trial_uid, name) DO UPDATE SET value = EXCLUDED.value, value_int = EXCLUDED.value_int, "
    "logged = unitrack_metric_latest.logged + EXCLUDED.logged RETURNING 1) "
    "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM w), (SELECT count(*) FROM p), (SELECT count(*) FROM l)"
)
# insert_trials: a batch of new trials' points, then their latest values, in the transaction that inserts them.
_COPY_POINTS = (
    "COPY unitrack_metric_points (trial_uid, name, step, step_is_int, value, value_int) FROM STDIN "
    "(FORMAT BINARY)"
)
_INSERT_LATEST_MANY = (
    "INSERT INTO unitrack_metric_latest (trial_uid, name, value, value_int, first_seq, logged) "
    "SELECT l.uid, l.name, l.value, l.value_int, nextval('unitrack_metric_points_seq_seq'), l.logged "
    "FROM unnest(%s::text[], %s::text[], %s::float8[], %s::numeric[], %s::int8[]) WITH ORDINALITY "
    "AS l(uid, name, value, value_int, logged, i) ORDER BY l.i ON CONFLICT (trial_uid, name) DO NOTHING"
)
_UPDATE_TRIAL = (
    "UPDATE unitrack_trials SET parameters = parameters || %s, metadata = metadata || %s, tags = tags || %s, "
    "errors = errors || %s, status_name = COALESCE(%s, status_name), "
    "status_value = COALESCE(%s, status_value), status_key = COALESCE(%s, status_key), "
    "project_id = COALESCE(%s, project_id), group_id = COALESCE(%s, group_id), "
    "description = COALESCE(%s, description), chronos = COALESCE(%s, chronos) WHERE uid = %s"
)

# Query push-down: for each JSONB field, the expression reading a path (bound as text[]) out of it.
_JSON_FIELDS = {
    "parameters": "(parameters #> %s::text[])",
    "metadata": "(metadata #> %s::text[])",
    "tags": "(tags #> %s::text[])",
}
_TEXT_COLUMNS = {
    "uid": "uid",
    "hash": "hash",
    "name": "name",
    "description": "description",
    "version": "version",
    "project_id": "project_id",
    "group_id": "group_id",
}
_ORDER_OPS = {"$gt": " > ", "$gte": " >= ", "$lt": " < ", "$lte": " <= "}


def _numeric_text(x: int | float) -> str:
    """A number as numeric literal text (a bound value, never SQL): floats by their shortest repr."""
    if isinstance(x, float) and math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


_Clause = tuple[str, list[Any], bool]  # SQL (constant fragments only), its parameters, whether it is exact


def _text_clause(column: str, cond: Condition) -> _Clause | None:
    """A condition on a text column; None when it is left to Python."""
    op, operand = cond.op, cond.operand
    if op == "$exists":  # a column is always there
        return ("TRUE" if operand else "FALSE", [], True)
    if op in ("$eq", "$ne"):
        if isinstance(operand, str):
            sql_text = column + " = %s" if op == "$eq" else column + " IS DISTINCT FROM %s"
            return (sql_text, [operand], True)
        if operand is None:
            return (column + (" IS NULL" if op == "$eq" else " IS NOT NULL"), [], True)
        if isinstance(operand, (bool, int, float)):  # a str or None never equals a number or a bool
            return ("FALSE" if op == "$eq" else "TRUE", [], True)
        return None
    if op in ("$in", "$nin"):
        if not all(isinstance(x, str) for x in operand):
            return None
        if op == "$in":
            return ("COALESCE(" + column + " = ANY(%s::text[]), FALSE)", [list(operand)], True)
        return ("NOT COALESCE(" + column + " = ANY(%s::text[]), FALSE)", [list(operand)], True)
    if op in _ORDER_OPS:
        if isinstance(operand, str):  # Python compares code points: so does the C collation
            return ("(" + column + ' COLLATE "C")' + _ORDER_OPS[op] + '(%s COLLATE "C")', [operand], True)
        return ("FALSE", [], True)
    return None


def _status_clause(cond: Condition) -> _Clause | None:
    op, operand = cond.op, cond.operand
    if op == "$eq" and isinstance(operand, str):
        return ("status_key = %s", [operand.lower()], True)
    if op == "$ne" and isinstance(operand, str):
        return ("status_key <> %s", [operand.lower()], True)
    if op in ("$in", "$nin") and all(isinstance(x, str) for x in operand):
        keys = [x.lower() for x in operand]
        return (
            "status_key = ANY(%s::text[])" if op == "$in" else "NOT status_key = ANY(%s::text[])",
            [keys],
            True,
        )
    if op == "$exists":
        return ("TRUE" if operand else "FALSE", [], True)
    return None


def _json_clause(expr: str, path: list[str], cond: Condition) -> _Clause | None:
    """A condition on a value inside a JSONB field. Equality is only a pre-filter (inexact), because Python
    also matches a list holding the value; ordering and ``$exists`` are exact."""
    op, operand = cond.op, cond.operand
    if op == "$exists":
        return (expr + (" IS NOT NULL" if operand else " IS NULL"), [path], True)
    if op in _ORDER_OPS:
        if _is_number(operand):
            if isinstance(operand, float) and math.isnan(operand):
                return ("FALSE", [], True)  # every comparison with NaN is false
            # CASE, not AND: PostgreSQL may evaluate AND's operands in any order, and the cast fails on a
            # non-number.
            sql_text = (
                "(CASE WHEN jsonb_typeof("
                + expr
                + ") = 'number' THEN ("
                + expr
                + ")::numeric"
                + _ORDER_OPS[op]
                + "%s::numeric ELSE FALSE END)"
            )
            return (sql_text, [path, path, _numeric_text(operand)], True)
        if isinstance(operand, str):
            sql_text = (
                "(CASE WHEN jsonb_typeof("
                + expr
                + ") = 'string' THEN (("
                + expr
                + " #>> '{}') COLLATE \"C\")"
                + _ORDER_OPS[op]
                + '(%s COLLATE "C") ELSE FALSE END)'
            )
            return (sql_text, [path, path, operand], True)
        return ("FALSE", [], True)
    scalars = (operand,) if op in ("$eq", "$ne") else operand if op in ("$in", "$nin") else None
    if scalars is None or not all(x is None or isinstance(x, (str, bool, int, float)) for x in scalars):
        return None
    if any(isinstance(x, float) and not math.isfinite(x) for x in scalars):
        return None  # JSONB holds no NaN or infinity; leave such operands to Python
    if op in ("$eq", "$in"):
        # A row can only match when the value equals one operand, or is a list (checked in Python).
        parts = ["jsonb_typeof(" + expr + ") = 'array'"]
        params: list[Any] = [path]
        for x in scalars:
            if x is None:
                parts.append(expr + " IS NULL")
                parts.append(expr + " = 'null'::jsonb")
                params += [path, path]
            else:
                parts.append(expr + " = %s::jsonb")
                params += [path, _jsonb("query operand", x)]
        return ("COALESCE(" + " OR ".join(parts) + ", FALSE)", params, False)
    # $ne / $nin: a value equal to an operand never matches (a missing value is None).
    parts = []
    params = []
    for x in scalars:
        if x is None:
            parts.append(expr + " IS NOT NULL AND " + expr + " <> 'null'::jsonb")
            params += [path, path]
        else:
            parts.append("NOT COALESCE(" + expr + " = %s::jsonb, FALSE)")
            params += [path, _jsonb("query operand", x)]
    return ("(" + " AND ".join(parts) + ")", params, False)


def _trial_clause(cond: Condition) -> _Clause | None:
    head, rest = cond.path[0], list(cond.path[1:])
    if head in _TEXT_COLUMNS and not rest:
        return _text_clause(_TEXT_COLUMNS[head], cond)
    if head == "status" and not rest:
        return _status_clause(cond)
    if head in _JSON_FIELDS and rest and not any(_INDEX_LIKE.fullmatch(p) for p in rest):
        return _json_clause(_JSON_FIELDS[head], rest, cond)
    return None


def _plan(query: Query) -> tuple[sql.Composable, list[Any], list[Condition]]:
    """Split a query into a WHERE clause, its parameters, and the conditions Python must still check."""
    clauses: list[str] = []
    params: list[Any] = []
    remaining: list[Condition] = []
    for cond in normalize_query(query):
        clause = _trial_clause(cond)
        if clause is None:
            remaining.append(cond)
            continue
        text, values, exact = clause
        clauses.append(text)
        params += values
        if not exact:
            remaining.append(cond)
    # Every clause is made of this module's constant fragments; values travel in ``params`` only.
    where = sql.SQL(" AND ").join([sql.SQL(c) for c in clauses]) if clauses else sql.SQL("TRUE")
    return where, params, remaining


def _matcher(conditions: Sequence[Condition]) -> Any:
    """A predicate for the conditions SQL did not decide (compile_query over (path, {op: operand}) pairs)."""
    if not conditions:
        return None
    return compile_query([(".".join(c.path), {c.op: c.operand}) for c in conditions])


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, separators=(",", ":"))


def _json_text(where: str, value: Any) -> str:
    """JSON text for plain data, with every float written so that JSONB gives a float back.

    JSONB keeps numbers as ``numeric``, which prints ``1e+20`` as ``100000000000000000000``: read back, that
    is an int. Floats written in exponent form are spelled out with a trailing ``.0`` instead.

    Raises:
        SchemaError: for what JSONB cannot hold: NaN, infinity, a NUL character in text.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(
                f"{where} = {value!r}: postgresql:// cannot store NaN or infinity in JSON; store it as a string "
                "or log it as a metric."
            )
        text = repr(value)
        return format(Decimal(text), "f") + ".0" if "e+" in text else text
    if isinstance(value, str):
        if "\x00" in value:
            raise SchemaError(f"{where} holds a NUL character, which postgresql:// cannot store in JSON.")
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json_text(where, v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(_json_text(where, str(k)) + ":" + _json_text(where, v) for k, v in value.items())
            + "}"
        )
    raise SchemaError(f"{where} = {value!r} has type {type(value).__name__}, which cannot be stored as JSON.")


def _jsonb(where: str, value: Any) -> Jsonb:
    """Wrap plain data for a JSONB column (checked and encoded once, by :func:`_json_text`)."""
    text = _json_text(where, value)
    return Jsonb(value, dumps=lambda _: text)


def _value_columns(value: int | float) -> tuple[float, Decimal | None]:
    if isinstance(value, int):
        return float(value), Decimal(value)
    return value, None


def _read_value(value: float, value_int: Decimal | None) -> int | float:
    return int(value_int) if value_int is not None else value


def _status_row(s: StatusLike) -> tuple[str, int, str]:
    return s.name, int(s.value), str(s)


def _point_arrays(points: Sequence[MetricPoint]) -> list[list[Any]]:
    """Columns of the points to insert, then of the latest values and the points logged per metric (bound as
    arrays: one statement per batch).

    A step logged twice in one batch keeps its first position and its last value, as in memory (and ON
    CONFLICT may not touch one row twice in a statement); both count as logged.
    """
    rows: list[list[Any]] = []
    at_step: dict[tuple[str, float], int] = {}
    last: dict[str, int | float] = {}
    logged: dict[str, int] = {}
    for p in points:
        value, value_int = _value_columns(p.value)
        last[p.name] = p.value
        logged[p.name] = logged.get(p.name, 0) + 1
        if p.step is not None:
            key = (p.name, float(p.step))
            i = at_step.get(key)
            if i is not None:
                rows[i][3], rows[i][4] = value, value_int
                continue
            at_step[key] = len(rows)
        rows.append(
            [p.name, None if p.step is None else float(p.step), isinstance(p.step, int), value, value_int]
        )
    columns = [list(col) for col in zip(*rows, strict=True)]
    latest = [_value_columns(v) for v in last.values()]
    return [*columns, list(last), [v for v, _ in latest], [i for _, i in latest], list(logged.values())]


#: COPY's binary format: the file header, the end-of-data marker, a NULL field.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)


def _numeric_binary(n: int) -> bytes:
    """An int in PostgreSQL's binary ``numeric`` form: base-10000 digits, most significant first."""
    sign, n = (0x4000, -n) if n < 0 else (0, n)
    digits: list[int] = []
    while n:
        n, digit = divmod(n, 10000)
        digits.append(digit)
    digits.reverse()
    weight = len(digits) - 1 if digits else 0
    while digits and digits[-1] == 0:  # trailing zero digits are implied by the weight
        digits.pop()
    body = struct.pack(f">hhhh{len(digits)}h", len(digits), weight, sign, 0, *digits)
    return struct.pack(">i", len(body)) + body


def _binary_series(uid: str, name: str, metric: Metric) -> bytes:
    """One series' points as rows of a binary COPY into the points table, in order, each checked as logging
    checks it: ``(trial_uid, name, step, step_is_int, value, value_int)``.

    The usual series (every step a number, each once, every value a float) is laid out by numpy in one pass;
    others row by row. A step present twice (a Metric built by hand) keeps its first position and its last
    value, as logging it would (the unique index on the step admits one row).

    Raises:
        SchemaError: for a value or step that is not a number (nothing of the batch is then stored).
    """
    import numpy as np

    check_metric_name(name)
    steps, values = metric.steps, metric.values
    if len(steps) != len(values):
        raise SchemaError(f"metric {name!r}: {len(steps)} steps but {len(values)} values")
    if not values:
        return b""
    uid_b, name_b = uid.encode("utf-8"), name.encode("utf-8")
    limit = 2**53  # ints beyond are not exact as float8
    int_steps = [type(s) is int and -limit <= s <= limit for s in steps]
    float_steps = all(
        ok or (type(s) is float and math.isfinite(s)) for ok, s in zip(int_steps, steps, strict=True)
    )
    if float_steps and all(type(v) is float for v in values) and len(set(steps)) == len(steps):
        layout = np.dtype(
            [
                ("fields", ">i2"),
                ("uid_len", ">i4"),
                ("uid", f"S{len(uid_b)}"),
                ("name_len", ">i4"),
                ("name", f"S{len(name_b)}"),
                ("step_len", ">i4"),
                ("step", ">f8"),
                ("is_int_len", ">i4"),
                ("is_int", "u1"),
                ("value_len", ">i4"),
                ("value", ">f8"),
                ("int_len", ">i4"),
            ]
        )
        rows = np.empty(len(values), dtype=layout)
        rows["fields"], rows["uid_len"], rows["uid"] = 6, len(uid_b), uid_b
        rows["name_len"], rows["name"] = len(name_b), name_b
        rows["step_len"], rows["step"] = 8, np.asarray(steps, dtype=np.float64)
        rows["is_int_len"], rows["is_int"] = 1, np.asarray(int_steps, dtype=np.uint8)
        rows["value_len"], rows["value"] = 8, np.asarray(values, dtype=np.float64)
        rows["int_len"] = -1
        return rows.tobytes()
    points = [MetricPoint(name, s, v) for s, v in zip(steps, values, strict=True)]  # checks each point
    _, at, is_int, floats, ints, *_ = _point_arrays(points)
    head = struct.pack(">hi", 6, len(uid_b)) + uid_b + struct.pack(">i", len(name_b)) + name_b
    out = bytearray()
    for step, step_int, number, exact in zip(at, is_int, floats, ints, strict=True):
        out += head
        out += _NULL if step is None else struct.pack(">id", 8, step)
        out += struct.pack(">ib", 1, step_int)
        out += struct.pack(">id", 8, number)
        out += _NULL if exact is None else _numeric_binary(int(exact))
    return bytes(out)


def _changes_row(update: TrialUpdate) -> bool:
    """Whether ``update`` changes the trial's row (anything but metric points)."""
    return bool(
        update.parameters
        or update.metadata
        or update.tags
        or update.errors
        or update.chronos
        or update.status is not None
        or update.project_id is not None
        or update.group_id is not None
        or update.description is not None
    )


class _Lost(StorageError):
    """The connection failed under a call (internal: retried, or turned into a StorageError saying why)."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown  # the database may have applied the work (the loss came while committing)


#: SQLSTATEs of OperationalErrors that are not about the connection (an operator cancelled the statement).
_NOT_CONNECTION = (psycopg.errors.QueryCanceled,)


def _retried(idempotent: bool) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """A primitive that first writes what is buffered (read-your-writes), and runs again on a lost connection
    within ``retry_timeout_s`` (see :meth:`SQLProtocol._retry`)."""

    def wrap(method: Callable[..., _T]) -> Callable[..., _T]:
        @functools.wraps(method)
        def call(self: SQLProtocol, *args: Any, **kwargs: Any) -> _T:
            if not getattr(self._retrying, "active", False):
                self.flush()
            return self._retry(lambda: method(self, *args, **kwargs), idempotent, method.__name__)

        return call

    return wrap


class SQLProtocol(BufferedProtocol):
    """Projects, groups and trials in PostgreSQL (or CockroachDB), safe across threads and processes.

    Args:
        uri: ``postgresql://[user[:password]@]host[:port]/db[?schema=name&pool_max_size=4&...]``; unitrack's
            options: ``schema``, ``pool_max_size``, ``batch_size`` (1000; 1 = every call durable when it returns),
            ``flush_interval_s`` (0.1), ``max_buffer`` (100000), ``retry_timeout_s`` (60). Other options are
            passed to libpq (e.g. ``sslmode=require``).
        strict: check that a trial's project and group exist.

    Raises:
        ConfigError: for a malformed schema name or option.
        StorageError: when the database cannot be reached or migrated.
    """

    def __init__(self, uri: str | ParsedURI = "postgresql://localhost/unitrack", strict: bool = True) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        self.strict = strict
        options = dict(self.uri.options)
        self.schema = options.pop("schema", None)
        if self.schema is not None and not _SCHEMA_NAME.fullmatch(self.schema):
            raise ConfigError(
                f"schema={self.schema!r} in {self.uri} is not a plain SQL name; use letters, digits and '_'."
            )
        max_size = int(self._number(options, "pool_max_size", 4, 1))
        self.batch_size = int(self._number(options, "batch_size", 1000, 1))
        self.max_buffer = int(self._number(options, "max_buffer", 100_000, 1))
        self.flush_interval_s = self._number(options, "flush_interval_s", 0.1, 0.001)
        self.retry_timeout_s = self._number(options, "retry_timeout_s", 60.0, 0.0)
        params: dict[str, Any] = {
            "host": self.uri.host or None,
            "port": self.uri.port,
            "user": self.uri.username,
            "password": self.uri.password,
            "dbname": self.uri.path.lstrip("/") or None,
        }
        params.update(options)  # libpq options, e.g. ?host=/var/run/postgresql for a unix socket folder
        if self.schema is not None:
            params["options"] = "-csearch_path=" + self.schema
        self._conninfo = make_conninfo("", **{k: v for k, v in params.items() if v is not None})
        self._closed = False
        self._lock = threading.Lock()
        self._retrying = threading.local()
        self._known: set[str] = set()
        try:
            self._migrate()
            self._pool = psycopg_pool.ConnectionPool(
                self._conninfo,
                min_size=1,
                max_size=max(1, max_size),
                open=True,
                timeout=10.0,
                kwargs={"autocommit": True},
            )
        except psycopg.Error as exc:
            raise StorageError(f"Cannot open {self.uri}: {exc}") from exc
        self._buffer = UpdateBuffer(
            self._write_batch,
            writer_id=uuid.uuid4().hex,
            batch_size=self.batch_size,
            flush_interval_s=self.flush_interval_s,
            max_buffer=self.max_buffer,
            lock=threading.RLock(),
            describe=str(self.uri.redacted()),
        )

    def _number(self, options: dict[str, str], name: str, default: float, least: float) -> float:
        raw = options.pop(name, None)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = least - 1
        if not value >= least:
            raise ConfigError(
                f"{name}={raw!r} in {self.uri.redacted()} must be a number of at least {least:g}."
            )
        return value

    # ------------------------------------------------------------------------------------ connections
    def _migrate(self) -> None:
        with psycopg.connect(self._conninfo) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if self.schema is not None:
                # The one identifier taken from the URI: checked against _SCHEMA_NAME and quoted by psycopg.
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            cur.execute("CREATE TABLE IF NOT EXISTS unitrack_schema_version (version integer NOT NULL)")
            cur.execute("SELECT max(version) FROM unitrack_schema_version")
            row = cur.fetchone()
            current = row[0] if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.uri} holds unitrack tables of version {current}; this unitrack knows up to "
                    f"{SCHEMA_VERSION}. Upgrade unitrack."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version - 1]:
                    cur.execute(statement)
                cur.execute("INSERT INTO unitrack_schema_version (version) VALUES (%s)", (version,))

    @contextmanager
    def _cursor(self, transaction: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: committed when the block ends, rolled back when it raises.

        Connections are in autocommit mode, so ``transaction=False`` runs a single statement (atomic by itself)
        without the extra round trips of BEGIN and COMMIT.

        Raises:
            _Lost: when the connection failed (``unknown`` when the work may have been applied).
            SchemaError, StorageError: for what the database refused.
        """
        if self._closed:
            raise StorageError(f"{self.uri} backend is closed; open a new one with get_protocol.")
        committing = not transaction  # an autocommit statement commits as it runs
        try:
            with self._pool.connection() as conn:
                if transaction:
                    with conn.transaction():
                        with conn.cursor() as cur:
                            yield cur
                        committing = True  # leaving the block sends COMMIT
                else:
                    with conn.cursor() as cur:
                        yield cur
        except psycopg.errors.DataError as exc:
            raise SchemaError(f"{self.uri} refused a value: {exc}") from exc
        except psycopg_pool.PoolTimeout as exc:
            raise _Lost(f"no connection to {self.uri.redacted()}: {exc}", unknown=False) from exc
        except psycopg.OperationalError as exc:
            if isinstance(exc, _NOT_CONNECTION):
                raise StorageError(f"{self.uri} failed: {exc}") from exc
            raise _Lost(f"{self.uri.redacted()}: {exc}".strip(), unknown=committing) from exc
        except psycopg.InterfaceError as exc:
            raise _Lost(f"{self.uri.redacted()}: {exc}", unknown=committing) from exc
        except psycopg.Error as exc:
            raise StorageError(f"{self.uri} failed: {exc}") from exc

    def _retry(self, work: Callable[[], _T], idempotent: bool, what: str) -> _T:
        """Run ``work``; on a lost connection run it again (backing off) until ``retry_timeout_s`` has passed.

        Work that is not ``idempotent`` runs again only when the database cannot have applied it.
        """
        if getattr(self._retrying, "active", False):
            return work()  # the outermost call retries
        self._retrying.active = True
        started = time.monotonic()
        delay = 0.05
        warned = False
        try:
            while True:
                try:
                    result = work()
                except _Lost as exc:
                    if exc.unknown and not idempotent:
                        raise StorageError(
                            f"The connection to {self.uri.redacted()} failed while committing {what}: it may or "
                            f"may not have been applied. Check before running it again. ({exc})"
                        ) from exc
                    if time.monotonic() + delay > started + self.retry_timeout_s:
                        raise StorageError(
                            f"Lost the connection to {self.uri.redacted()} and could not reconnect within "
                            f"{self.retry_timeout_s:g} s ({exc}); check the database, or raise ?retry_timeout_s=."
                        ) from exc
                    if not warned:
                        warned = True
                        logger.warning(
                            "lost the connection to %s (%s); retrying quietly for up to %g s",
                            self.uri.redacted(),
                            exc,
                            self.retry_timeout_s,
                        )
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if warned:
                    logger.info(
                        "connection to %s back after %.1f s", self.uri.redacted(), time.monotonic() - started
                    )
                return result
        finally:
            self._retrying.active = False

    def flush(self) -> None:
        """Write every buffered update and wait until it is in the database (acknowledged).

        Raises:
            UnitrackError: the error of a batch that failed (its updates were not stored).
        """
        self._buffer.flush()

    # ---------------------------------------------------------------------------------------- inserts
    @_retried(True)
    def insert_project(self, project: Project) -> Project | None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO unitrack_projects (uid, name, description, metadata) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING uid",
                (
                    project.uid,
                    project.name,
                    project.description,
                    _jsonb("project metadata", dict(project.metadata)),
                ),
            )
            if cur.fetchone() is None:
                return None
        return self.find_projects({"uid": project.uid})[0]

    def _check_project(self, cur: psycopg.Cursor[Any], project_id: str | None, what: str) -> None:
        if not self.strict or project_id is None:
            return
        # FOR SHARE: the project cannot vanish before this transaction commits.
        cur.execute("SELECT 1 FROM unitrack_projects WHERE uid = %s FOR SHARE", (project_id,))
        if cur.fetchone() is None:
            raise NotFoundError(
                f"Project {project_id!r} of {what} does not exist; create it first (new_project)."
            )

    @_retried(True)
    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        with self._cursor() as cur:
            self._check_project(cur, group.project_id, f"group {group.name!r}")
            cur.execute(
                "INSERT INTO unitrack_groups (uid, name, description, project_id, metadata) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING uid",
                (
                    group.uid,
                    group.name,
                    group.description,
                    group.project_id,
                    _jsonb("group metadata", dict(group.metadata)),
                ),
            )
            if cur.fetchone() is None:
                return None
        return self.find_groups({"uid": group.uid})[0]

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        self.flush()
        attempts: list[int] = []

        def work() -> Trial | None:
            attempts.append(1)
            return self._insert_trial(trial, auto_increment)

        stored = self._retry(work, not auto_increment, "insert_trial")
        if stored is None and len(attempts) > 1 and not auto_increment:  # our own first attempt had committed
            found = self.find_trials({"uid": trial.uid})
            stored = found[0] if found else None
        if stored is not None:
            self._known.add(stored.uid)
        return stored

    @_retried(True)
    def insert_trials(self, trials: Sequence[Trial]) -> list[bool]:
        """Store complete trials in one transaction: their rows, every point (one ``COPY``), their latest values.

        A trial whose uid exists is left as it is, its points unwritten (so a copy run again never doubles a
        point). The transaction commits all of it or none: a client killed mid-copy leaves nothing of the batch,
        and a reader never sees one of these trials without its points.
        """
        first: dict[str, Trial] = {}
        for trial in trials:
            if not isinstance(trial, Trial):
                raise SchemaError(f"Expected a Trial, not {trial!r}")
            first.setdefault(trial.uid, trial)  # a uid given twice is stored once (the first)
        rows = [
            (t.uid, t.hash, t.revision, *self._trial_row(t)) for t in first.values()
        ]  # checked before writing
        stored: set[str] = set()
        if rows:
            with self._cursor() as cur:
                self._check_parents(cur, list(first.values()))
                cur.executemany(_INSERT_TRIAL, rows, returning=True)
                while True:
                    row = cur.fetchone()
                    if row is not None:
                        stored.add(row[0])
                    if not cur.nextset():
                        break
                new = [t for uid, t in first.items() if uid in stored]
                if any(len(m) for t in new for m in t.metrics.values()):
                    with cur.copy(_COPY_POINTS) as copy:
                        copy.write(_COPY_HEADER)
                        for trial in new:
                            for name, metric in trial.metrics.items():
                                copy.write(_binary_series(trial.uid, name, metric))
                        copy.write(_COPY_TRAILER)
                latest: list[list[Any]] = [[], [], [], [], []]
                for trial in new:
                    for name, metric in trial.metrics.items():
                        value = (
                            metric.latest
                            if metric.latest is not None or not metric.values
                            else metric.values[-1]
                        )
                        if value is None:
                            continue
                        number, exact = _value_columns(check_number(f"metric {name!r}", value))
                        for column, item in zip(
                            latest, (trial.uid, name, number, exact, len(metric)), strict=True
                        ):
                            column.append(item)
                if latest[0]:
                    cur.execute(_INSERT_LATEST_MANY, latest)
        self._known.update(stored)
        seen: set[str] = set()
        out = []
        for trial in trials:
            out.append(trial.uid in stored and trial.uid not in seen)
            seen.add(trial.uid)
        return out

    def _check_parents(self, cur: psycopg.Cursor[Any], trials: list[Trial]) -> None:
        """When ``strict``: raise NotFoundError unless every project and group the trials name exists (held
        FOR SHARE until the transaction ends)."""
        if not self.strict:
            return
        for table, attr in (("unitrack_projects", "project_id"), ("unitrack_groups", "group_id")):
            wanted = {getattr(t, attr) for t in trials} - {None}
            if not wanted:
                continue
            statement = (
                "SELECT uid FROM unitrack_projects WHERE uid = ANY(%s::text[]) FOR SHARE"
                if table == "unitrack_projects"
                else "SELECT uid FROM unitrack_groups WHERE uid = ANY(%s::text[]) FOR SHARE"
            )
            cur.execute(statement, (sorted(wanted),))
            missing = wanted - {row[0] for row in cur.fetchall()}
            if missing:
                trial = next(t for t in trials if getattr(t, attr) in missing)
                kind = "Project" if attr == "project_id" else "Group"
                raise NotFoundError(
                    f"{kind} {getattr(trial, attr)!r} of trial {trial.name!r} does not exist; create it first."
                )

    @staticmethod
    def _trial_row(trial: Trial) -> tuple[Any, ...]:
        """The columns of ``trial``'s row after its uid, hash and revision (JSON fields checked and encoded)."""
        return (
            trial.name,
            trial.description,
            trial.version,
            trial.group_id,
            trial.project_id,
            _jsonb("tags", dict(trial.tags)),
            _jsonb("parameters", dict(trial.parameters)),
            _jsonb("metadata", dict(trial.metadata)),
            _dumps(dict(trial.chronos)),
            *_status_row(trial.status),
            _jsonb("errors", list(trial.errors)),
        )

    def _insert_trial(self, trial: Trial, auto_increment: bool) -> Trial | None:
        name = f"trial {trial.name!r}"
        row = (trial.hash, *self._trial_row(trial))
        with self._cursor() as cur:
            self._check_project(cur, trial.project_id, name)
            if self.strict and trial.group_id is not None:
                cur.execute("SELECT 1 FROM unitrack_groups WHERE uid = %s FOR SHARE", (trial.group_id,))
                if cur.fetchone() is None:
                    raise NotFoundError(
                        f"Group {trial.group_id!r} of {name} does not exist; create it first."
                    )
            if auto_increment:
                # Revisions of one hash are numbered one at a time (released at commit).
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (trial.hash,))
            revision = trial.revision
            cur.execute(_INSERT_TRIAL, (f"{trial.hash}_{revision}", row[0], revision, *row[1:]))
            if cur.fetchone() is None:
                if not auto_increment:
                    return None
                cur.execute("SELECT max(revision) FROM unitrack_trials WHERE hash = %s", (trial.hash,))
                found = cur.fetchone()
                revision = (found[0] if found and found[0] is not None else trial.revision) + 1
                cur.execute(_INSERT_TRIAL, (f"{trial.hash}_{revision}", row[0], revision, *row[1:]))
                if cur.fetchone() is None:  # pragma: no cover - the advisory lock rules this out
                    raise StorageError(f"Revision {revision} of {name} appeared concurrently; retry.")
            uid = f"{trial.hash}_{revision}"
            points = [MetricPoint(n, s, v) for n, m in trial.metrics.items() for s, v in m]
            if points:
                self._write_points(cur, uid, points)
        return self._load_trials(_BY_UID, [uid])[0]

    # ------------------------------------------------------------------------------------------ reads
    @_retried(True)
    def find_projects(self, query: Query) -> list[Project]:
        match = compile_query(query)
        with self._cursor() as cur:
            cur.execute("SELECT uid, name, description, metadata FROM unitrack_projects ORDER BY ord")
            rows = cur.fetchall()
            cur.execute("SELECT project_id, uid FROM unitrack_groups WHERE project_id IS NOT NULL")
            groups: dict[str, set[str]] = {}
            for pid, uid in cur.fetchall():
                groups.setdefault(pid, set()).add(uid)
            cur.execute("SELECT project_id, uid FROM unitrack_trials WHERE project_id IS NOT NULL")
            trials: dict[str, set[str]] = {}
            for pid, uid in cur.fetchall():
                trials.setdefault(pid, set()).add(uid)
        out = []
        for uid, pname, description, metadata in rows:
            project = Project(
                _uid=uid,
                name=pname,
                description=description,
                metadata=metadata,
                groups=frozenset(groups.get(uid, ())),
                trials=frozenset(trials.get(uid, ())),
            )
            if match(project):
                out.append(project)
        return out

    def _groups(self, cur: psycopg.Cursor[Any], lock_uid: str | None = None) -> list[TrialGroup]:
        if lock_uid is None:
            cur.execute(
                "SELECT uid, name, description, project_id, metadata FROM unitrack_groups ORDER BY ord"
            )
        else:
            cur.execute(
                "SELECT uid, name, description, project_id, metadata FROM unitrack_groups WHERE uid = %s "
                "FOR UPDATE SKIP LOCKED",
                (lock_uid,),
            )
        rows = cur.fetchall()
        if lock_uid is None:
            cur.execute("SELECT group_id, uid FROM unitrack_trials WHERE group_id IS NOT NULL")
        else:
            cur.execute("SELECT group_id, uid FROM unitrack_trials WHERE group_id = %s", (lock_uid,))
        members: dict[str, set[str]] = {}
        for gid, uid in cur.fetchall():
            members.setdefault(gid, set()).add(uid)
        return [
            TrialGroup(
                _uid=uid,
                name=gname,
                description=description,
                project_id=project_id,
                metadata=metadata,
                trials=frozenset(members.get(uid, ())),
            )
            for uid, gname, description, project_id, metadata in rows
        ]

    @_retried(True)
    def find_groups(self, query: Query) -> list[TrialGroup]:
        match = compile_query(query)
        with self._cursor() as cur:
            return [g for g in self._groups(cur) if match(g)]

    def _load_trials(
        self,
        where: sql.Composable,
        params: Sequence[Any],
        cur: psycopg.Cursor[Any] | None = None,
        lock: sql.Composable = _NO_LOCK,
        *,
        with_series: bool = True,
    ) -> list[Trial]:
        if cur is None:
            with self._cursor() as fresh:
                return self._load_trials(where, params, fresh, lock, with_series=with_series)
        cur.execute(_SELECT_TRIALS.format(where=where, lock=lock), params)
        rows = cur.fetchall()
        if not rows:
            return []
        uids = [r[0] for r in rows]
        series: dict[str, dict[str, tuple[list[Any], list[Any]]]] = {}
        if with_series:  # summaries (find_trial_summaries) read only unitrack_metric_latest
            cur.execute(
                "SELECT trial_uid, name, step, step_is_int, value, value_int FROM unitrack_metric_points "
                "WHERE trial_uid = ANY(%s::text[]) ORDER BY seq",
                (uids,),
            )
            for uid, mname, step, step_is_int, value, value_int in cur.fetchall():
                steps, values = series.setdefault(uid, {}).setdefault(mname, ([], []))
                steps.append(int(step) if step_is_int and step is not None else step)
                values.append(_read_value(value, value_int))
        cur.execute(
            "SELECT trial_uid, name, value, value_int, logged FROM unitrack_metric_latest "
            "WHERE trial_uid = ANY(%s::text[]) ORDER BY first_seq",
            (uids,),
        )
        latest: dict[str, dict[str, Any]] = {}
        logged: dict[str, dict[str, int]] = {}
        for uid, mname, value, value_int, count in cur.fetchall():
            latest.setdefault(uid, {})[mname] = None if value is None else _read_value(value, value_int)
            logged.setdefault(uid, {})[mname] = count
        out = []
        for (
            uid,
            thash,
            revision,
            tname,
            description,
            version,
            group_id,
            project_id,
            tags,
            parameters,
            metadata,
            chronos,
            status_name,
            status_value,
            errors,
        ) in rows:
            per_trial = series.get(uid, {})
            counts = logged.get(uid, {})
            metrics = {
                k: Metric(
                    k, tuple(s), tuple(v), latest.get(uid, {}).get(k, v[-1] if v else None), counts.get(k)
                )
                for k, (s, v) in per_trial.items()
            }
            for k, v in latest.get(uid, {}).items():
                if k not in metrics:
                    metrics[k] = Metric(k, (), (), v, counts.get(k))
            out.append(
                Trial(
                    _hash=thash,
                    revision=revision,
                    name=tname,
                    description=description,
                    version=version,
                    group_id=group_id,
                    project_id=project_id,
                    tags=tags,
                    parameters=parameters,
                    metadata=metadata,
                    metrics=metrics,
                    chronos=json.loads(chronos),
                    status=status_from_json({"name": status_name, "value": status_value}),
                    errors=tuple(errors),
                )
            )
        return out

    @_retried(True)
    def find_trials(self, query: Query) -> list[Trial]:
        where, params, remaining = _plan(query)
        match = _matcher(remaining)
        trials = self._load_trials(where, params)
        return trials if match is None else [t for t in trials if match(t)]

    @_retried(True)
    def find_trial_summaries(self, query: Query) -> list[Trial]:
        where, params, remaining = _plan(query)
        match = _matcher(remaining)
        trials = self._load_trials(where, params, with_series=False)
        return trials if match is None else [t for t in trials if match(t)]

    @_retried(True)
    def find_series(self, request: SeriesRequest) -> list[Series]:
        if not request.uids or not request.metrics:
            return []
        in_sql = request.max_points is not None and request.method == "minmax"
        params = {
            "uids": list(request.uids),
            "metrics": list(request.metrics),
            "lo": request.step_min,
            "hi": request.step_max,
            "buckets": max(1, ((request.max_points or 4) - 2) // 2),
            "max_points": request.max_points or 0,
            "every": not in_sql,
        }
        found: dict[tuple[str, str], tuple[list[Any], list[Any], int]] = {}
        with self._cursor(transaction=False) as cur:
            cur.execute(_SERIES, params)
            for uid, name, step, step_is_int, value, value_int, pos, total in cur.fetchall():
                steps, values, _ = found.setdefault((uid, name), ([], [], int(total)))
                steps.append(int(pos) if step is None else int(step) if step_is_int else step)
                values.append(_read_value(value, value_int))
        out = []
        for uid in request.uids:
            for name in request.metrics:
                got = found.get((uid, name))
                if got is None:
                    continue
                steps, values, total = got
                if not in_sql:  # every point in the range, or LTTB: selected here from the sorted points
                    steps, values, _, total = downsample(steps, values, None, request)
                out.append(Series(uid, name, tuple(steps), tuple(values), None, total))
        return out

    # ----------------------------------------------------------------------------------------- writes
    def _write_points(self, cur: psycopg.Cursor[Any], uid: str, points: Sequence[MetricPoint]) -> None:
        names, steps, is_int, values, ints, lnames, lvalues, lints, logged = _point_arrays(points)
        cur.execute(_INSERT_POINTS, (uid, names, steps, is_int, values, ints))
        cur.execute(_UPSERT_LATEST, (uid, lnames, lvalues, lints, logged))

    def _apply(
        self, cur: psycopg.Cursor[Any], uid: str, update: TrialUpdate, chronos_text: str | None
    ) -> None:
        """Apply ``update`` to the locked trial ``uid`` (whose chronos JSON is ``chronos_text``)."""
        if update.writer is not None and update.seq is not None:
            cur.execute(
                "INSERT INTO unitrack_writers (trial_uid, writer, seq) VALUES (%s, %s, %s) "
                "ON CONFLICT (trial_uid, writer) DO UPDATE SET seq = EXCLUDED.seq "
                "WHERE unitrack_writers.seq < EXCLUDED.seq RETURNING seq",
                (uid, update.writer, update.seq),
            )
            if cur.fetchone() is None:
                return  # a replayed batch: applied before
        new_chronos = None
        if update.chronos:
            chronos = json.loads(chronos_text or "{}")
            for obs in update.chronos:
                state = chronos.get(obs.name)
                agg = aggregator_from_json(
                    dict(state) if isinstance(state, dict) and "kind" in state else dict(obs.aggregator)
                )
                agg.append(obs.seconds)
                chronos[obs.name] = agg.to_json()
            new_chronos = _dumps(chronos)
        if new_chronos is not None or _changes_row(update):
            name, value, key = _status_row(update.status) if update.status is not None else (None, None, None)
            cur.execute(
                _UPDATE_TRIAL,
                (
                    _jsonb("parameters", dict(update.parameters)),
                    _jsonb("metadata", dict(update.metadata)),
                    _jsonb("tags", dict(update.tags)),
                    _jsonb("errors", list(update.errors)),
                    name,
                    value,
                    key,
                    update.project_id,
                    update.group_id,
                    update.description,
                    new_chronos,
                    uid,
                ),
            )
        if update.metrics:
            self._write_points(cur, uid, update.metrics)

    def _write_update_now(self, uid: str, update: TrialUpdate) -> None:
        self._retry(lambda: self._write_update(uid, update), True, "update_trial")

    def update_trials(self, items: Sequence[tuple[str, TrialUpdate]]) -> None:
        """Stamped updates (a client's batch through the server) in one transaction, all or none, after everything
        buffered; others as :meth:`update_trial` one at a time."""
        items = list(items)
        for uid, update in items:
            if not isinstance(uid, str) or not uid or not isinstance(update, TrialUpdate):
                raise SchemaError(f"Expected (trial uid, TrialUpdate) pairs, not {(uid, update)!r}")
        if len(items) < 2 or any(u.writer is None or u.seq is None for _, u in items):
            super().update_trials(items)
            return
        self._buffer.write_now(lambda: self._write_batch(items))
        self._known.update(uid for uid, _ in items)

    def _write_update(self, uid: str, update: TrialUpdate) -> None:
        """Apply one update in its own transaction (stamped: a repeat is skipped)."""
        if update.writer is None and update.metrics and not _changes_row(update):
            with self._cursor(transaction=False) as cur:
                cur.execute(_APPEND_POINTS, (uid, *_point_arrays(update.metrics)))
                found = cur.fetchone()
            if not found or not found[0]:
                raise NotFoundError(f"No trial with uid {uid!r}; create it with new_trial first.")
            return
        with self._cursor() as cur:
            self._apply_locked(cur, uid, update)

    def _apply_locked(self, cur: psycopg.Cursor[Any], uid: str, update: TrialUpdate) -> None:
        if (
            update.writer is not None
            and update.seq is not None
            and update.metrics
            and not _changes_row(update)
        ):
            cur.execute(_APPEND_STAMPED, (uid, update.writer, update.seq, *_point_arrays(update.metrics)))
            found = cur.fetchone()
            if not found or not found[0]:
                raise NotFoundError(f"No trial with uid {uid!r}; create it with new_trial first.")
            return
        # The row lock orders concurrent writers of one trial (chronos read-modify-write, point order).
        cur.execute("SELECT chronos FROM unitrack_trials WHERE uid = %s FOR UPDATE", (uid,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"No trial with uid {uid!r}; create it with new_trial first.")
        self._apply(cur, uid, update, row[0])

    def _write_batch(self, batch: list[tuple[str, TrialUpdate]]) -> None:
        """Write one batch of stamped updates in one transaction (trials locked in uid order: no deadlock between
        writers sharing trials), again on a lost connection."""

        def work() -> None:
            # One statement is atomic by itself: a batch of one trial's points needs no BEGIN/COMMIT.
            single = len(batch) == 1 and batch[0][1].metrics and not _changes_row(batch[0][1])
            with self._cursor(transaction=not single) as cur:
                for uid, update in sorted(batch, key=lambda item: item[0]):
                    self._apply_locked(cur, uid, update)

        self._retry(work, True, "a batch of updates")

    @_retried(True)
    def update_group(self, uid: str, update: GroupUpdate) -> None:
        with self._cursor() as cur:
            cur.execute(
                "UPDATE unitrack_groups SET metadata = metadata || %s WHERE uid = %s RETURNING uid",
                (_jsonb("group metadata", dict(update.metadata)), uid),
            )
            if cur.fetchone() is None:
                raise NotFoundError(f"No group with uid {uid!r}; create it with new_trial_group first.")

    @_retried(False)
    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        where, params, remaining = _plan(query)
        match = _matcher(remaining)
        with self._cursor() as cur:
            if match is None:
                # Exact in SQL: take the first matching trial nobody else holds.
                cur.execute(_TAKE_TRIAL.format(where=where), params)
                row = cur.fetchone()
                if row is None:
                    return None
                self._apply(cur, row[0], update, row[1])
                return self._load_trials(_BY_UID, [row[0]], cur)[0]
            # Part of the query is checked in Python: lock candidates one by one, re-check under the lock.
            for candidate in self._load_trials(where, params, cur):
                locked = self._load_trials(_BY_UID, [candidate.uid], cur, _LOCK)
                if not locked or not compile_query(query)(locked[0]):
                    continue
                cur.execute("SELECT chronos FROM unitrack_trials WHERE uid = %s", (candidate.uid,))
                chronos = cur.fetchone()
                self._apply(cur, candidate.uid, update, chronos[0] if chronos else None)
                return self._load_trials(_BY_UID, [candidate.uid], cur)[0]
        return None

    @_retried(False)
    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        match = compile_query(query)
        with self._cursor() as cur:
            for group in self._groups(cur):
                locked = self._groups(cur, lock_uid=group.uid)
                if not locked or not match(locked[0]):
                    continue
                cur.execute(
                    "UPDATE unitrack_groups SET metadata = metadata || %s WHERE uid = %s",
                    (_jsonb("group metadata", dict(update.metadata)), group.uid),
                )
                return self._groups(cur, lock_uid=group.uid)[0]
        return None

    def commit(self, **kwargs: Any) -> None:
        """Write what is buffered (every other call commits its own transaction before returning)."""
        if not self._closed:
            self.flush()

    def close(self) -> None:
        """Write what is buffered, then close the connection pool; further calls raise StorageError."""
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                self._buffer.close()
                self._pool.close()
