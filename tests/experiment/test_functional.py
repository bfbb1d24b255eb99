"""The functional API: Root, read_comments, functional_experiment, autodoc."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.experiment.functional_for_tests import hello, plain, shared_line
from unitrack.errors import InvalidParameterError
from unitrack.experiment import Experiment
from unitrack.experiment.functional import Root, functional_experiment, read_comments, read_params


def test_root_is_an_experiment_under_another_name(tmp_path):
    root = Root(str(tmp_path), "ex1")
    assert isinstance(root, Experiment) and root.directory == str(tmp_path / "ex1")
    root.message({"time": 1.0})
    assert root.messages == {"time": 1.0}


def test_read_comments_joins_continuation_lines():
    assert read_comments(hello).splitlines() == [
        "    a: str=Hello ~ the first argument",
        "    b: int=3 ~ the second argument",
        "    c=None",
    ]
    assert [p.name for p in read_params(plain)] == ["x"] and read_params(plain)[0].help == "a float"


def test_a_comment_documents_only_the_last_argument_on_its_line():
    assert {p.name: p.help for p in read_params(shared_line)} == {"x": "", "y": "y is"}


_modules = itertools.count()
_COMMENT = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), max_size=12
).filter(lambda t: not t.strip().startswith("@"))


@st.composite
def argument_layouts(draw):
    """Lines of arguments: ``(args, comment or None, continuation comments, on the def line)``."""
    lines = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        n_args = draw(st.integers(min_value=1, max_value=3))
        comment = draw(st.none() | _COMMENT)
        more = draw(st.lists(_COMMENT, max_size=2)) if comment is not None else []
        multiline = draw(st.lists(st.booleans(), min_size=n_args, max_size=n_args))
        lines.append((n_args, comment, more, multiline))
    return lines, draw(st.booleans()), draw(st.booleans())


def _expected_help(comment, more):
    parts = [p.strip() for p in (comment, *more)]
    return " ".join(p for p in parts if p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argument_layouts())
def test_comments_go_to_the_last_argument_of_their_line(layout):
    lines, first_on_def_line, with_at_p = layout
    source, expected, index = [], {}, 0
    for number, (n_args, comment, more, multiline) in enumerate(lines):
        names = [f"a{index + k}" for k in range(n_args)]
        index += n_args
        defaults = [f"(\n        {k},\n    )" if wide else str(k) for k, wide in enumerate(multiline)]
        text = " ".join(f"{n}={d}," for n, d in zip(names, defaults, strict=True))
        if comment is not None:
            text += f"  # {'@p ' if with_at_p else ''}{comment}"
        source.append(text)
        source += [f"# {m}" for m in more]
        expected.update(dict.fromkeys(names[:-1], ""))
        expected[names[-1]] = _expected_help(comment, more) if comment is not None else ""
        if number == 0 and first_on_def_line:
            source[0] = "def gen(root, " + source[0]
    if not first_on_def_line:
        source.insert(0, "def gen(\n    root,")
    body = "\n    ".join(source)
    module_text = f"{body}\n):\n    return None\n"
    name = f"_generated_functional_{next(_modules)}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(module_text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            assert {p.name: p.help for p in read_params(module.gen)} == expected, module_text
        finally:
            sys.modules.pop(name, None)


def test_autodoc_appends_parameters_to_the_docstring():
    assert hello.__doc__ == "Say hello.\n\nParameters:\n" + read_comments(hello)
    assert hello.autodocs


def test_functional_experiment_builds_a_class(tmp_path):
    Hello = functional_experiment(hello)
    assert issubclass(Hello, Root) and Hello.__name__ == "hello"
    assert Hello.fn == ("tests.experiment.functional_for_tests", "hello")
    assert Hello.__doc__.count("Parameters:") == 1
    ex = Hello(str(tmp_path), "ex1", b=2)
    assert ex() == "HelloHello"
    assert (tmp_path / "ex1" / "out.txt").read_text() == "HelloHello"
    assert ex.messages == {"length": 10} and ex.status == "finished"
    assert ex.version["function"] == "hello" and "class" not in ex.version
    with pytest.raises(InvalidParameterError, match="'b' expects int"):
        Hello(b="x")


def test_functional_docstring_is_generated_without_autodoc():
    Plain = functional_experiment(plain)
    assert "x: float=1.5 ~ a float" in Plain.__doc__


def test_legacy_tuple_form():
    Exp, nothing = functional_experiment(plain)
    assert nothing is None and issubclass(Exp, Root)


def test_functional_experiment_has_the_same_command_line(tmp_path, subprocess_env):
    done = subprocess.run(
        [sys.executable, "-m", "unitrack.experiment.launch", "tests.experiment.functional_for_tests:hello",
         "-u", "{a: Hi, b: 2}", "-x", str(tmp_path / "ex1")],
        env=subprocess_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ex1" / "out.txt").read_text() == "HiHi"
