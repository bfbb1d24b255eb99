"""The query language: operators, paths, type rules, and a fuzz of malformed queries (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import InvalidQueryError
from unitrack.persistence.query import compile_query, execute_query, normalize_query
from unitrack.persistence.structure import Status, Trial

T = Trial(
    name="a",
    parameters={"lr": 0.01, "flag": True, "n": 3, "tags": ["x", "y"], "opt": {"name": "sgd"}},
    status=Status.Running,
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, True),
        ({}, True),
        ({"parameters.n": 3.0}, True),
        ({"parameters.flag": 1}, False),  # a bool never equals a number
        ({"parameters.n": True}, False),
        ({"parameters.flag": True}, True),
        ({"parameters.tags": "x"}, True),  # membership for list values
        ({"parameters.opt.name": {"$in": ["adam", "sgd"]}}, True),
        ({"parameters.lr": {"$gt": "a"}}, False),  # number vs string: no order
        ({"status": "running"}, True),
        ({"status": {"$in": ["completed"]}}, False),
        ({"status": {"$gte": 100, "$lt": 200}}, True),
        ({"_hash": T.hash}, True),
        ({"parameters.absent": None}, True),
        ({"parameters.absent": {"$exists": True}}, False),
        ({"name": {"$regex": "^a$"}}, True),
    ],
)
def test_queries(query: object, expected: bool) -> None:
    assert execute_query(T, query) is expected  # type: ignore[arg-type]


def test_unknown_field_names_the_known_ones() -> None:
    with pytest.raises(InvalidQueryError, match="known: .*parameters"):
        execute_query(T, {"paramters.lr": 1})


@pytest.mark.parametrize(
    "query",
    [
        {"a": {"$in": 3}},
        {"a": {"$regex": "("}},
        {"a": {"$exists": "yes"}},
        {"a..b": 1},
        {"a": {"$eq": 1, "$bad": 2}},
        [("a", 1, 2)],
        "lr<0.1",
    ],
)
def test_malformed_queries_raise_before_reading(query: object) -> None:
    with pytest.raises(InvalidQueryError):
        normalize_query(query)  # type: ignore[arg-type]


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
_conds = _scalars | st.dictionaries(
    st.sampled_from(["$eq", "$ne", "$gt", "$in", "$regex", "$exists", "$x"]),
    _scalars | st.lists(_scalars, max_size=2),
    max_size=2,
)


@given(
    st.dictionaries(
        st.sampled_from(["name", "parameters.lr", "status", "metrics.x", "a.b", ""]), _conds, max_size=3
    )
)
def test_any_query_compiles_and_runs_or_raises_invalid_query_error(query: dict) -> None:  # type: ignore[type-arg]
    try:
        compile_query(query)(T)
    except InvalidQueryError:
        pass
