"""postgresql:// specifics: hostile strings stored literally, no SQL built from values, query push-down equal to
the in-memory semantics, many processes at once, schema versions, the missing-extra error."""

from __future__ import annotations

import ast
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_until
from tests.persistence import pg
from unitrack.errors import ItemNotFound, MissingDependencyError, SchemaError, StorageError
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import MetricPoint, Project, Status, Trial

ROOT = Path(__file__).resolve().parents[2]
SQL_MODULE = ROOT / "unitrack" / "persistence" / "backends" / "sql.py"

HOSTILE = ["x' OR '1'='1", "'; DROP TABLE unitrack_trials; --", 'a"b\\c', "%s %(x)s {x} $1", "ünï ☃ \u202e"]


@pytest.fixture
def uri(postgres_uri: str, tmp_path: Path) -> str:
    return pg.schema_uri(postgres_uri, str(tmp_path))


@pytest.fixture
def db(uri: str):  # type: ignore[no-untyped-def]
    from unitrack.persistence.backends.sql import SQLProtocol

    p = SQLProtocol(uri)
    yield p
    p.close()


# ------------------------------------------------------------------------------------------- injection
@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_stored_and_matched_literally(db: Protocol, text: str) -> None:
    db.new_project(Project(name="p", metadata={text: text}))
    t = db.new_trial(Trial(name="t", project_id="p", parameters={"v": text, text: 1}))
    other = db.new_trial(Trial(name="u", project_id="p", parameters={"v": "plain"}))
    assert t is not None and other is not None
    db.log_trial_metadata(t, **{text: text})
    db.add_trial_tags(t, note=text)
    db.log_trial_metrics(t, step=0, **{text: 1.5})
    stored = db.fetch_trials({"uid": t.uid})[0]
    assert stored.parameters["v"] == text and stored.parameters[text] == 1
    assert stored.metadata[text] == text and stored.tags["note"] == text
    assert stored.metrics[text].values == (1.5,)
    for query in (
        {"parameters.v": text},
        {"parameters.v": {"$in": [text]}},
        {"parameters.v": {"$gte": text, "$lte": text}},
        {"metadata." + text: text},
        {"tags.note": text},
        {"parameters." + text: {"$exists": True}},
        {"uid": {"$in": [t.uid, text]}},
    ):
        assert [x.uid for x in db.fetch_trials(query)] == [t.uid], query
    assert db.fetch_trials({"name": text}) == []
    assert len(db.fetch_trials(None)) == 2  # nothing was dropped
    assert db.get_project(Project(name="p")).metadata[text] == text  # type: ignore[union-attr]


def _string_building(node: ast.AST) -> list[str]:
    """f-strings, %-formatting and str.format found under ``node``."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr):
            found.append(f"f-string at line {sub.lineno}")
        elif isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
            found.append(f"%-formatting at line {sub.lineno}")
        elif (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Attribute)
            and sub.func.attr == "format"
            and not _is_psycopg_sql(sub.func.value)
        ):
            found.append(f".format at line {sub.lineno}")
    return found


def _is_psycopg_sql(node: ast.AST) -> bool:
    """``sql.SQL("constant")`` or a module constant bound to one (psycopg's composition quotes what it adds)."""
    if isinstance(node, ast.Name):
        return node.id in _SQL_CONSTANTS
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "SQL"
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
    )


_TREE = ast.parse(SQL_MODULE.read_text())
_SQL_CONSTANTS = {
    t.id
    for stmt in _TREE.body
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)
    for t in stmt.targets
    if isinstance(t, ast.Name)
    and isinstance(stmt.value.func, ast.Attribute)
    and stmt.value.func.attr == "SQL"
    and all(isinstance(a, ast.Constant) for a in stmt.value.args)
}


def _assignments(scope: ast.AST, *, top_level_only: bool) -> dict[str, list[ast.AST]]:
    nodes = scope.body if top_level_only else list(ast.walk(scope))  # type: ignore[attr-defined]
    out: dict[str, list[ast.AST]] = {}
    for node in nodes:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out.setdefault(name.id, []).append(node.value)
    return out


