from __future__ import annotations

import logging

import numpy as np
import pytest

from unitrack.errors import NotFoundError, SchemaError
from unitrack.store import OBJECT, PICKLE, PYTORCH_STATE, Store
from unitrack.store.readers import CollectionReader


def make(out_dir, exp_id, schema, rows):
    with Store(out_dir, exp_id) as s:
        t = s.add_table("t", schema)
        for r in rows:
            t.append_row(r)


def test_serialized_cells_stay_serialized_with_one_warning(out_dir, caplog):
    for k in range(3):
        make(out_dir, f"e{k}", {"o": OBJECT, "p": PICKLE}, [{"o": [k], "p": {"k": k}}])
    reader = CollectionReader(out_dir)
    with caplog.at_level(logging.WARNING, logger="unitrack.store.readers"):
        df = reader.df("t")
    messages = [r.getMessage() for r in caplog.records if "trusted=True" in r.getMessage()]
    assert len(messages) == 1 and "o, p" in messages[0]
    assert all(isinstance(v, str) for v in df["o"]) and all(isinstance(v, str) for v in df["p"])

    trusted = reader.df("t", trusted=True)
    assert trusted["o"].tolist() == [[0], [1], [2]]
    assert trusted["p"].tolist() == [{"k": 0}, {"k": 1}, {"k": 2}]
    partly = reader.df("t", trusted=True, keep_serialized=["p"])
    assert partly["o"].tolist() == [[0], [1], [2]] and isinstance(partly["p"].iloc[0], str)


def test_pytorch_state_is_never_decoded(out_dir):
    pytest.importorskip("torch")
    make(out_dir, "e", {"m": PYTORCH_STATE}, [{"m": {"w": 1}}])
    df = CollectionReader(out_dir).df("t", trusted=True)
    assert isinstance(df["m"].iloc[0], str)


def test_int_and_float_columns_widen(out_dir):
    make(out_dir, "a", {"x": int}, [{"x": 1}])
    make(out_dir, "b", {"x": float}, [{"x": 2.5}])
    df = CollectionReader(out_dir).df("t")
    assert df["x"].dtype == np.float64 and df["x"].tolist() == [1.0, 2.5]


def test_other_schema_mismatch_needs_union(out_dir):
    make(out_dir, "a", {"x": float}, [{"x": 1.0}])
    make(out_dir, "b", {"x": float, "y": str}, [{"x": 2.0, "y": "why"}])
    reader = CollectionReader(out_dir, log_warnings=False)
    with pytest.raises(SchemaError, match="union_schemas=True"):
        reader.df("t")
    df = reader.df("t", union_schemas=True)
    assert df["x"].tolist() == [1.0, 2.0]
    assert df["y"].isna().tolist() == [True, False]
    assert reader.df("t", skip_errors=True)["exp_id"].tolist() == ["a"]


def test_missing_table_is_logged_and_skipped(out_dir, caplog):
    make(out_dir, "a", {"x": float}, [{"x": 1.0}])
    with Store(out_dir, "b") as s:
        s.add_table("other", {"z": int})
    reader = CollectionReader(out_dir)
    with caplog.at_level(logging.WARNING, logger="unitrack.store.readers"):
        assert reader.df("t")["exp_id"].tolist() == ["a"]
    assert "exp_id b has no table 't'. Skipping." in caplog.text
    with pytest.raises(NotFoundError):
        reader.df("nothing")
    assert reader.tables == {"t": ["a"], "other": ["b"]}
    assert list(reader.schemas["t"]) == ["x"]


def test_append_exp_id_false_and_index_per_store(out_dir):
    make(out_dir, "a", {"x": float}, [{"x": 1.0}, {"x": 2.0}])
    make(out_dir, "b", {"x": float}, [{"x": 3.0}])
    df = CollectionReader(out_dir).df("t", append_exp_id=False)
    assert list(df.columns) == ["x"] and df.index.tolist() == [0, 1, 0]


def test_writing_mode_opens_stores(out_dir):
    make(out_dir, "a", {"x": float}, [{"x": 1.0}])
    with CollectionReader(out_dir, mode="a") as reader:
        reader.stores["a"]["t"].append_row({"x": 2.0})
        assert reader.df("t")["x"].tolist() == [1.0]  # rows read when the reader was made
    assert CollectionReader(out_dir).df("t")["x"].tolist() == [1.0, 2.0]


def test_folders_without_stores_are_ignored(out_dir, tmp_path):
    (tmp_path / "out" / "notastore").mkdir()
    make(out_dir, "a", {"x": float}, [{"x": 1.0}])
    assert CollectionReader(out_dir).exp_ids == ["a"]
    with pytest.raises(NotFoundError):
        CollectionReader(str(tmp_path / "missing"))


def test_stores_with_only_a_store_h5_are_read_unless_skipped(out_dir):
    import os

    import pandas as pd

    make(out_dir, "new", {"x": float}, [{"x": 1.0}])
    os.makedirs(os.path.join(out_dir, "old"))
    with pd.HDFStore(os.path.join(out_dir, "old", "store.h5"), mode="w") as h5:
        h5.put("t", pd.DataFrame({"x": [2.0]}), format="table", track_times=False)
    assert CollectionReader(out_dir).df("t")["x"].tolist() == [1.0, 2.0]
    assert CollectionReader(out_dir, read_cox_h5=False).exp_ids == ["new"]


@pytest.fixture
def two_kinds(out_dir):
    """Three runs whose metadata column ``lr`` is an int in ``a`` and ``c`` but a str in ``b``."""
    for exp_id, lr in (("a", 1), ("b", "1e-3"), ("c", 3)):
        with Store(out_dir, exp_id) as s:
            s.add_table("metadata", {"lr": type(lr), "seed": int}).append_row({"lr": lr, "seed": 0})
    return out_dir


def test_a_column_of_two_kinds_names_the_stores_of_each_and_what_to_do(two_kinds):
    reader = CollectionReader(two_kinds, log_warnings=False)
    with pytest.raises(
        SchemaError,
        match=r"Column 'lr' of table 'metadata' is int in a, c but str in b; .* Pass skip_errors=True .* exp_filter=",
    ) as info:
        reader.df("metadata")
    assert info.value.table == "metadata" and info.value.column == "lr"
    assert info.value.kinds == {"int": ["a", "c"], "str": ["b"]}
    with pytest.raises(SchemaError, match="union_schemas=True does not change that"):
        reader.df("metadata", union_schemas=True)


def test_the_remedies_named_for_a_column_of_two_kinds_work(two_kinds):
    reader = CollectionReader(two_kinds, log_warnings=False)
    matching = reader.df("metadata", skip_errors=True)
    assert matching["exp_id"].tolist() == ["a", "c"] and matching["lr"].tolist() == [1, 3]
    ints = reader.df("metadata", exp_filter=lambda exp_id: exp_id in {"a", "c"})
    strs = reader.df("metadata", exp_filter=lambda exp_id: exp_id == "b")
    assert ints["lr"].tolist() == [1, 3] and strs["lr"].tolist() == ["1e-3"]


def test_a_long_list_of_stores_is_shortened(out_dir):
    for k in range(8):
        make(out_dir, f"e{k}", {"x": int}, [{"x": k}])
    make(out_dir, "z", {"x": str}, [{"x": "s"}])
    with pytest.raises(SchemaError, match=r"is int in e0, e1, e2, e3, e4 and 3 more but str in z;"):
        CollectionReader(out_dir, log_warnings=False).df("t")
