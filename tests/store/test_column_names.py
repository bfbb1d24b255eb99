"""Any valid column name is stored in ``store.h5`` and read back under its name (#12 item 13).

pandas' table layout names attributes after data columns (``<column>_kind``): a column ``_c`` made the attribute
``_c_kind``, which PyTables refuses, so every ``close()`` failed and store.h5 was never written. Such columns are
stored in values blocks, as pandas stores columns that are not data columns.
"""

from __future__ import annotations

import sys
import warnings

import pandas as pd
import pytest

from unitrack.experiment.functional import functional_experiment
from unitrack.store import Store
from unitrack.store import hdf5 as hdf5_module

AWKWARD = [
    "_c",
    "_f",
    "_g",
    "_v",
    "_c_x",
    "_v_",
    "index",
    "values_block_0",
    "ok",
    "ok_kind",
    "values_block_1",
]


@pytest.fixture(params=["image", "streamed"])
def build(request, monkeypatch):
    """store.h5 built in memory (small stores) or streamed into a file in chunks (large ones)."""
    if request.param == "streamed":
        monkeypatch.setattr(hdf5_module, "IMAGE_MAX_BYTES", 0)
        monkeypatch.setattr(hdf5_module, "APPEND_ROWS", 3)
    return request.param


@pytest.mark.parametrize("keep_rows", [True, False])
def test_awkward_column_names_round_trip_through_store_h5(out_dir, build, keep_rows):
    kinds = [float, int, str, bool]
    schema = {name: kinds[i % 4] for i, name in enumerate(AWKWARD)}
    rows = [
        {name: [i * 0.5, i, "é" * (i % 3) + name, i % 2 == 0][j % 4] for j, name in enumerate(AWKWARD)}
        for i in range(10)
    ]
    with Store(out_dir, "e", keep_rows=keep_rows) as store:
        store.add_table("t", schema).append_rows(rows)
        store.add_table("_c", {"_c": float}).append_row({"_c": 1.5})  # a table may be named so too
    frame = pd.read_hdf(f"{out_dir}/e/store.h5", "t")
    assert list(frame.columns) == AWKWARD
    assert frame.to_dict("records") == rows
    assert pd.read_hdf(f"{out_dir}/e/store.h5", "_c")["_c"].tolist() == [1.5]
    with Store(out_dir, "e", mode="r") as store:
        assert store["t"].df.to_dict("records") == rows


def test_a_functional_experiment_with_an_argument_named_c_closes(tmp_path, monkeypatch):
    """On the old code the run itself worked, then store.h5 failed at close ('_c_kind')."""
    module = tmp_path / "scaling_for_names.py"
    module.write_text(
        "def scale(root, _c: int = 1, x: float = 0.5):\n    root.message({'y': _c * x})\n    return _c * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from scaling_for_names import scale  # noqa: PLC0415 - written by this test

    Scale = functional_experiment(scale)
    ex = Scale(str(tmp_path / "runs"), "e1", _c=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ex() == 1.0
    assert ex.status == "finished"
    metadata = pd.read_hdf(tmp_path / "runs" / "e1" / "store.h5", "metadata")
    assert metadata[["_c", "x"]].to_dict("records") == [{"_c": 2, "x": 0.5}]
    metrics = pd.read_hdf(tmp_path / "runs" / "e1" / "store.h5", "metrics")
    assert metrics["value"].tolist() == [1.0]
    sys.modules.pop("scaling_for_names", None)