def test_no_sql_text_is_built_by_formatting() -> None:
    module_names = _assignments(_TREE, top_level_only=True)
    functions = {n.name: n for n in ast.walk(_TREE) if isinstance(n, ast.FunctionDef)}
    problems = []
    checked = 0
    for function in functions.values():
        local_names = _assignments(function, top_level_only=False)
        for call in ast.walk(function):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in ("execute", "executemany")
            ):
                continue
            checked += 1
            todo: list[ast.AST] = [call.args[0]]
            seen: set[str] = set()
            while todo:  # the SQL argument and every variable it is built from (local, then module level)
                expr = todo.pop()
                problems += [f"execute at line {call.lineno}: {p}" for p in _string_building(expr)]
                for sub in ast.walk(expr):
                    if isinstance(sub, ast.Name) and sub.id not in seen:
                        seen.add(sub.id)
                        todo += local_names.get(sub.id) or module_names.get(sub.id, [])
    assert checked > 10
    # The WHERE clauses passed to execute come from these helpers: none of them formats text.
    for name in ("_plan", "_trial_clause", "_text_clause", "_status_clause", "_json_clause"):
        problems += [f"{name}: {p}" for p in _string_building(functions[name])]
    assert not problems, problems


_BAD = ast.parse('cur.execute(f"SELECT {x}")\ncur.execute("SELECT %s" % x)\ncur.execute("{}".format(x))')


def test_the_static_check_catches_formatting() -> None:
    assert len(_string_building(_BAD)) == 3


# ------------------------------------------------------------------------------------ query push-down
DATA = [
    {"lr": 0.001, "opt": "adam", "tags": ["a", "b"], "n": None, "flag": True, "deep": {"x": 1}},
    {"lr": 0.01, "opt": "sgd", "tags": ["b"], "flag": False, "deep": {"x": 2.5}, "s": "Zeta"},
    {"lr": 0.1, "opt": "Adam", "n": 3, "deep": {"x": "1"}, "s": "alpha", "big": 2**62},
    {"lr": 1, "opt": "ünï", "tags": [], "deep": [1, 2], "s": "ä", "flag": 1},
    {"lr": 10, "tags": [["a"]], "deep": {"x": None}, "0": "zero", "big": 2**62 + 1},
]
QUERIES = [
    {"parameters.lr": {"$lt": 0.1}},
    {"parameters.lr": {"$lte": 0.1}},
    {"parameters.lr": {"$gt": 0.01, "$lt": 10}},
    {"parameters.lr": 1},
    {"parameters.lr": 1.0},
    {"parameters.lr": {"$ne": 1}},
    {"parameters.lr": {"$in": [0.01, 10, "x"]}},
    {"parameters.lr": {"$nin": [0.01, 10]}},
    {"parameters.lr": {"$gt": "a"}},
    {"parameters.lr": {"$lt": math.inf}},
    {"parameters.lr": {"$gt": -math.inf}},
    {"parameters.lr": {"$lt": math.nan}},
    {"parameters.lr": {"$eq": math.inf}},
    {"parameters.opt": "adam"},
    {"parameters.opt": {"$gt": "Adam"}},
    {"parameters.opt": {"$lt": "b"}},
    {"parameters.opt": {"$regex": "(?i)^adam$"}},
    {"parameters.opt": {"$exists": False}},
    {"parameters.opt": None},
    {"parameters.opt": {"$ne": None}},
    {"parameters.tags": "b"},
    {"parameters.tags": ["b"]},
    {"parameters.tags": {"$in": ["a"]}},
    {"parameters.tags": {"$nin": ["a"]}},
    {"parameters.tags": {"$ne": "a"}},
    {"parameters.tags": []},
    {"parameters.n": None},
    {"parameters.n": {"$ne": None}},
    {"parameters.n": {"$exists": True}},
    {"parameters.flag": True},
    {"parameters.flag": 1},
    {"parameters.flag": {"$gt": 0}},
    {"parameters.flag": {"$in": [True, 1]}},
    {"parameters.deep.x": 1},
    {"parameters.deep.x": "1"},
    {"parameters.deep.x": {"$gte": 1}},
    {"parameters.deep.x": None},
    {"parameters.deep.x": {"$exists": True}},
    {"parameters.deep.0": 1},
    {"parameters.0": "zero"},
    {"parameters.deep": {"x": 1}},
    {"parameters.s": {"$gt": "Z"}},
    {"parameters.s": {"$lt": "b"}},
    {"parameters.s": {"$gte": "ä"}},
    {"parameters.big": 2**62},
    {"parameters.big": {"$gt": 2**62}},
    {"name": "t1"},
    {"name": {"$gt": "t2"}},
    {"name": {"$in": ["t0", "t4", None]}},
    {"name": {"$nin": ["t0"]}},
    {"name": 1},
    {"description": None},
    {"version": {"$exists": False}},
    {"status": "running"},
    {"status": {"$ne": "RUNNING"}},
    {"status": {"$in": ["createdgroup", "completed"]}},
    {"status": Status.Running},
    {"status": 101},
    {"status": {"$gte": 101}},
    {"metrics.loss": {"$gt": 0.5}},
    {"metrics.loss": {"$exists": False}},
    {"metadata.host": {"$regex": "b$"}},
    {"tags.team": "x"},
    [("parameters.lr", {"$lt": 1}), ("parameters.opt", {"$ne": "sgd"}), ("name", {"$gte": "t0"})],
]


