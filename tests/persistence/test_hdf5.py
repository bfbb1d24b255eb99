"""The hdf5:// backend's own behaviour: every trial is a cox store that cox's tools read."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from unitrack.errors import CorruptStoreError, StoreLockedError
from unitrack.persistence import lifecycle
from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.registry import get_protocol, resolve_uri
from unitrack.persistence.serialization import to_json
from unitrack.persistence.structure import CustomStatus, Status, Trial, TrialUpdate
from unitrack.store import Store
from unitrack.store.contents import is_store_dir
from unitrack.store.readers import CollectionReader

ROOT = Path(__file__).resolve().parents[2]


def _sweep(root: Path, n: int = 3) -> list[str]:
    uids = []
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        for i in range(n):
            t = db.new_trial(
                Trial(name=f"lr={i}", parameters={"lr": 0.1 * i, "opt": "sgd", "layers": [64, 64]})
            )
            assert t is not None
            uids.append(t.uid)
            for step in range(5):
                db.log_trial_metrics(t, step=step, loss=1.0 / (step + 1 + i))
            db.set_trial_status(t, Status.Completed)
    return uids


def test_trials_are_cox_stores_read_by_cox_tools(tmp_path: Path) -> None:
    _sweep(tmp_path)
    reader = CollectionReader(str(tmp_path))
    metrics, params = reader.df("metrics"), reader.df("metadata")
    reader.close()
    assert sorted(set(metrics["exp_id"])) == ["lr=0", "lr=1", "lr=2"]
    assert len(metrics) == 15 and set(metrics.columns) >= {"step", "name", "value", "time", "exp_id"}
    joined = metrics.merge(params, on="exp_id")
    assert joined[joined.exp_id == "lr=2"]["lr"].iloc[0] == pytest.approx(0.2)
    assert params[params.exp_id == "lr=0"]["layers"].iloc[0] == "[64, 64]"  # non-scalars as JSON text
    with Store(tmp_path, "lr=1", mode="r") as store:
        assert store["metrics"].nrows == 5
    assert len(pd.read_hdf(tmp_path / "lr=1" / "store.h5", "metrics")) == 5


def test_embedded_default_is_hdf5_under_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNITRACK_URI", raising=False)
    assert resolve_uri() == "hdf5://runs"
    assert resolve_uri(root="/data/sweep") == "hdf5:///data/sweep"
    assert type(get_protocol("cox:///tmp/x")).__name__ == "HDF5Protocol"


def test_queries_read_summaries_not_stores(tmp_path: Path) -> None:
    _sweep(tmp_path)
    (tmp_path / "lr=0" / "store.journal").write_bytes(b"garbage")  # a store a filter never needs to open
    with HDF5Protocol(f"hdf5://{tmp_path}") as db:
        found = db.fetch_trials({"parameters.lr": {"$gt": 0.15}, "metrics.loss": {"$lt": 0.2}})
        assert [t.name for t in found] == ["lr=2"]
        assert found[0].metrics["loss"].values == pytest.approx([1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7])


def test_a_second_writer_of_a_trial_is_refused_naming_the_holder(tmp_path: Path) -> None:
    (uid,) = _sweep(tmp_path, 1)
    first = HDF5Protocol(f"hdf5://{tmp_path}")
    first.log_trial_metrics(uid, step=9, loss=0.0)
    second = HDF5Protocol(f"hdf5://{tmp_path}")
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        second.log_trial_metrics(uid, step=10, loss=0.0)
    assert second.fetch_trials({"uid": uid})[0].metrics["loss"].latest == 0.0  # readers are never refused
    first.close()
    second.log_trial_metrics(uid, step=10, loss=-1.0)
    second.close()


WRITER = """
import sys
from unitrack.persistence.backends.hdf5 import HDF5Protocol
db = HDF5Protocol(sys.argv[1])
uid, offset = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
for i in range(offset, offset + 1_000_000):
    db.log_trial_metrics(uid, x=i)
    db.log_trial_metadata(uid, last=i)
    print(i, flush=True)
