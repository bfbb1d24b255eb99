"""Hypothesis: rows appended equal rows read back, for every column kind."""

from __future__ import annotations

import struct
import tempfile

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitrack.store import OBJECT, PICKLE, Store
from unitrack.store.readers import CollectionReader

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**53), 2**53).map(float)
TEXT = st.text(max_size=300)
OBJECTS = st.recursive(
    st.none() | st.booleans() | INT64 | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)

ROWS = st.lists(
    st.fixed_dictionaries(
        {"i": INT64, "f": FLOATS, "b": st.booleans(), "s": TEXT, "o": OBJECTS, "p": OBJECTS}
    ),
    max_size=20,
)
SCHEMA = {"i": int, "f": float, "b": bool, "s": str, "o": OBJECT, "p": PICKLE}


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, h5_every_rows=st.integers(1, 8))
def test_rows_appended_equal_rows_read_back(rows, h5_every_rows):
    with tempfile.TemporaryDirectory() as out_dir:
        with Store(out_dir, "e", h5_every_rows=h5_every_rows) as store:
            table = store.add_table("t", SCHEMA)
            for r in rows:
                table.append_row(r)
            live = table.df
        for source in ("live", "reopened", "reader", "h5"):
            if source == "live":
                df = live
            elif source == "reopened":
                df = Store(out_dir, "e", mode="r")["t"].df
            elif source == "reader":
                df = CollectionReader(out_dir).df("t", append_exp_id=False, keep_serialized=["o", "p"])
            else:
                df = pd.read_hdf(f"{out_dir}/e/store.h5", "t") if rows else None
                if df is None:
                    continue
            assert len(df) == len(rows)
            assert df["i"].tolist() == [r["i"] for r in rows]
            assert [bits(x) for x in df["f"]] == [bits(r["f"]) for r in rows]
            assert df["b"].tolist() == [r["b"] for r in rows]
            if source != "h5":  # HDF5 fixed-width strings drop trailing NULs; the journal keeps them
                assert df["s"].tolist() == [r["s"] for r in rows]
            reader = Store(out_dir, "e", mode="r")["t"]
            assert [reader.get_object(v) for v in df["o"]] == [r["o"] for r in rows]
            assert [reader.get_pickle(v) for v in df["p"]] == [r["p"] for r in rows]


SHORT_TEXT = st.sampled_from(["loss", "acc", "train/loss", "", "é✓"]) | st.text(max_size=80)
ONE_TEXT_ROWS = st.lists(
    st.tuples(INT64, FLOATS, st.booleans(), SHORT_TEXT),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(ONE_TEXT_ROWS, max_size=4))
def test_a_table_with_one_text_column_reads_back_after_every_batch(batches):
    """The vectorized decoding of one-text-column tables (as the metrics table), incrementally and on reopen."""
    expected: list[tuple] = []
    with tempfile.TemporaryDirectory() as out_dir:
        with Store(out_dir, "e", h5_every_rows=None) as store:
            table = store.add_table("t", {"i": int, "f": float, "b": bool, "s": str})
            for batch in batches:
                table.append_tuples(batch)
                expected += batch
                df = table.df
                assert df["i"].tolist() == [r[0] for r in expected]
                assert [bits(x) for x in df["f"]] == [bits(r[1]) for r in expected]
                assert df["b"].tolist() == [r[2] for r in expected]
                assert df["s"].tolist() == [r[3] for r in expected]
        for df in (
            Store(out_dir, "e", mode="r")["t"].df,
            CollectionReader(out_dir).df("t", append_exp_id=False),
        ):
            assert len(df) == len(expected)
            assert df["s"].tolist() == [r[3] for r in expected]
            assert [bits(x) for x in df["f"]] == [bits(r[1]) for r in expected]
