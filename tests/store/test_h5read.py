"""The allow-list unpickler behind h5read: plain data in, plain data out, and nothing else ever built."""

from __future__ import annotations

import os
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.store.h5read import UnsafePickleError, plain_loads

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(value=plain, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_plain_data_round_trips_at_every_protocol(value, protocol):
    assert plain_loads(pickle.dumps(value, protocol=protocol)) == value


def test_a_length_past_the_platforms_sizes_is_an_unpickling_error():
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        plain_loads(b"\x8d\x00\x00\x00\x00\x00\x00\x00\x80")


def test_bytes_pickled_before_protocol_3_are_refused():
    # protocols 0-2 pickle bytes as a call to _codecs.encode: a call, so refused (pandas never writes bytes)
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        plain_loads(pickle.dumps(b"x", protocol=2))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_builtin_types_are_allowed_but_callables_are_refused(protocol):
    assert plain_loads(pickle.dumps({"x": float, "n": int, "s": str}, protocol=protocol)) == {
        "x": float,
        "n": int,
        "s": str,
    }
    for refused in (os.system, getattr, eval, pickle.loads):
        with pytest.raises(UnsafePickleError, match="only plain data"):
            plain_loads(pickle.dumps(refused, protocol=protocol))


@given(st.binary(max_size=200))
def test_any_bytes_give_plain_data_or_an_unpickling_error(data):
    try:
        value = plain_loads(data)
    except pickle.UnpicklingError:
        return
    assert not callable(value) or value in (int, float, str, bool)
