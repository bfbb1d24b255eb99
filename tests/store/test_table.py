from __future__ import annotations

import os
import struct

import numpy as np
import pandas as pd
import pytest

from unitrack.errors import (
    InvalidNameError,
    NotFoundError,
    ReadOnlyStoreError,
    SchemaError,
    TableNotFoundError,
)
from unitrack.store import OBJECT, PICKLE, PYTORCH_STATE, Store, schema_from_dict


@pytest.fixture
def store(out_dir):
    s = Store(out_dir, "exp")
    yield s
    s.close()


def test_unknown_key_raises_schema_error_listing_declared_columns(store):
    table = store.add_table("train", {"loss": float, "epoch": int, "acc": float})
    with pytest.raises(SchemaError) as info:
        table.update_row({"acc5": 1.0})
    assert str(info.value) == (
        "Table 'train' has no column 'acc5'; declared: acc, epoch, loss. Declare it in the schema or drop the key."
    )


def test_string_false_is_not_true(store):
    table = store.add_table("t", {"flag": bool})
    with pytest.raises(SchemaError, match=r"column 'flag'.*'False'"):
        table.append_row({"flag": "False"})
    assert table.nrows == 0


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (float, 3, 3.0),
        (float, np.float32(0.5), 0.5),
        (float, np.int64(7), 7.0),
        (float, np.array(2.5), 2.5),
        (int, np.int32(-4), -4),
        (int, 6.0, 6),
        (bool, np.bool_(True), True),
        (str, np.str_("x"), "x"),
    ],
)
def test_lossless_conversions_are_accepted(store, kind, value, expected):
    table = store.add_table("t", {"c": kind})
    table.append_row({"c": value})
    got = table.df["c"].tolist()[0]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (int, 3.5),
        (int, 2**63),
        (int, "3"),
        (float, "1.0"),
        (float, 2**53 + 1),
        (bool, 1),
        (bool, "True"),
        (str, 3),
        (float, None),
        (float, [1.0]),
    ],
)
def test_lossy_conversions_raise_naming_column_and_value(store, kind, value):
    table = store.add_table("t", {"c": kind})
    with pytest.raises(SchemaError, match=r"column 'c'") as info:
        table.update_row({"c": value})
    assert repr(value)[:20] in str(info.value)


def test_torch_scalars_are_accepted(store):
    torch = pytest.importorskip("torch")
    table = store.add_table("t", {"f": float, "i": int, "b": bool})
    table.append_row({"f": torch.tensor(0.25), "i": torch.tensor(3), "b": torch.tensor(True)})
    assert table.df.iloc[0].tolist() == [0.25, 3, True]


def test_missing_column_at_flush_writes_nothing_and_keeps_row(store):
    table = store.add_table("t", {"a": float, "b": float})
    table.update_row({"a": 1.0})
    size = os.path.getsize(os.path.join(store.path, "store.journal"))
    with pytest.raises(SchemaError, match="no value for column"):
        table.flush_row()
    assert os.path.getsize(os.path.join(store.path, "store.journal")) == size
    assert table.nrows == 0
    table.update_row({"b": 2.0})
    table.flush_row()
    assert table.df.iloc[0].tolist() == [1.0, 2.0]


def test_strings_of_any_length_and_special_floats_round_trip(out_dir):
    values = [
        float("nan"),
        float("inf"),
        float("-inf"),
        -0.0,
        5e-324,
        struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],
    ]
    texts = ["", "a", "é" * 3, "x" * 100_000, "line\nbreak", "\x00mid"]
    with Store(out_dir, "e") as s:
        t = s.add_table("t", {"f": float, "s": str})
        for v, text in zip(values, texts, strict=True):
            t.append_row({"f": v, "s": text})
    with Store(out_dir, "e", mode="r") as s:
        df = s["t"].df
    assert [struct.pack("<d", v) for v in df["f"]] == [struct.pack("<d", v) for v in values]
    assert df["s"].tolist() == texts
    h5 = pd.read_hdf(os.path.join(out_dir, "e", "store.h5"), "t")
    assert [struct.pack("<d", v) for v in h5["f"]] == [struct.pack("<d", v) for v in values]
    assert h5["s"].tolist()[:5] == texts[:5]


