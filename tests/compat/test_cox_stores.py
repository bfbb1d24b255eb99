"""Stores written by cox 0.2 itself (tests/data/cox) read, keep their column kinds, append and open in
cox-tensorboard, as they did under cox, and without unpickling anything unless the caller says trusted=True."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from unitrack.store import Store
from unitrack.store.readers import CollectionReader
from unitrack.store.schema import ColumnKind

from .conftest import ROOT, run_cli


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


# ------------------------------------------------------------------------------ the run catalog (unitrack view)
def _cox_rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {row["name"]: row for row in rows}


def test_unitrack_view_lists_every_cox_store(cox_out: Path) -> None:
    table = run_cli("view", str(cox_out))
    assert table.returncode == 0, table.stderr
    assert "slope-1" in table.stdout and "slope-3" in table.stdout and "2 run(s)" in table.stdout
    rows = _cox_rows(run_cli("view", str(cox_out), "--json"))
    assert set(rows) == {"slope-1", "slope-3"}
    steep = rows["slope-3"]
    # never recorded by cox: not "finished", not "running"
    assert steep["status"] == "unknown"
    # cox's metadata table (what cox-tensorboard reads) gives the parameters (shown when they differ, by their
    # short label), the last row of every other table's numeric columns the metrics
    assert steep["slope"] == 3.0 and steep["parameters.name"] == "steep-linear" and steep["augment"] is True
    assert steep["result.mx^2"] == 12.0 and steep["result.step"] == 2
    assert rows["slope-1"]["result.mx^2"] == 4.0
    filtered = _cox_rows(run_cli("view", str(cox_out), "--json", "--status", "unknown", "-f", "slope>2"))
    assert set(filtered) == {"slope-3"}
    assert not _cox_rows(run_cli("view", str(cox_out), "--json", "--status", "finished"))


def test_runs_lists_cox_stores_with_tables_and_times(cox_out: Path) -> None:
    import unitrack

    frame = unitrack.runs(cox_out)
    assert frame.index.tolist() == ["slope-1", "slope-3"]
    assert frame["name"].tolist() == ["slope-1", "slope-3"]
    assert frame["status"].tolist() == ["unknown", "unknown"]
    assert frame["metrics.result.x"].tolist() == [2.0, 2.0]
    assert frame.loc["slope-1", "tags"]["tables"] == {"metadata": 1, "objects": 1, "result": 3}
    # serialized cells (OBJECT, PICKLE, PYTORCH_STATE) are neither parameters nor metrics
    assert not [c for c in frame.columns if "config" in c or "model" in c or "history" in c]
    # created: when cox opened the store's TensorBoard writer (the event file's name); last seen: store.h5's mtime
    h5 = cox_out / "slope-1" / "store.h5"
    assert frame.loc["slope-1", "last_seen"] == datetime.fromtimestamp(h5.stat().st_mtime)
    event = next((cox_out / "slope-1" / "tensorboard").iterdir()).name
    assert frame.loc["slope-1", "created"] == datetime.fromtimestamp(int(event.split(".")[3]))
    assert frame["ended"].isna().all()  # nothing says the run ended
    assert len(unitrack.runs(cox_out, status="unknown")) == 2
    one = unitrack.runs(cox_out / "slope-3")  # one store's own folder: that run
    assert one.index.tolist() == ["slope-3"]


def test_a_mixed_root_lists_trials_and_cox_stores(cox_out: Path) -> None:
    import unitrack
    from unitrack.persistence.registry import get_protocol
    from unitrack.persistence.structure import Trial

    with get_protocol(f"hdf5://{cox_out}", strict=False) as db:
        trial = db.new_trial(Trial(name="tracked", parameters={"slope": 2.0}))
        assert trial is not None
        db.log_trial_start(trial)
        db.log_trial_metrics(trial, step=1, loss=0.25)
        db.log_trial_finish(trial, None, None, None)
    frame = unitrack.runs(cox_out).set_index("name")
    assert sorted(frame.index) == ["slope-1", "slope-3", "tracked"]
    assert frame.loc["tracked", "status"] == "finished" and frame.loc["tracked", "metrics.loss"] == 0.25
    assert frame.loc["slope-3", "status"] == "unknown" and frame.loc["slope-3", "metrics.result.mx^2"] == 12.0
    assert frame.loc[["slope-1", "slope-3", "tracked"], "parameters.slope"].tolist() == [1.0, 3.0, 2.0]
    rows = _cox_rows(run_cli("view", str(cox_out), "--json"))
    assert set(rows) == {"slope-1", "slope-3", "tracked"}


def test_a_damaged_cox_store_is_listed_as_damaged_and_hides_no_other(cox_out: Path) -> None:
    import unitrack

    (cox_out / "slope-3" / "store.h5").write_bytes(b"not HDF5 at all" * 10)
    frame = unitrack.runs(cox_out)
    assert frame.loc["slope-1", "status"] == "unknown" and frame.loc["slope-1", "metrics.result.mx^2"] == 4.0
    assert frame.loc["slope-3", "status"] == "damaged"
    error = frame.loc["slope-3", "error"]
    assert error.startswith(f"{cox_out / 'slope-3' / 'store.h5'}: ") and "HDF5" in error
    rows = _cox_rows(run_cli("view", str(cox_out), "--json", "--status", "damaged"))
    assert set(rows) == {"slope-3"}


# ------------------------------------------------------------------------- store.h5 files cox itself can read
def _cox_data(h5_path: Path) -> dict[str, object]:
    """Each table group's ``COX_DATA`` attribute, decoded by the allow-list unpickler."""
    import h5py

    from unitrack.store.h5read import plain_loads

    with h5py.File(h5_path, "r") as h5:
        return {
            name: plain_loads(bytes(h5[name].attrs["COX_DATA"]))
            for name in h5
            if "COX_DATA" in h5[name].attrs
        }


