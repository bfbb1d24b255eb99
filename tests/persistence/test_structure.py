"""The data model: trial hash, statuses, names, aggregators."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import InvalidNameError, SchemaError
from unitrack.persistence.aggregators import (
    RingAggregator,
    StatAggregator,
    TimeSeriesAggregator,
    ValueAggregator,
    aggregator_from_json,
)
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.structure import (
    CustomStatus,
    Project,
    Status,
    Trial,
    TrialGroup,
    TrialUpdate,
    compute_hash,
    status,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"opt": {"lr": 0.1}}, {"opt": {"lr": 0.2}}),  # track ignored dict values
        ({"x": True}, {"x": 1}),  # track: True == 1 == '\x01'
        ({"x": 1}, {"x": "\x01"}),
        ({"x": 1}, {"x": 1.0}),
        ({"x": -1}, {"x": 1}),  # track crashed on negative ints
        ({"x": 2**70}, {"x": 2**70 + 1}),  # and on large ones
        ({"x": [[1, 2], [3]]}, {"x": [[1], [2, 3]]}),  # and on nested lists
        ({"x": None}, {}),
        ({"x": "a"}, {"x": ["a"]}),
    ],
)
def test_hash_distinguishes_values_track_confused(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    assert compute_hash("t", None, a) != compute_hash("t", None, b)


def test_hash_ignores_key_order_and_covers_name_and_version() -> None:
    assert compute_hash("t", "v", {"a": 1, "b": 2}) == compute_hash("t", "v", {"b": 2, "a": 1})
    assert compute_hash("t", "v1", {}) != compute_hash("t", "v2", {})
    assert compute_hash("t", None, {}) != compute_hash("u", None, {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)


_keys = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=6
)


@given(st.dictionaries(_keys, json_values, max_size=4))
def test_trial_json_round_trip_keeps_uid_and_parameters(params: dict) -> None:  # type: ignore[type-arg]
    t = Trial(name="t", parameters=params)
    back = from_json(to_json(t))
    assert isinstance(back, Trial) and back.uid == t.uid and dict(back.parameters) == params


@given(
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=200)
)
def test_trial_update_description_round_trips_through_json(text: str) -> None:
    update = TrialUpdate(description=text, metadata={"k": 1})
    assert from_json(to_json(update)) == update and not TrialUpdate(description=text).is_empty


def test_trial_update_without_description_leaves_it_alone() -> None:
    assert TrialUpdate().is_empty and TrialUpdate().description is None
    assert TrialUpdate.of_metrics(()).description is None
    old_client = from_json({"dtype": "trial_update", "metadata": {"k": 1}})  # sent before the field existed
    assert isinstance(old_client, TrialUpdate) and old_client.description is None
    assert "description" not in to_json(old_client)


@pytest.mark.parametrize("bad", [5, ["purpose"], {"text": "purpose"}])
def test_trial_update_json_with_a_non_str_description_is_refused(bad: object) -> None:
    with pytest.raises(SchemaError, match="description"):
        from_json({"dtype": "trial_update", "description": bad})


def test_trials_compare_by_uid() -> None:
    a, b = Trial(name="t", parameters={"x": 1}), Trial(name="t", parameters={"x": 1}, description="other")
    assert a == b and hash(a) == hash(b) and a.uid.endswith("_0")


def test_group_uid_depends_on_project() -> None:
    assert TrialGroup(name="g", project_id="a").uid != TrialGroup(name="g", project_id="b").uid
    with pytest.raises(SchemaError, match="needs a name and a project_id"):
        TrialGroup(name="g")


def test_project_uid_is_its_name() -> None:
    assert Project(name="p").uid == "p"


def test_status_helpers() -> None:
    assert str(Status.Running) == "running"
    assert status("completed") is Status.Completed and status(value=201) is Status.Interrupted
    custom = status("registered", 1)
    assert custom == CustomStatus("registered", 1)
    assert custom == "registered"
    assert custom == {"name": "registered", "value": 1}
    assert str(custom) == "registered"
    assert not Status.Running.is_finished and Status.Completed.is_finished


@pytest.mark.parametrize(
    "name", ["a/b", "..", ".", "", "a\x00b", "x" * 256, "tab\tname", ".hidden", ".unitrack"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        Trial(name=name)


@pytest.mark.parametrize("name", ["a=1__b=2", "run 1", "lr:0.1", "a.hidden", "ü-ñ"])
def test_valid_names(name: str) -> None:
    assert Trial(name=name).name == name


def test_numpy_scalars_are_accepted_as_plain_values() -> None:
    np = pytest.importorskip("numpy")
    t = Trial(name="t", parameters={"lr": np.float32(0.5), "n": np.int64(3)})
    assert t.parameters == {"lr": 0.5, "n": 3}


def test_stat_aggregator_drops_exactly_skip_obs() -> None:
    agg = StatAggregator(skip_obs=10)
    for x in range(20):
        agg += x
    assert agg.val["min"] == 10 and agg.val["max"] == 19 and agg.val["count"] == 10
    assert agg.val["avg"] == pytest.approx(14.5)
    assert agg.val["sd"] == pytest.approx(math.sqrt(sum((x - 14.5) ** 2 for x in range(10, 20)) / 10))
    assert aggregator_from_json(agg.to_json()).val == agg.val


def test_other_aggregators() -> None:
    v, s, r = ValueAggregator(), TimeSeriesAggregator(), RingAggregator(3)
    for x in range(5):
        v += x
        s += x
        r += x
    assert v.val == 4 and s.val == [0, 1, 2, 3, 4] and r.val == [2, 3, 4]
    assert aggregator_from_json(r.to_json()).val == [2, 3, 4]
    assert ValueAggregator.lazy(7)().val == 7
    with pytest.raises(SchemaError, match="Unknown aggregator"):
        aggregator_from_json({"kind": "median"})


@pytest.mark.parametrize("bad", [5, b"x", ["a"], "nul\x00here"])
def test_a_trial_description_is_text_without_nul(bad):
    with pytest.raises(SchemaError, match="description"):
        Trial(name="t", description=bad)
    assert Trial(name="t", description="fine").description == "fine"
