"""User regular expressions (``$regex``, ``view -f``): linear-time matching, every problem an InvalidQueryError."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import ConfigError, InvalidQueryError, RegisterSyntaxError
from unitrack.experiment.search import compile_filter
from unitrack.persistence.patterns import MAX_PATTERN_LENGTH, UserPattern, compile_pattern
from unitrack.persistence.query import execute_query, normalize_query
from unitrack.persistence.structure import Trial

ROOT = Path(__file__).resolve().parents[2]
#: Backtracks for ever in Python's ``re`` against a trial uid (64 hex digits, then ``_0``).
CATASTROPHIC = "^([0-9a-f]+)+$"
#: What issue #12 item 14 reported as a RecursionError from ``view -f``.
DEEP_LOOKAHEAD = "(?=" * 2000 + "a" + ")" * 2000


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("a{99999999999}", "repetition count 99999999999 exceeds 1000"),
        ("a{5,2000}", "exceeds 1000"),
        ("(?=a)b", "look-around"),
        ("(?<!a)b", "look-around"),
        (r"(a)\1", "back-references"),
        (r"end\Z", r"\\z"),
        ("(", "missing \\)"),
        ("x" * (MAX_PATTERN_LENGTH + 1), f"at most {MAX_PATTERN_LENGTH}"),
        (DEEP_LOOKAHEAD, f"at most {MAX_PATTERN_LENGTH}"),
        ("(?=" * 200 + ")" * 200, "look-around"),
        ("((a{1000}){1000}){1000}", "invalid"),
    ],
)
def test_invalid_or_oversized_patterns_are_invalid_query_errors(pattern: str, fragment: str) -> None:
    with pytest.raises(InvalidQueryError, match=fragment):
        compile_pattern(pattern)
    with pytest.raises(InvalidQueryError, match=r"\$regex for 'name'"):
        normalize_query({"name": {"$regex": pattern}})


def test_a_catastrophic_pattern_matches_a_uid_in_linear_time() -> None:
    uid = Trial(name="x").uid
    assert not compile_pattern(CATASTROPHIC).search(uid)
    assert compile_pattern("^([0-9a-f]+)+_0$").search(uid)
    assert execute_query(Trial(name="x"), {"uid": {"$regex": CATASTROPHIC}}) is False


def test_repetition_counts_inside_classes_or_escaped_are_text() -> None:
    assert compile_pattern("[{99999}]").search("{")
    assert compile_pattern(r"\{99999}").search("a{99999}")
    assert compile_pattern("a{1000}").search("a" * 1000)


def test_view_filters_use_the_same_patterns() -> None:
    with pytest.raises(RegisterSyntaxError, match="position 0: bad regex: .*look-around") as info:
        compile_filter("(?=a)a")
    assert isinstance(info.value.__cause__, InvalidQueryError)
    with pytest.raises(ConfigError, match="1000"):  # a RecursionError before
        compile_filter(DEEP_LOOKAHEAD)
    assert compile_filter("lr<0.1").matches({"lr": 0.01})
    assert compile_filter(CATASTROPHIC).keys({Trial(name="x").uid: 1, "ab": 2}) == ["ab"]


@given(st.text(max_size=60))
def test_any_text_compiles_or_raises_invalid_query_error(pattern: str) -> None:
    try:
        compiled = compile_pattern(pattern)
    except InvalidQueryError:
        return
    assert isinstance(compiled, UserPattern)
    compiled.search("ab01_x" * 5)


# A grammar of patterns both engines read the same way: literals, '.', classes, groups, alternation and every
# quantifier, nested (so (a+)+ and friends appear).
_ATOMS = st.sampled_from(["a", "b", "ab", ".", "[ab]", "[^a]", r"\d", "_", "(?:a|b)"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantified = st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "*?", "+?"])).map(
        lambda p: f"(?:{p[0]}){p[1]}"
    )
    return (
        quantified
        | st.tuples(inner, inner).map("".join)
        | st.tuples(inner, inner).map(lambda p: f"(?:{p[0]}|{p[1]})")
        | inner.map(lambda p: f"({p})")
    )


_PATTERNS = st.recursive(_ATOMS, _extend, max_leaves=8)


@given(
    st.sampled_from(["", "^"]),
    _PATTERNS,
    st.sampled_from(["", "$"]),
    st.lists(st.text(alphabet="ab1_", max_size=10), max_size=5),
)
def test_patterns_find_what_python_re_finds(start: str, body: str, end: str, texts: list[str]) -> None:
    pattern = start + body + end
    compiled = compile_pattern(pattern)
    for text in texts:
        assert compiled.search(text) == (re.search(pattern, text) is not None), (pattern, text)
        assert compiled.match(text) == (re.match(pattern, text) is not None), (pattern, text)


# Each in-process backend answers a catastrophic $regex in a fresh process; before RE2 this never returned.
SCRIPT = textwrap.dedent(
    """
    import sys
    from unitrack.persistence.registry import get_protocol
    from unitrack.persistence.structure import Trial
    with get_protocol(sys.argv[1], strict=False) as db:
        trial = db.new_trial(Trial(name="t"))
        found = db.fetch_trials({"uid": {"$regex": sys.argv[2]}})
        print(len(found), len(db.fetch_trials({"uid": {"$regex": "_0$"}})), flush=True)
    """
)


@pytest.mark.parametrize("scheme", ["ephemeral", "file", "hdf5", "pickled", "postgresql"])
def test_every_backend_answers_a_catastrophic_regex(
    scheme: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if scheme == "postgresql":
        from tests.persistence import pg

        uri = pg.schema_uri(request.getfixturevalue("postgres_uri"), str(tmp_path))
    elif scheme == "ephemeral":
        uri = "ephemeral://"
    else:
        uri = f"{scheme}://{tmp_path}/db" + (
            ".json" if scheme == "file" else ".pkl" if scheme == "pickled" else ""
        )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, uri, CATASTROPHIC],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{scheme}:// did not answer {CATASTROPHIC!r} within 60 s: the regex backtracks")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]