def _fill(p: Protocol) -> None:
    p.new_project(Project(name="p"))
    for i, params in enumerate(DATA):
        t = p.new_trial(Trial(name=f"t{i}", project_id="p", parameters=params))
        assert t is not None
        if i % 2:
            p.set_trial_status(t, Status.Running)
            p.log_trial_metrics(t, step=0, loss=i / 4)
            p.log_trial_metadata(t, host="ab")
        if i == 2:
            p.add_trial_tags(t, team="x")


@pytest.fixture
def twins(db: Protocol) -> tuple[Protocol, Protocol]:
    reference = EphemeralProtocol()
    _fill(reference)
    _fill(db)
    return reference, db


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_queries_match_the_in_memory_semantics(twins: tuple[Protocol, Protocol], query: object) -> None:
    reference, db = twins
    expected = [t.name for t in reference.fetch_trials(query)]  # type: ignore[arg-type]
    assert [t.name for t in db.fetch_trials(query)] == expected  # type: ignore[arg-type]


def test_a_parameter_range_query_runs_entirely_in_sql() -> None:
    from unitrack.persistence.backends.sql import _plan

    assert _plan({"parameters.lr": {"$lt": 0.1}, "status": "running", "name": {"$in": ["a"]}})[2] == []
    assert [c.path for c in _plan({"metrics.loss": {"$gt": 1}, "parameters.x": 1})[2]] == [
        ("metrics", "loss"),
        ("parameters", "x"),
    ]


def test_fetch_and_update_with_a_python_checked_query_reserves_distinct_trials(db: Protocol) -> None:
    db.new_project(Project(name="p"))
    for i in range(3):
        db.new_trial(Trial(name=f"w{i}", project_id="p"))
    query = {"name": {"$regex": "^w"}, "status": "createdgroup"}
    taken = {
        db.fetch_and_update_trial(query, "set_trial_status", status=Status.Running).uid for _ in range(3)
    }
    assert len(taken) == 3
    with pytest.raises(ItemNotFound):
        db.fetch_and_update_trial(query, "set_trial_status", status=Status.Running)


# -------------------------------------------------------------------------------------------- storage
def test_non_finite_floats_in_json_fields_are_refused_clearly(db: Protocol) -> None:
    with pytest.raises(SchemaError, match="NaN or infinity"):
        db.new_trial(Trial(name="t", parameters={"x": math.inf}))
    with pytest.raises(SchemaError, match="NUL"):
        db.new_trial(Trial(name="t", parameters={"x": "a\x00b"}))
    assert db.fetch_trials(None) == []


def test_json_values_keep_their_types(db: Protocol) -> None:
    params = {"big": 1e20, "huge": -1e308, "tiny": 5e-324, "f": 1.0, "i": 10**30, "s": "\\u0000", "b": False}
    t = db.new_trial(Trial(name="t", parameters=params))
    assert t is not None
    db.log_trial_metadata(t, **params)
    stored = db.fetch_trials({"parameters.big": 1e20, "metadata.big": {"$gt": 1e19}})
    assert len(stored) == 1
    for got in (stored[0].parameters, stored[0].metadata):
        assert got == params and all(type(got[k]) is type(v) for k, v in params.items())


