"""The register grammar's escape (#12 item 14): ``\\|`` is a literal ``|``, so any text can be one value.

On the old code ``-u "{s: 'a | b'}"`` became two experiments even though quoted, and nothing could make a value
hold a ``|``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import RegisterSyntaxError
from unitrack.experiment.manager import ExperimentManager
from unitrack.experiment.sweep import escape_alternative, expand, parse_register_string

# YAML's special characters, the escape's own, and some non-ASCII text ('~' starts a distribution: left out).
ALPHABET = st.sampled_from(list("ab c|\\'\"{}[]:,#&*!%@`-?<>=") + ["é", "λ", "中"])
TEXT = st.text(ALPHABET, max_size=16)


def quoted(text: str) -> str:
    """``text`` in YAML single quotes."""
    return "'" + text.replace("'", "''") + "'"


def test_an_escaped_bar_is_one_value_quoted_or_not():
    assert expand(r"{s: 'a \| b'}", {"s": ""}) == [{"s": "a | b"}]
    assert expand(r"{s: a \| b}", {"s": ""}) == [{"s": "a | b"}]
    assert expand(r'{s: "a \\| b"}', {"s": ""}) == [{"s": "a | b"}]  # YAML's own escape, then ours
    assert expand(r"{s: 'a \| b | c'}", {"s": ""}) == [{"s": "a | b"}, {"s": "c"}]
    assert expand(r"{s: 'x\\|y'}", {"s": ""}) == [{"s": "x\\"}, {"s": "y"}]  # an escaped backslash
    # quotes alone do not protect a bar (they make collections alternatives: "[1, 2] | [3, 4]")
    assert expand("{s: 'a | b'}", {"s": ""}) == [{"s": "a"}, {"s": "b"}]


def test_values_without_a_bar_keep_their_backslashes():
    assert parse_register_string(r"{path: 'C:\data\\x', re: '\d+'}") == {
        "path": ["C:\\data\\\\x"],
        "re": ["\\d+"],
    }


def test_an_escaped_bar_inside_a_collection_alternative():
    assert parse_register_string(r"""{s: "[a, 'x\\|y'] | [b]"}""") == {"s": [["a", "x|y"], ["b"]]}


def test_register_writes_the_escaped_value_to_params_yml(tmp_path):
    (tmp_path / "defaults.yml").write_text("sep: ','\nn: 1\n")
    (tmp_path / "script.sh").write_text("#!/bin/bash\ntrue\n")
    manager = ExperimentManager(tmp_path / "root")
    manager.initialise(defaults=str(tmp_path / "defaults.yml"), script=str(tmp_path / "script.sh"))
    manager.register(string_params=r"{sep: ' \| ', n: 1 | 2}", backend="ephemeral://")
    params = [manager.load_params(p) for p in sorted(manager.experiments)]
    assert [(p["sep"], p["n"]) for p in params] == [(" | ", 1), (" | ", 2)]


@given(TEXT)
def test_any_text_escaped_is_exactly_one_value(text):
    assert parse_register_string("{s: " + quoted(escape_alternative(text)) + "}") == {"s": [text]}


def _with_a_bar(parts: tuple[str, str]) -> str:
    """A text holding a bar, without surrounding spaces (alternatives are stripped), not opening a collection."""
    text = (parts[0] + "|" + parts[1]).strip()
    return "x" + text if text[0] in "[{" else text


@given(st.lists(st.tuples(TEXT, TEXT).map(_with_a_bar), min_size=2, max_size=4))
def test_escaped_alternatives_come_back_exactly(alternatives):
    value = " | ".join(escape_alternative(a) for a in alternatives)
    assert expand("{s: " + quoted(value) + "}", {"s": ""}) == [{"s": a} for a in alternatives]


@given(st.text(st.sampled_from(list("{}s: ab|\\'\"[],")), max_size=40))
def test_any_text_with_escapes_gives_experiments_or_a_register_syntax_error(text):
    try:
        out = expand(text, {"s": ""})
    except RegisterSyntaxError:
        return
    assert all(set(o) <= {"s"} for o in out)
