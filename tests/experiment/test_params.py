"""`# @p` parameters: parsing, types, inheritance and the generated docstring."""

from __future__ import annotations

import contextlib
import io
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.experiment.experiments_for_tests import AnExperiment, Child, Typed
from unitrack.errors import InvalidParameterError
from unitrack.experiment import Experiment
from unitrack.experiment.params import Param, TypedMeta, coerce
from unitrack.experiment.utils import get_attribute_helps, get_docs


def test_class_body_and_init_parameters_are_read_with_types_and_helps():
    params = Typed._params
    assert list(params) == ["i", "f", "s", "flag", "items", "opts", "maybe", "free", "seed"]
    assert params["i"].type == "int" and params["i"].default == 3 and params["i"].help == "an int"
    assert params["maybe"].type == "int | None"
    assert params["free"].type is None
    assert params["seed"].in_init and params["seed"].default == 42
    assert "not_a_param" not in params and "_private" not in params


def test_inherited_parameters_keep_help_take_new_default_and_properties_remove_them():
    params = Child._params
    assert params["f"].default == 0.25 and params["f"].help == "a float" and params["f"].owner == "Typed"
    assert "s" not in params
    assert params["extra"].owner == "Child"
    assert Child().f == 0.25 and Child().seed == 42


def test_docstring_gets_a_parameters_section_grouped_by_defining_class():
    doc = Child.__doc__
    assert doc.startswith("A subclass.\n\nParameters:\n")
    assert "  Typed\n  -----\n    i: int=3 ~ an int\n" in doc
    assert "    f: float=0.25 ~ a float" in doc
    assert "  Child\n  -----\n    extra: str=e ~ only in the child" in doc
    assert "free=anything ~ no annotation: not checked" in doc


def test_typed_meta_works_on_any_class():
    class MyClass(metaclass=TypedMeta):
        """This class is bound to do something..."""

        a: int = 3  # @p My first attribute
        b: int = 5  # @p My second attribute

    assert MyClass.__doc__.splitlines()[-2:] == [
        "    a: int=3 ~ My first attribute",
        "    b: int=5 ~ My second attribute",
    ]
    assert get_attribute_helps(MyClass) == {"a": "My first attribute", "b": "My second attribute"}
    assert get_docs(MyClass) == ["This class is bound to do something..."]


def test_copy_params_deep_copies_mutable_defaults():
    one, two = Typed(), Typed()
    one.items.append(3)
    assert two.items == [1, 2] and Typed.items == [1, 2]
    shared = Typed(copy_params=False)
    assert shared.items is Typed.items


@pytest.mark.parametrize(
    ("type_text", "value", "expected"),
    [
        ("float", 1, 1.0),
        ("int", 2, 2),
        ("bool", True, True),
        ("tuple", [1, 2], (1, 2)),
        ("list[int]", (1,), [1]),
        ("Optional[int]", None, None),
        ("int | None", 3, 3),
        ("typing.Dict[str, int]", {"a": 1}, {"a": 1}),
        ("SomeClass", object, object),
    ],
)
def test_coerce_accepts_and_casts(type_text, value, expected):
    assert coerce(Param("p", type_text, 0, "", "C"), value) == expected


@pytest.mark.parametrize(
    ("type_text", "value"), [("float", "abc"), ("int", 1.5), ("int", True), ("bool", 1), ("str", 3)]
)
def test_coerce_names_parameter_and_expected_type(type_text, value):
    with pytest.raises(InvalidParameterError, match=rf"Parameter 'p' expects {type_text}, got"):
        coerce(Param("p", type_text, 0, "", "C"), value)


def test_overrides_are_checked_against_annotations():
    assert Typed(f=1).f == 1.0
    with pytest.raises(InvalidParameterError, match="'i' expects int"):
        Typed(i="three")
    with pytest.raises(InvalidParameterError, match="not a parameter of Typed; known: i, f"):
        Typed(nope=1)


def test_overrides_win_over_init_parameters():
    assert Typed(seed=7).seed == 7


def test_seed_example_an_experiment():
    ex = AnExperiment()
    assert (ex.a, ex.b) == ("Hello", "World!")
    assert ex.get_param_helps()["a"] == "a parameter"
    assert ex.get_param_helps()["_root"]


def test_class_without_readable_source_has_no_parameters():
    Dynamic = type(Experiment)("Dynamic", (Experiment,), {"x": 1})
    assert Dynamic._params == {}


def test_a_multi_line_string_default_renders_on_one_line():
    class Lines(Experiment):
        """Lines."""

        s3: str = "a\nb"  # @p newline
        tab: str = "x\ty\u2028z"  # @p tab and separator

    assert "    s3: str=a\\nb ~ newline" in Lines.__doc__.splitlines()
    assert "    tab: str=x\\ty\\u2028z ~ tab and separator" in Lines.__doc__.splitlines()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        Lines().main(["--help"])
    assert "    s3: str=a\\nb ~ newline" in out.getvalue().splitlines()


def _breaks_lines(text):
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


@given(st.text(), st.text().map(str.strip))
def test_every_parameter_renders_on_one_line(default, help_text):
    line = Param("p", "str", default, help_text, "C").line()
    assert len(line.splitlines()) == 1
    if not _breaks_lines(default + help_text):
        assert line == "p: str=" + default + (f" ~ {help_text}" if help_text else "")


def _help_of(help_text):
    """The --help output of an experiment with one parameter documented by ``help_text``."""
    Gen = type(Experiment)(
        "Gen",
        (Experiment,),
        {"__doc__": "Doc.", "__unitrack_params__": [Param("a", "int", 3, help_text, "Gen")]},
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        Gen().main(["--help"])
    return out.getvalue()


@given(st.text(max_size=15), st.text(max_size=15))
def test_help_with_percent_signs_is_shown_verbatim(before, after):
    help_text = f"{before}%{after}".strip()
    assert "    " + Param("a", "int", 3, help_text, "Gen").line() in _help_of(help_text).splitlines()


def test_help_with_prog_and_another_percent_sign_is_shown():
    assert "    a: int=3 ~ %(prog)s uses 50% of %o" in _help_of("%(prog)s uses 50% of %o").splitlines()