def test_steps_keep_their_type_and_a_batch_may_repeat_a_step(db: Protocol) -> None:
    t = db.new_trial(Trial(name="t"))
    assert t is not None
    db.log_trial_metric_points(
        t, [MetricPoint("m", 1, 1), MetricPoint("m", 1.5, 2.0), MetricPoint("m", 1.0, 3)]
    )
    m = db.fetch_trials(None)[0].metrics["m"]
    assert list(m) == [(1, 3), (1.5, 2.0)] and type(m.steps[0]) is int and m.latest == 3
    assert type(m.values[0]) is int


def test_reopening_keeps_data_and_a_newer_schema_is_refused(uri: str) -> None:
    import psycopg

    from unitrack.persistence.backends.sql import SQLProtocol

    with SQLProtocol(uri) as first:
        first.new_trial(Trial(name="kept"))
    with SQLProtocol(uri) as second:
        assert [t.name for t in second.fetch_trials(None)] == ["kept"]
    schema = uri.rsplit("schema=", 1)[1]
    with psycopg.connect(uri.split("?")[0], options="-csearch_path=" + schema) as conn:
        conn.execute("INSERT INTO unitrack_schema_version (version) VALUES (99)")
    with pytest.raises(StorageError, match="version 99"):
        SQLProtocol(uri)


def test_tables_of_version_1_are_migrated_with_their_points_counted(uri: str) -> None:
    import psycopg

    from unitrack.persistence.backends import sql as sql_backend

    schema = uri.rsplit("schema=", 1)[1]
    trial = Trial(name="old")
    with psycopg.connect(uri.split("?")[0], options="-csearch_path=" + schema, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # a test-made schema name: letters and digits
        conn.execute("CREATE TABLE unitrack_schema_version (version integer NOT NULL)")
        for statement in sql_backend._MIGRATIONS[0]:  # the tables as version 1 made them, with its points
            conn.execute(statement)
        conn.execute("INSERT INTO unitrack_schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO unitrack_trials (uid, hash, revision, name, tags, parameters, metadata, chronos, "
            "status_name, status_value, status_key, errors) VALUES (%s, %s, 0, 'old', '{}', '{}', '{}', '{}', "
            "'CreatedGroup', 0, 'createdgroup', '[]')",
            (trial.uid, trial.hash),
        )
        for step, value in [(0, 1.0), (1, 0.5), (None, 7.0), (None, 7.0)]:
            conn.execute(
                "INSERT INTO unitrack_metric_points (trial_uid, name, step, step_is_int, value) "
                "VALUES (%s, 'loss', %s, true, %s)",
                (trial.uid, step, value),
            )
        conn.execute(
            "INSERT INTO unitrack_metric_latest (trial_uid, name, value, first_seq) VALUES (%s, 'loss', 7.0, 1)",
            (trial.uid,),
        )
    with sql_backend.SQLProtocol(uri) as db:
        (summary,) = db.find_trial_summaries(None)
        assert summary.metrics["loss"].logged == 4 and summary.metrics["loss"].latest == 7.0
        db.log_trial_metrics(summary, step=1, loss=0.25)  # replaces step 1 through the new index
        db.log_trial_metrics(summary, loss=7.0)  # step-less points never conflict
        db.commit()
        (full,) = db.fetch_trials(None)
        assert list(full.metrics["loss"]) == [(0, 1.0), (1, 0.25), (None, 7.0), (None, 7.0), (None, 7.0)]
        assert full.metrics["loss"].logged == 6
    with psycopg.connect(uri.split("?")[0], options="-csearch_path=" + schema) as conn:
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))
        }
        (version,) = conn.execute("SELECT max(version) FROM unitrack_schema_version").fetchone()  # type: ignore[misc]
    assert version == sql_backend.SCHEMA_VERSION == 2
    assert (
        "unitrack_metric_points_key" in indexes
        and not {
            "unitrack_metric_points_step",
            "unitrack_metric_points_trial",
        }
        & indexes
    )