def test_unitrack_writes_the_cox_data_cox_writes_for_the_same_schema(cox_out: Path, tmp_path: Path) -> None:
    with Store(tmp_path, "mine") as store:
        store.add_table("metadata", {"slope": float, "name": str, "epochs": int, "augment": bool})
        store["metadata"].append_row({"slope": 1.0, "name": "linear", "epochs": 3, "augment": False})
        store.add_table("result", {"step": int, "x": float, "mx^2": float})
        store["result"].append_row({"step": 0, "x": 0.0, "mx^2": 0.0})
        store.add_table(
            "objects", {"config": Store.OBJECT, "history": Store.PICKLE, "model": Store.PYTORCH_STATE}
        )
        store["objects"].append_row({"config": {"a": 1}, "history": [1], "model": {"w": [1.0]}})
    written = _cox_data(tmp_path / "mine" / "store.h5")
    by_cox = _cox_data(cox_out / "slope-1" / "store.h5")
    assert set(by_cox) == {"metadata", "result", "objects"}
    assert written == by_cox
    assert list(written["result"]["schema"]) == ["step", "x", "mx^2"]  # the columns in the schema's order


def test_cox_finds_the_tables_of_a_unitrack_store_as_cox_reads_them(tmp_path: Path) -> None:
    """What ``cox.store.Table._tables_from_store`` does (pandas opens the file, each storer's COX_DATA names the
    table and its schema), on a store.h5 unitrack wrote; the original cox is run on one by
    tests/data/cox/check_unitrack_store.py."""
    import pandas as pd

    with Store(tmp_path, "mine") as store:
        store.add_table("result", {"step": int, "loss": float, "tag": str})
        for step in range(3):
            store["result"].append_row({"step": step, "loss": 1.0 / (step + 1), "tag": f"s{step}"})
        store.add_table("empty", {"a": int})
    with pd.HDFStore(tmp_path / "mine" / "store.h5", mode="r") as h5:  # trusted: this test wrote the file
        found = {}
        for key in h5.keys():
            data = h5.get_storer(key).attrs["COX_DATA"]
            found[data["name"]] = (data["schema"], h5[data["name"]])
    assert list(found) == ["result"]  # cox, too, only keeps tables that have rows
    schema, frame = found["result"]
    assert schema == {"step": int, "loss": float, "tag": str}
    assert frame["loss"].tolist() == [1.0, 0.5, 1.0 / 3] and frame["tag"].tolist() == ["s0", "s1", "s2"]


def test_rows_cox_appends_to_a_unitrack_store_survive_unitrack_reopening_it(tmp_path: Path) -> None:
    """cox appends to ``store.h5`` (``HDFStore.append``, a table it adds included); unitrack's journal does not
    hold those rows, and the next unitrack writer used to rebuild ``store.h5`` from the journal alone, losing
    them. Opened again, unitrack takes them into its journal first: every row is kept, in order."""
    import pandas as pd

    with Store(tmp_path, "run") as store:
        store.add_table("result", {"step": int, "loss": float, "tag": str})
        for step in range(3):
            store["result"].append_row({"step": step, "loss": 1.0 / (step + 1), "tag": f"s{step}"})
    h5 = tmp_path / "run" / "store.h5"
    with pd.HDFStore(h5, mode="a") as hdf:  # what cox's Table.flush_row does
        hdf.append("result", pd.DataFrame({"step": [3, 4], "loss": [0.25, 0.2], "tag": ["c3", "c4"]}))
        hdf.append("extra", pd.DataFrame({"a": [7]}))
    with Store(tmp_path, "run") as store:
        assert store["result"].nrows == 5 and "extra" in store.tables
        store["result"].append_row({"step": 5, "loss": 1 / 6, "tag": "s5"})
    with Store(tmp_path, "run", mode="r") as store:
        frame = store["result"].df
        assert frame["step"].tolist() == [0, 1, 2, 3, 4, 5]
        assert frame["tag"].tolist() == ["s0", "s1", "s2", "c3", "c4", "s5"]
        assert store["extra"].df["a"].tolist() == [7]
    reader = CollectionReader(str(tmp_path))
    assert reader.df("result")["step"].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_store_h5_whose_extra_rows_cannot_be_taken_is_kept_aside(tmp_path: Path) -> None:
    """Rows appended to store.h5 in columns the journal's table does not have are not dropped by the rebuild:
    the file is kept beside the rebuilt one, with a warning naming it."""
    import pandas as pd

    with Store(tmp_path, "run") as store:
        store.add_table("result", {"step": int, "loss": float})
        store["result"].append_row({"step": 0, "loss": 1.0})
    h5 = tmp_path / "run" / "store.h5"
    with pd.HDFStore(h5, mode="w") as hdf:  # another tool rewrote it with other columns
        hdf.append("result", pd.DataFrame({"step": [0, 1], "acc": [0.5, 0.6]}))
    with Store(tmp_path, "run") as store:
        assert store["result"].df["loss"].tolist() == [1.0]
    kept = tmp_path / "run" / "store.h5.kept-1"
    with pd.HDFStore(kept, mode="r") as hdf:  # trusted: this test wrote the file
        assert hdf["result"]["acc"].tolist() == [0.5, 0.6]
    with Store(tmp_path, "run", mode="r") as store:
        assert store["result"].df["step"].tolist() == [0]
