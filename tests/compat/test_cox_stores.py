"""Stores written by cox 0.2 itself (tests/data/cox) read, keep their column kinds, append and open in
cox-tensorboard, as they did under cox, and without unpickling anything unless the caller says trusted=True."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from unitrack.store import Store
from unitrack.store.readers import CollectionReader
from unitrack.store.schema import ColumnKind

from .conftest import ROOT


def test_collection_reader_reads_every_cox_store_without_an_opt_in(cox_out: Path) -> None:
    reader = CollectionReader(cox_out)
    assert reader.exp_ids == ["slope-1", "slope-3"]
    result = reader.df("result")
    assert result["mx^2"].tolist() == [0.0, 1.0, 4.0, 0.0, 3.0, 12.0]
    assert result["step"].tolist() == [0, 1, 2, 0, 1, 2]
    assert result["exp_id"].tolist() == ["slope-1"] * 3 + ["slope-3"] * 3
    metadata = reader.df("metadata").set_index("exp_id")
    assert metadata.loc["slope-3", "name"] == "steep-linear"
    assert metadata["augment"].tolist() == [False, True] and metadata["epochs"].tolist() == [3, 3]


def test_cox_column_kinds_come_from_cox_schema(cox_out: Path) -> None:
    schemas = CollectionReader(cox_out).schemas
    assert schemas["metadata"] == {
        "slope": ColumnKind.FLOAT,
        "name": ColumnKind.STR,
        "epochs": ColumnKind.INT,
        "augment": ColumnKind.BOOL,
    }
    assert schemas["objects"] == {
        "config": ColumnKind.OBJECT,
        "history": ColumnKind.PICKLE,
        "model": ColumnKind.PYTORCH_STATE,
    }


def test_object_and_pickle_cells_decode_only_with_trusted(
    cox_out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = CollectionReader(cox_out)
    with caplog.at_level(logging.WARNING, logger="unitrack.store.readers"):
        kept = reader.df("objects")
    assert all(isinstance(v, str) for v in kept["config"]) and "trusted=True" in caplog.text
    decoded = reader.df("objects", trusted=True)
    assert decoded["config"].tolist() == [{"slope": 1.0, "layers": [2, 1]}, {"slope": 3.0, "layers": [2, 1]}]
    assert decoded["history"].tolist() == [[1.0, 0.5], [3.0, 1.5]]


def test_pytorch_state_written_by_cox_loads_as_weights(cox_out: Path) -> None:
    import torch

    store = Store(cox_out, "slope-1", mode="r")
    table = store["objects"]
    state = table.get_state_dict(table.df["model"][0])
    assert set(state) == {"weight", "bias"} and state["weight"].shape == torch.Size([1, 2])


def test_a_cox_store_reopens_with_its_schema_and_takes_appended_objects(cox_out: Path) -> None:
    with Store(cox_out, "slope-1") as store:
        assert store["objects"].schema == {
            "config": Store.OBJECT,
            "history": Store.PICKLE,
            "model": Store.PYTORCH_STATE,
        }
        store["objects"].append_row({"config": {"new": True}, "history": [9], "model": {"w": [1.0]}})
        store["result"].append_row({"step": 3, "x": 3.0, "mx^2": 9.0})
    with Store(cox_out, "slope-1", mode="r") as store:
        assert store["objects"].schema["config"] == Store.OBJECT
        assert store["result"].df["mx^2"].tolist() == [0.0, 1.0, 4.0, 9.0]
    objects = CollectionReader(cox_out).df("objects", trusted=True)
    assert objects["config"].tolist()[:2] == [{"slope": 1.0, "layers": [2, 1]}, {"new": True}]
    assert objects["history"].tolist()[1] == [9]


def test_cox_tensorboard_shows_every_cox_store(cox_out: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "unitrack.store.tensorboard_view", "--logdir", str(cox_out)]
        + ["--format-str", "slope-{slope}", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"slope-1.0-slope-1:{cox_out}/slope-1/tensorboard" in result.stdout
    assert f"slope-3.0-slope-3:{cox_out}/slope-3/tensorboard" in result.stdout