_STEPS = st.one_of(
    st.none(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
_VALUES = st.one_of(
    st.floats(width=64),  # NaN, infinities and -0.0 included
    st.integers(-(2**80), 2**80),
    st.booleans(),  # stored as 0 and 1, as logging stores them
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    points=st.lists(st.tuples(_STEPS, _VALUES), max_size=12), name=st.sampled_from(["loss", "ünï/☃", "a b"])
)
def test_a_bulk_copy_stores_every_point_as_logging_does(db: Protocol, points: list[Any], name: str) -> None:
    from unitrack.persistence.backends.sql import SQLProtocol

    assert isinstance(db, SQLProtocol)
    db.strict = False
    key = uuid.uuid4().hex  # every example adds its own trials to the one database
    logged = db.new_trial(Trial(name=f"logged-{key}"))
    assert logged is not None
    db.log_trial_metric_points(logged, [MetricPoint(name, s, v) for s, v in points])
    db.commit()
    (reference,) = db.fetch_trials({"uid": logged.uid})
    copy = Trial(name=f"copied-{key}", metrics=dict(reference.metrics))
    raw = Trial(name=f"raw-{key}", metrics={name: _metric(name, points)})
    assert db.insert_trials([copy, raw]) == [True, True]
    for trial in (copy, raw):  # a read trial copied whole, and a Metric built by hand with repeated steps
        (stored,) = db.fetch_trials({"uid": trial.uid})
        got, want = stored.metrics.get(name), reference.metrics.get(name)
        if want is None:
            assert got is None
            continue
        assert got is not None and _exact(got.steps) == _exact(want.steps)
        assert _exact(got.values) == _exact(want.values) and _exact([got.latest]) == _exact([want.latest])


def _metric(name: str, points: list[Any]) -> Any:
    from unitrack.persistence.structure import Metric

    return Metric(
        name, tuple(s for s, _ in points), tuple(v for _, v in points), points[-1][1] if points else None
    )


def _exact(values: Any) -> list[Any]:
    """Values with their types, NaN comparable, -0.0 told from 0.0."""
    return [(type(v).__name__, repr(v)) for v in values]


def test_a_bulk_copy_refuses_a_value_that_is_not_a_number_and_stores_nothing(db: Protocol) -> None:
    from unitrack.persistence.structure import Metric

    db.strict = False  # type: ignore[attr-defined]
    good = Trial(name="good", metrics={"loss": Metric("loss", (0, 1), (0.5, 0.25), 0.25)})
    bad = Trial(name="bad", metrics={"loss": Metric("loss", (0, 1), (0.5, "0.25"), 0.25)})  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="0.25"):
        db.insert_trials([good, bad])
    assert db.fetch_trials(None) == []
    assert db.insert_trials([good]) == [True]


def test_aliases_open_the_sql_backend(uri: str) -> None:
    for scheme in ("postgres", "cockroachdb"):
        with get_protocol(scheme + uri[len("postgresql") :]) as p:
            assert type(p).__name__ == "SQLProtocol"


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "unitrack.persistence.backends.sql", raising=False)
    with pytest.raises(MissingDependencyError, match=r"unitrack\[postgres\]"):
        get_protocol("postgresql://localhost/x")


def test_libpq_options_in_the_uri_are_passed_on(postgres_uri: str, tmp_path: Path) -> None:
    from unitrack.persistence.backends.sql import SQLProtocol

    port = postgres_uri.rsplit(":", 1)[1].split("/")[0]
    uri = pg.schema_uri(
        f"postgresql://postgres@/postgres?host=127.0.0.1&port={port}&connect_timeout=5", str(tmp_path)
    )
    with SQLProtocol(uri.replace("?schema", "&schema")) as db:
        assert db.fetch_trials(None) == []


def test_a_bad_schema_name_is_a_config_error(postgres_uri: str) -> None:
    from unitrack.errors import ConfigError
    from unitrack.persistence.backends.sql import SQLProtocol

    with pytest.raises(ConfigError, match="schema"):
        SQLProtocol(postgres_uri + "?schema=x;drop")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_without_postgresql_tests_skip_but_fail_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    env = {**os.environ, "CI": ci, pg.BIN_ENV: str(tmp_path / "nowhere")}
    test = "tests/persistence/test_sql.py::test_closed_backend_raises_storage_error"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in run.stdout and "apt-get install postgresql" in run.stdout, run.stdout


def test_closed_backend_raises_storage_error(db: Protocol) -> None:
    db.close()
    with pytest.raises(StorageError, match="closed"):
        db.fetch_trials(None)


