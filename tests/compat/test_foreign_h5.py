"""A store.h5 someone else wrote runs none of its code, through every entry point (issue #12 item 9, #17 item 1).

pandas' HDF5 attributes are pickles, and PyTables unpickles them when a node is opened. Each test adds
attributes whose unpickling would create a file, then goes through one entry point and checks that no such file
appeared and that the real data was still read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unitrack.errors import ForeignStoreError
from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.structure import Trial
from unitrack.store import Store
from unitrack.store.readers import CollectionReader

from .conftest import ROOT, poison_h5, run_cli


@pytest.fixture
def crafted_cox(cox_out: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """cox's stores plus ``evil``: a copy of one whose store.h5 carries code in its attributes and COX_DATA."""
    shutil.copytree(cox_out / "slope-1", cox_out / "evil")
    markers = poison_h5(cox_out / "evil" / "store.h5", tmp_path, cox_data=True)
    return cox_out, markers


def _nothing_ran(markers: list[Path]) -> None:
    ran = [m.name for m in markers if m.exists()]
    assert not ran, f"code from the crafted store.h5 ran: {ran}"


def test_collection_reader_runs_no_code_and_reads_the_data(crafted_cox) -> None:
    out, markers = crafted_cox
    frame = CollectionReader(out).df("result")
    _nothing_ran(markers)
    assert frame[frame.exp_id == "evil"]["mx^2"].tolist() == [0.0, 1.0, 4.0]


def test_opening_the_store_to_append_runs_no_code(crafted_cox) -> None:
    out, markers = crafted_cox
    with Store(out, "evil") as store:
        store["result"].append_row({"step": 3, "x": 3.0, "mx^2": 9.0})
    with Store(out, "evil", mode="r") as store:
        assert store["result"].df["mx^2"].tolist() == [0.0, 1.0, 4.0, 9.0]
    _nothing_ran(markers)


def test_cox_tensorboard_runs_no_code(crafted_cox) -> None:
    out, markers = crafted_cox
    result = subprocess.run(
        [sys.executable, "-m", "unitrack.store.tensorboard_view", "--logdir", str(out)]
        + ["--format-str", "s{slope}", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    _nothing_ran(markers)
    assert result.returncode == 0, result.stderr
    assert "s1.0-slope-1:" in result.stdout and "s3.0-slope-3:" in result.stdout


@pytest.fixture
def crafted_trial(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An hdf5:// root whose one trial folder has its trial.json and a crafted store.h5, but no journal."""
    root = tmp_path / "runs"
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        trial = db.new_trial(Trial(name="run", parameters={"lr": 0.1}))
        assert trial is not None
        db.log_trial_metrics(trial, step=1, loss=0.5)
    (root / "run" / "store.journal").unlink()
    return root, poison_h5(root / "run" / "store.h5", tmp_path)


@pytest.mark.parametrize("command", ["view", "dump"])
def test_cli_on_a_trial_with_a_crafted_store_runs_no_code(crafted_trial, command: str) -> None:
    root, markers = crafted_trial
    result = run_cli(command, f"hdf5://{root}")
    _nothing_ran(markers)
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    if command == "dump":
        (trial,) = json.loads(result.stdout)["trials"]
        assert trial["metrics"]["loss"]["values"] == [0.5]


def test_the_backend_reads_the_trial_and_runs_no_code(crafted_trial) -> None:
    root, markers = crafted_trial
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        (trial,) = db.fetch_trials({"name": "run"})
        assert trial.metrics["loss"].values == (0.5,)
    _nothing_ran(markers)


def test_a_node_pandas_stores_as_pickles_is_refused_not_unpickled(tmp_path: Path) -> None:
    import pandas as pd

    os.makedirs(tmp_path / "out" / "fixed")
    path = tmp_path / "out" / "fixed" / "store.h5"
    pd.DataFrame({"s": ["a", "b"]}).to_hdf(str(path), key="t", format="fixed")
    markers = poison_h5_fixed(path, tmp_path)
    with pytest.raises(ForeignStoreError, match="node /t cannot be read safely.*format='table'"):
        CollectionReader(tmp_path / "out")
    _nothing_ran(markers)


def poison_h5_fixed(path: Path, marker_dir: Path) -> list[Path]:
    import tables

    from .conftest import RunsCode

    marker = marker_dir / "PWNED-fixed"
    with tables.open_file(str(path), "a") as h5:
        h5.get_node("/t")._v_attrs.evil = RunsCode(marker)
    return [marker]


def test_unitrack_view_of_cox_stores_runs_no_code(crafted_cox) -> None:
    out, markers = crafted_cox
    result = run_cli("view", str(out), "--json", "-c", "name,status,metrics.result.mx^2")
    _nothing_ran(markers)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["evil"]["status"] == "unknown" and rows["evil"]["result.mx^2"] == 4.0