def test_schema_persists_before_first_row(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("empty", {"a": float, "b": str})
    with Store(out_dir, "e", mode="r") as s:
        assert s["empty"].schema == {"a": float, "b": str}
        df = s["empty"].df
        assert list(df.columns) == ["a", "b"] and len(df) == 0 and df["a"].dtype == np.float64


def test_missing_table_is_not_found_and_key_error(store):
    with pytest.raises(TableNotFoundError, match="has no table 'nope'") as info:
        store["nope"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, NotFoundError)
    assert not str(info.value).startswith('"')


def test_serialized_columns(store):
    torch = pytest.importorskip("torch")
    table = store.add_table("objs", {"o": OBJECT, "p": PICKLE, "m": PYTORCH_STATE})
    model = torch.nn.Linear(2, 3)
    table.append_row({"o": {"a": [1, 2]}, "p": (1, "two"), "m": model})
    row = table.df.iloc[0]
    assert table.get_object(row["o"]) == {"a": [1, 2]}
    assert table.get_pickle(row["p"]) == (1, "two")
    state = table.get_state_dict(row["m"])
    assert torch.equal(state["weight"], model.state_dict()["weight"])
    assert torch.equal(table.get_pytorch_state(row["m"])["bias"], model.bias.detach())
    assert os.path.isfile(os.path.join(store.path, ".table_objects", row["p"]))


@pytest.mark.parametrize("uid", ["../../etc/passwd", "/etc/passwd", "a/b", "..", "x\x00", ""])
def test_object_ids_cannot_escape_table_objects(store, uid):
    table = store.add_table("objs", {"p": PICKLE})
    with pytest.raises(InvalidNameError):
        table.get_pickle(uid)
    with pytest.raises(InvalidNameError):
        table.get_state_dict(uid)


def test_symlinked_object_id_is_refused(store, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    os.symlink(secret, os.path.join(store.path, ".table_objects", "link"))
    table = store.add_table("objs", {"p": PICKLE})
    with pytest.raises(InvalidNameError, match="outside"):
        table.get_pickle("link")


def test_schema_from_dict_and_add_table_like_example(store):
    example = {"a": 1, "b": 0.5, "c": "x", "d": True, "e": [1], "f": np.float32(1)}
    assert schema_from_dict(example) == {"a": int, "b": float, "c": str, "d": bool, "e": OBJECT, "f": float}
    table = store.add_table_like_example("t", example, alternative=PICKLE)
    assert table.schema["e"] == PICKLE
    table.append_row(example)
    assert table.get_pickle(table.df["e"][0]) == [1]


def test_read_only_store_refuses_writes(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("t", {"a": float}).append_row({"a": 1.0})
    with Store(out_dir, "e", mode="r") as r:
        with pytest.raises(ReadOnlyStoreError):
            r["t"].append_row({"a": 2.0})
        with pytest.raises(ReadOnlyStoreError):
            r.add_table("u", {"a": float})
        with pytest.raises(ReadOnlyStoreError):
            _ = r.tensorboard
        assert r["t"].df["a"].tolist() == [1.0]


def test_add_table_twice(store):
    first = store.add_table("t", {"a": float})
    assert store.add_table("t", {"a": float}) is first
    with pytest.raises(SchemaError, match="already exists"):
        store.add_table("t", {"a": int})


def test_unsupported_schema_type(store):
    with pytest.raises(SchemaError, match="unsupported type"):
        store.add_table("t", {"a": list})


# ------------------------------------------------------------------------------------- many rows at once
def test_append_tuples_round_trips_exact_and_converted_values(out_dir):
    rows = [
        (1.5, "plain", True),
        (2, "ünïcode ✓", False),  # an int that is exactly a float; non-ASCII text
        (np.float32(0.25), "", np.bool_(True)),  # numpy scalars are converted
        (float("nan"), "x" * 1000, False),
    ]
    with Store(out_dir, "e") as s:
        s.add_table("t", {"v": float, "s": str, "b": bool}).append_tuples(rows)
    with Store(out_dir, "e", mode="r") as r:
        df = r["t"].df
    assert df["v"].tolist()[:3] == [1.5, 2.0, 0.25] and np.isnan(df["v"].iloc[3])
    assert df["s"].tolist() == ["plain", "ünïcode ✓", "", "x" * 1000]
    assert df["b"].tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("bad_row", "match"),
    [
        ((1.0, "a\ud800b", True), "'s'"),  # a lone surrogate cannot be stored as UTF-8
        ((1.0, 5, True), "'s'"),
        ((2**60 + 1, "a", True), "'v'"),  # no exact float64
        ((1.0, "a"), "2 values for 3 columns"),
    ],
)
def test_append_tuples_with_one_bad_row_writes_none(out_dir, bad_row, match):
    with Store(out_dir, "e") as s:
        table = s.add_table("t", {"v": float, "s": str, "b": bool})
        with pytest.raises(SchemaError, match=match):
            table.append_tuples([(0.0, "good", False), bad_row])
        assert table.nrows == 0
    with Store(out_dir, "e", mode="r") as r:
        assert r["t"].nrows == 0


def test_store_append_many_writes_rows_of_several_tables_together(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("metrics", {"step": int, "loss": float})
        s.add_table("events", {"what": str})
        s.append_many({"metrics": [(1, 0.5), (2, 0.25)], "events": [("checkpoint",)]})
        s.append_many({"metrics": [], "events": [("end",)]})
        assert (s["metrics"].nrows, s["events"].nrows) == (2, 2)
    with Store(out_dir, "e", mode="r") as r:
        assert r["metrics"].df.values.tolist() == [[1, 0.5], [2, 0.25]]
        assert r["events"].df["what"].tolist() == ["checkpoint", "end"]


def test_store_append_many_is_all_or_nothing(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("metrics", {"step": int, "loss": float})
        s.add_table("events", {"what": str})
        with pytest.raises(SchemaError, match="'what'"):
            s.append_many({"metrics": [(1, 0.5)], "events": [(3,)]})
        with pytest.raises(TableNotFoundError, match="nope"):
            s.append_many({"metrics": [(1, 0.5)], "nope": [(1,)]})
        assert (s["metrics"].nrows, s["events"].nrows) == (0, 0)
    with Store(out_dir, "e", mode="r") as r:
        assert (r["metrics"].nrows, r["events"].nrows) == (0, 0)
        with pytest.raises(ReadOnlyStoreError):
            r.append_many({"metrics": [(1, 0.5)]})