"""


def test_killed_writer_loses_nothing_acknowledged_even_with_a_stale_summary(tmp_path: Path) -> None:
    (uid,) = _sweep(tmp_path, 1)
    uri = f"hdf5://{tmp_path}?summary_interval_s=3600"  # the summary is never refreshed while running
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run, kill_after in enumerate((0, 3, 250)):
        offset = run * 1_000_000
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, uid, str(offset)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        acked: set[int] = set()
        while len(acked) < kill_after:
            acked.add(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)
        acked.update(int(x) for x in proc.stdout.read().split())
        proc.stdout.close()
        proc.wait()
        with HDF5Protocol(uri) as db:
            (trial,) = db.fetch_trials({"uid": uid})
        x = [int(v) for v in trial.metrics["x"].values] if "x" in trial.metrics else []
        assert sorted(set(x)) == sorted(x), "a point was stored twice"
        assert acked <= set(x)
        if acked:
            assert trial.metadata["last"] >= max(acked)
        # the next writer process continues the same series
    with HDF5Protocol(uri) as db:
        db.log_trial_metrics(uid, x=-1)
        assert db.fetch_trials({"uid": uid})[0].metrics["x"].latest == -1


def test_revisions_get_their_own_folders(tmp_path: Path) -> None:
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        a = db.new_trial(Trial(name="run", parameters={"a": 1}))
        b = db.new_trial(Trial(name="run", parameters={"a": 1}), auto_increment=True)
        c = db.new_trial(Trial(name="run", parameters={"a": 2}))
        assert a is not None and b is not None and c is not None
        assert b.revision == 1 and b.hash == a.hash
    assert sorted(p.name for p in tmp_path.iterdir()) == [".unitrack", "run", "run_1", "run_2"]


def test_a_trial_gets_its_store_at_its_first_point(tmp_path: Path) -> None:
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        t = db.new_trial(Trial(name="queued", parameters={"lr": 0.1}))
        assert t is not None
        db.set_trial_status(t, "registered")  # a registered trial: still just a summary
        db.log_trial_arguments(t, batch=32)
        assert not (tmp_path / "queued" / "store.journal").exists()
        assert db.fetch_trials({"status": "registered"})[0].parameters == {"lr": 0.1, "batch": 32}
        db.log_trial_metrics(t, step=0, loss=1.0)
        assert (tmp_path / "queued" / "store.journal").exists()
    with Store(tmp_path, "queued", mode="r") as store:  # the parameters as merged when the store was made
        assert store["metadata"].df.to_dict("records") == [{"lr": 0.1, "batch": 32}]
    with HDF5Protocol(f"hdf5://{tmp_path}") as db:
        (trial,) = db.fetch_trials(None)
    assert trial.status == "registered" and trial.metrics["loss"].values == (1.0,)


REGISTERED = CustomStatus("registered", 1)


def _start(db: HDF5Protocol, uid: str, how: str) -> None:
    update = TrialUpdate(status=Status.Running, parameters={"batch": 32})
    if how == "update_trial":
        db.update_trial(uid, update)
    else:
        taken = db.find_and_update_trial({"status": "registered"}, update)
        assert taken is not None and taken.uid == uid and taken.status is Status.Running


@pytest.mark.parametrize("how", ["update_trial", "find_and_update_trial"])
def test_a_trial_run_without_metrics_is_a_cox_store_holding_its_parameters(tmp_path: Path, how: str) -> None:
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        t = db.new_trial(Trial(name="silent", parameters={"lr": 0.1, "opt": "sgd"}, status=REGISTERED))
        assert t is not None
        assert not is_store_dir(str(tmp_path / "silent"))
        _start(db, t.uid, how)
        assert is_store_dir(str(tmp_path / "silent"))
        db.set_trial_status(t, Status.Completed)
    reader = CollectionReader(str(tmp_path))
    try:
        params = reader.df("metadata")
    finally:
        reader.close()
    # The parameters merged by the update that started the trial are in its one-row table.
    assert params.to_dict("records") == [{"lr": 0.1, "opt": "sgd", "batch": 32, "exp_id": "silent"}]
    with Store(tmp_path, "silent", mode="r") as store:
        assert store["metrics"].nrows == 0
    with HDF5Protocol(f"hdf5://{tmp_path}") as db:
        (trial,) = db.fetch_trials(None)
    assert trial.status is Status.Completed and trial.metrics == {}
    assert trial.parameters == {"lr": 0.1, "opt": "sgd", "batch": 32}


def test_a_trial_inserted_already_finished_is_a_cox_store(tmp_path: Path) -> None:
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        db.new_trial(Trial(name="copied", parameters={"lr": 0.5}, status=Status.Completed))
    with Store(tmp_path, "copied", mode="r") as store:
        assert store["metadata"].df.to_dict("records") == [{"lr": 0.5}]


def test_a_registered_only_trial_has_no_store(tmp_path: Path) -> None:
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        t = db.new_trial(Trial(name="waiting", parameters={"lr": 0.1}, status=REGISTERED))
        assert t is not None
        db.update_trial(t.uid, TrialUpdate(status=REGISTERED, metadata={"status": "registered"}))
        db.log_trial_arguments(t, batch=32)
        assert db.fetch_trials(None)[0].status == REGISTERED
    assert sorted(p.name for p in (tmp_path / "waiting").iterdir()) == ["trial.json"]
    reader = CollectionReader(str(tmp_path))
    try:
        assert reader.exp_ids == []
    finally:
        reader.close()


def test_a_description_update_is_a_trial_log_row_replayed_by_other_readers(tmp_path: Path) -> None:
    uri = f"hdf5://{tmp_path}?summary_interval_s=3600"  # the writer's summary stays stale
    with HDF5Protocol(uri, strict=False) as writer:
        t = writer.new_trial(Trial(name="run", description="first"))
        assert t is not None
        writer.log_trial_metrics(t, step=0, loss=1.0)
        writer.update_trial(t.uid, TrialUpdate(description="second"))
        with HDF5Protocol(uri) as reader:
            assert reader.fetch_trials(None)[0].description == "second"
        with Store(tmp_path, "run", mode="r") as store:
            assert '"description": "second"' in store["trial_log"].df["update"].iloc[-1]
    with HDF5Protocol(uri) as db:  # and the summary written at close says so
        assert db.fetch_trials({"description": "second"})[0].uid == t.uid


def test_a_root_written_by_the_previous_version_opens_and_keeps_its_trials_unique(tmp_path: Path) -> None:
    """Unsealed trial.json and index.json, and the old trials.log: read as written; the trial index is rebuilt
    from the folders, so inserting an existing trial again is still refused."""
    root = tmp_path / "runs"
    trial = Trial(name="old", parameters={"lr": 0.5})
    (root / "old").mkdir(parents=True)
    (root / ".unitrack").mkdir()
    summary = {**to_json(trial), "writers": {}, "log_rows": 0, "created": 1}
    (root / "old" / "trial.json").write_text(json.dumps(summary))
    index = {
        "format": "unitrack.db/1",
        "projects": [{"dtype": "project", "name": "p"}],
        "groups": [],
        "trials": [],
    }
    (root / ".unitrack" / "index.json").write_text(json.dumps(index, indent=1))
    (root / ".unitrack" / "trials.log").write_text(f"{trial.uid}\told\n")
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        assert [t.parameters["lr"] for t in db.fetch_trials(None)] == [0.5]
        assert [p.name for p in db.fetch_projects(None)] == ["p"]
        assert db.new_trial(Trial(name="old", parameters={"lr": 0.5})) is None
        db.log_trial_metrics(trial, step=0, loss=1.0)
    with HDF5Protocol(f"hdf5://{root}") as db:
        (got,) = db.fetch_trials(None)
        assert got.metrics["loss"].values == (1.0,)
    assert (
        (root / "old" / "trial.json").read_bytes().startswith(b'{"format": "unitrack.trial/1", "sha256": "')
    )


def test_a_damaged_summary_gives_a_damaged_run_and_a_clear_error_to_a_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bit-flipped trial.json gave ``KeyError: 'uid'`` and a traceback (issue #12 item 14)."""
    root = tmp_path / "runs"
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        good = db.new_trial(Trial(name="good"))
        bad = db.new_trial(Trial(name="bad"))
        assert good is not None and bad is not None
    path = root / "bad" / "trial.json"
    path.write_bytes(path.read_bytes().replace(b'"uid"', b'"uie"'))
    with caplog.at_level("WARNING"), HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        listed = {t.name: t for t in db.fetch_trials(None)}
        assert lifecycle.status_word(listed["bad"].status) == "damaged"
        assert listed["bad"].uid == bad.uid
        assert listed["bad"].metadata["damage"] == {
            "file": str(path),
            "reason": "its content does not match the sha256 on its first line",
        }
        assert listed["good"].status == good.status
        assert [t.name for t in db.fetch_trials({"status": {"$in": ["damaged"]}})] == ["bad"]
        with pytest.raises(CorruptStoreError, match=r"bad/trial\.json is corrupt at byte \d+"):
            db.log_trial_metrics(bad, x=1.0)
    assert "trial bad is damaged" in caplog.text


def test_a_log_row_the_reader_cannot_accept_is_reported_and_the_others_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial_log row that decodes but is not an update this version accepts (item 8): reported with the
    store, the row and the reason; the rows around it apply."""
    root = tmp_path / "runs"
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        trial = db.new_trial(Trial(name="t", status=Status.Running))  # running: it has a store
        assert trial is not None
        db.log_trial_metadata(trial, a=1)
    with Store(root, "t", mode="a") as store:
        store["trial_log"].append_row({"update": json.dumps({"dtype": "trial_update", "errors": [1, 2]})})
        store["trial_log"].append_row({"update": json.dumps({"dtype": "trial_update", "metadata": {"b": 2}})})
    with caplog.at_level("WARNING"), HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        (got,) = db.fetch_trials(None)
        assert got.metadata == {"a": 1, "b": 2}
    assert re.search(r"runs/t: skipped row 1 of table trial_log: .*errors", caplog.text)