# ------------------------------------------------------------------------------------------ processes
WORKER = textwrap.dedent(
    """
    import sys
    from unitrack.errors import ItemNotFound
    from unitrack.persistence.backends.sql import SQLProtocol
    from unitrack.persistence.structure import MetricPoint, Status
    uri, shared, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with SQLProtocol(uri, strict=False) as db:
        for start in range(0, count, 10):
            db.log_trial_metric_points(shared, [MetricPoint(name, None, v) for v in range(start, start + 10)])
        while True:
            try:
                t = db.fetch_and_update_trial({"status": "createdgroup"}, "set_trial_status", status=Status.Running)
            except ItemNotFound:
                break
            db.log_trial_metrics(t, step=0, worker=int(name[1:]))
            print(t.uid, flush=True)
    """
)


def test_processes_reserve_distinct_trials_and_write_every_value_once(db: Protocol, uri: str) -> None:
    db.new_project(Project(name="p"))
    shared = db.new_trial(Trial(name="shared", project_id="p", status=Status.Running))
    assert shared is not None
    jobs = [db.new_trial(Trial(name=f"job{i}", project_id="p")) for i in range(24)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, uri, shared.uid, f"w{k}", "200"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    reserved: list[str] = []
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        reserved += out.split()
    assert sorted(reserved) == sorted(j.uid for j in jobs if j is not None)  # each exactly once
    stored = {t.uid: t for t in db.fetch_trials(None)}
    for k in range(4):
        assert stored[shared.uid].metrics[f"w{k}"].values == tuple(range(200))
    assert all(stored[u].metrics["worker"].latest is not None for u in reserved)


def test_concurrent_auto_increment_gives_distinct_revisions(db: Protocol) -> None:
    from concurrent.futures import ThreadPoolExecutor

    first = db.new_trial(Trial(name="same"))
    assert first is not None
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda _: db.new_trial(Trial(name="same"), auto_increment=True), range(16)))
    assert sorted(t.revision for t in made if t is not None) == list(range(1, 17))
    assert [t.revision for t in db.get_trial(first)] == list(range(17))


# ------------------------------------------------------------------------- issue 13: reconnection, batching
LOGGER = textwrap.dedent(
    """
    import os, sys
    from unitrack.persistence.registry import get_protocol
    uri, uid, stop, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    db = get_protocol(uri, strict=False)
    i = 0
    while not os.path.exists(stop):
        db.log_trial_metrics(uid, v=i)  # one call per step, no step: appended in order
        i += 1
        if i % every == 0:
            db.commit()  # as flush(): returns once every value logged is in the database
            print("acked", i, flush=True)  # every value below i is acknowledged
    db.close()
    print("done", i, flush=True)
    """
)


@pytest.fixture(scope="module")
def restartable() -> Iterator[pg.PostgresServer]:
    """A PostgreSQL server of this module's own, which the tests restart."""
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing under CI: {pg.ENABLE_HINT}")
        pytest.skip(pg.ENABLE_HINT)
    with pg.postgres_instance(bin_dir) as server:
        yield server


