"""pickled:// is for compatibility only: it warns, and never runs code from the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from unitrack.errors import CorruptStoreError, StorageError
from unitrack.persistence.backends.pickled import PickledProtocol
from unitrack.persistence.structure import Trial


def test_it_warns_that_it_is_for_compatibility_only(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="compatibility only"):
        PickledProtocol(f"pickled://{tmp_path}/db.pkl")


def test_a_group_writable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.pkl"
    path.write_bytes(pickle.dumps({"format": "unitrack.db/1"}))
    os.chmod(path, 0o664)
    with pytest.warns(UserWarning), pytest.raises(StorageError, match="writable by other users"):
        PickledProtocol(f"pickled://{path}")


def test_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.warns(UserWarning), pytest.raises(StorageError, match="writable by other users"):
        PickledProtocol(f"pickled://{folder}/db.pkl")


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch PWNED",))


def test_a_pickle_that_refers_to_code_is_refused_without_running_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "db.pkl"
    path.write_bytes(pickle.dumps({"format": "unitrack.db/1", "x": Evil()}))
    os.chmod(path, 0o600)
    with pytest.warns(UserWarning):
        db = PickledProtocol(f"pickled://{path}")
    with pytest.raises(CorruptStoreError, match="only plain data"):
        db.fetch_trials(None)
    assert not (tmp_path / "PWNED").exists()


def test_data_persists_in_a_private_file(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        db = PickledProtocol(f"pickled://{tmp_path}/db.pkl", strict=False)
    t = db.new_trial(Trial(name="t"))
    assert t is not None
    db.log_trial_metrics(t, step=0, x=1.0)
    assert (os.stat(tmp_path / "db.pkl").st_mode & 0o777) == 0o600
    with pytest.warns(UserWarning):
        again = PickledProtocol(f"pickled://{tmp_path}/db.pkl")
    assert again.fetch_trials(None)[0].metrics["x"].values == (1.0,)
