"""The functional API: Root, read_comments, functional_experiment, autodoc."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.experiment.functional_for_tests import hello, plain
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