class Loggers:
    """LOGGER processes, one per trial; a thread per process reads what each has had acknowledged."""

    def __init__(self, uri: str, uids: list[str], stop: Path, every: int) -> None:
        self.stop = stop
        self.acked = dict.fromkeys(uids, 0)
        self.done: dict[str, int] = {}
        self.procs = {
            uid: subprocess.Popen(
                [sys.executable, "-c", LOGGER, uri, uid, str(stop), str(every)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for uid in uids
        }
        self.readers = [threading.Thread(target=self._read, args=(uid,), daemon=True) for uid in uids]
        for reader in self.readers:
            reader.start()

    def _read(self, uid: str) -> None:
        stdout = self.procs[uid].stdout
        assert stdout is not None
        for line in stdout:
            parts = line.split()
            if not line.endswith("\n") or len(parts) != 2 or not parts[1].isdigit():
                continue  # the last line of a killed writer may be cut short: it acknowledged nothing
            if parts[0] == "acked":
                self.acked[uid] = int(parts[1])
            elif parts[0] == "done":
                self.done[uid] = int(parts[1])

    def wait_acked(self, least: dict[str, int], what: str) -> None:
        wait_until(lambda: all(self.acked[u] >= n for u, n in least.items()), timeout_s=120, what=what)

    def finish(self) -> dict[str, int]:
        self.stop.touch()
        for proc in self.procs.values():
            proc.wait(120)
        for reader in self.readers:
            reader.join(10)
        for proc in self.procs.values():
            assert proc.stderr is not None
            err = proc.stderr.read()
            assert proc.returncode == 0 and "Traceback" not in err, err
        return self.done

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for reader in self.readers:
            reader.join(10)
        for proc in self.procs.values():
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _values(uri: str, uid: str) -> list[float]:
    from unitrack.persistence.backends.sql import SQLProtocol

    with SQLProtocol(uri) as db:
        (trial,) = db.fetch_trials({"uid": uid})
        return list(trial.metrics["v"].values) if "v" in trial.metrics else []


def _trials(uri: str, count: int) -> list[str]:
    from unitrack.persistence.backends.sql import SQLProtocol

    with SQLProtocol(uri, strict=False) as db:
        return [t.uid for t in (db.new_trial(Trial(name=f"w{i}")) for i in range(count)) if t is not None]


def test_writers_ride_out_server_restarts_and_lose_nothing(
    restartable: pg.PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = pg.schema_uri(restartable.uri, str(tmp_path))
    uids = _trials(uri, 4)
    loggers = Loggers(uri, uids, tmp_path / "stop", every=50)
    try:
        loggers.wait_acked(dict.fromkeys(uids, 200), "every writer to have 200 values acknowledged")
        for restart in range(2):
            mark = {uid: loggers.acked[uid] + 300 for uid in uids}
            restartable.restart("fast")  # every session is ended; the server is down for a moment
            loggers.wait_acked(
                mark, f"300 more acknowledged values from each writer after restart {restart + 1}"
            )
        done = loggers.finish()
    finally:
        loggers.kill()
    for uid in uids:  # every value each writer logged, acknowledged before, during and after: once, in order
        assert _values(uri, uid) == list(range(done[uid])), uid


@pytest.mark.parametrize("seed", [13])
def test_a_killed_writer_loses_only_what_was_never_acknowledged(
    postgres_uri: str, tmp_path: Path, seed: int
) -> None:
    uri = pg.schema_uri(postgres_uri, str(tmp_path))
    (uid,) = _trials(uri, 1)
    target = random.Random(seed).randrange(100, 1500)
    loggers = Loggers(uri, [uid], tmp_path / "stop", every=37)
    try:
        loggers.wait_acked({uid: target}, f"{target} acknowledged values (seed {seed})")
        loggers.procs[uid].send_signal(signal.SIGKILL)
        loggers.procs[uid].wait()
        acked = loggers.acked[uid]
    finally:
        loggers.kill()
    stored = _values(uri, uid)
    assert stored == list(range(len(stored))), f"seed {seed}: values lost or repeated"  # a prefix, once each
    assert len(stored) >= acked, f"seed {seed}: {acked} acknowledged, {len(stored)} stored"


def _transactions(conn: Any) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0])


def _alone(conn: Any) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0]) == 0


def test_the_default_uri_batches_one_call_per_step(restartable: pg.PostgresServer, tmp_path: Path) -> None:
    import psycopg

    from unitrack.persistence.backends.sql import SQLProtocol

    with psycopg.connect(restartable.uri, autocommit=True) as admin:
        admin.execute("CREATE DATABASE batching")
    base = restartable.uri.rsplit("/", 1)[0] + "/batching"
    uri = pg.schema_uri(base, str(tmp_path))
    with SQLProtocol(uri, strict=False) as db:
        trial = db.new_trial(Trial(name="steps"))
        assert trial is not None
    with psycopg.connect(base, autocommit=True) as stats:
        wait_until(lambda: _alone(stats), what="the setup's connections to end")
        before = _transactions(stats)
        with SQLProtocol(uri, strict=False) as db:
            for step in range(2000):
                db.log_trial_metrics(trial, step=step, v=float(step))
        wait_until(lambda: _alone(stats), what="the writer's connections to end (their statistics flushed)")
        used = _transactions(stats) - before
    assert _values(uri, trial.uid) == [float(s) for s in range(2000)]
    assert used < 100, f"2000 logging calls took {used} transactions"


def test_every_sql_primitive_writes_the_buffer_first_and_retries() -> None:
    from unitrack.persistence.backends.sql import SQLProtocol
    from unitrack.persistence.protocol import PRIMITIVES

    own = {"update_trial", "insert_trial", "commit"}  # they handle the buffer and retries themselves
    missing = sorted(n for n in PRIMITIVES - own if not hasattr(getattr(SQLProtocol, n), "__wrapped__"))
    assert not missing, f"decorate these SQLProtocol primitives with @_retried(...): {missing}"
