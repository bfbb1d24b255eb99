import re
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import InvalidSpecError
from unitrack.monitor.spec import Every, Trigger, UnknownTriggerError, parse_spec, parse_specs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a|b@2s", Every("a|b", 2, Trigger.STEP)),
        ("^xx|yy@100step", Every("^xx|yy", 100, Trigger.STEP)),
        ("@10s", Every("", 10, Trigger.STEP)),
        ("b@1e", Every("b", 1, Trigger.EPOCH)),
        ("c@1er", Every("c", 1, Trigger.ERA)),
        ("d|e@1eo", Every("d|e", 1, Trigger.EON)),
        ("e@1se", Every("e", 1, Trigger.SUPEREON)),
        ("e@3supereon", Every("e", 3, Trigger.SUPEREON)),
        ("loss", Every("loss")),
        ("y.*->ex.*@10s", Every("y.*", 10, Trigger.STEP, target="ex.*")),
        ("a@b@2e", Every("a@b", 2, Trigger.EPOCH)),
    ],
)
def test_parse_spec_examples(text, expected):
    assert parse_spec(text) == expected


def test_str_gives_canonical_form():
    assert str(parse_spec("^xx|yy@100s")) == "^xx|yy@100step"
    assert str(parse_spec("z->^ex$@10s")) == "z->^ex$@10step"
    assert str(parse_spec("loss")) == "loss"


def test_manual_spec_has_no_frequency():
    spec = parse_spec("hist")
    assert spec.is_manual and spec.modulo is None and spec.trigger is None


def test_parse_specs_accepts_one_or_many():
    assert parse_specs(None) == []
    assert parse_specs("a@1s") == [Every("a", 1, Trigger.STEP)]
    assert [str(s) for s in parse_specs(("a@1s", "b@2e"))] == ["a@1step", "b@2epoch"]


def test_trigger_compares_equal_to_its_name():
    assert Trigger.parse("er") is Trigger.ERA
    assert Trigger.STEP == "step"
    with pytest.raises(UnknownTriggerError, match="Unknown trigger 'x'"):
        Trigger.parse("x")
    with pytest.raises(NotImplementedError):
        Trigger.parse("week")


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("loss@", 5, "expected a number after '@'"),
        ("@3x", 2, "unknown trigger 'x'"),
        ("(@1s", 0, "missing ), unterminated subpattern"),
        ("xx@10", 5, "expected a trigger"),
        ("xx@s", 3, "expected a number"),
        ("a@0s", 2, "at least 1"),
        ("a->(b@1s", 3, "invalid regular expression"),
    ],
)
def test_bad_spec_names_spec_and_position(text, position, fragment):
    with pytest.raises(InvalidSpecError, match=re.escape(fragment)) as info:
        parse_spec(text)
    err = info.value
    assert err.spec == text and err.position == position
    assert repr(text) in str(err)
    assert isinstance(err, ValueError)


def test_error_message_points_at_bad_character():
    with pytest.raises(InvalidSpecError) as info:
        parse_spec("@3x")
    lines = str(info.value).splitlines()
    assert lines[1].strip() == "@3x"
    assert lines[2].index("^") == lines[1].index("@3x") + 2


_names = st.from_regex(r"[A-Za-z_^$.|*+?\[\]a-z0-9]{0,12}", fullmatch=True)


def _compiles(pattern):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except re.error:
        return False
    return True


@given(
    pattern=_names.filter(_compiles),
    modulo=st.integers(min_value=1, max_value=10**6),
    trigger=st.sampled_from(list(Trigger)),
    target=st.none() | _names.filter(_compiles),
)
def test_round_trip(pattern, modulo, trigger, target):
    spec = Every(pattern, modulo, trigger, target=target)
    assert parse_spec(str(spec)) == spec
    short = f"{pattern}{'' if target is None else '->' + target}@{modulo}{trigger.abbreviation}"
    assert parse_spec(short) == spec


@given(st.text(max_size=40) | st.from_regex(r"[a-z|()\[\]*]{0,6}(->[a-z()]{0,4})?@[0-9]{0,3}[a-z]{0,3}"))
def test_any_text_gives_spec_or_invalid_spec_error(text):
    # re.compile may warn (FutureWarning: possible nested set) on odd regexes; that is re's, not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            spec = parse_spec(text)
        except InvalidSpecError as err:
            assert err.spec == text and 0 <= err.position <= len(text)
        else:
            assert isinstance(spec, Every)
            assert parse_spec(str(spec)) == spec
