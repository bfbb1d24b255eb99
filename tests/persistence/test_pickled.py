"""pickled:// is for compatibility only: it warns, and never runs code from the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from unitrack.errors import CorruptStoreError, StorageError
from unitrack.persistence.backends.pickled import PickledProtocol
from unitrack.persistence.serialization import to_json
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
    with pytest.warns(UserWarning), pytest.raises(CorruptStoreError, match="only plain data"):
        PickledProtocol(f"pickled://{path}")  # refused when opened, before any call
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


def _file_of_another_user(tmp_path: Path) -> Path:
    """A pickled database owned by someone else: chown'ed to nobody when the tests run as root, else a
    root-owned system file (both real files of another owner)."""
    if os.geteuid() != 0:
        return Path("/etc/passwd")
    path = tmp_path / "theirs" / "db.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"format": "unitrack.db/1", "projects": [], "groups": [], "trials": []}))
    os.chmod(path, 0o644)  # readable by all, writable only by its owner: the case track opened without a word
    os.chown(path, 65534, 65534)
    return path


def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """The README says so; the first version checked write permission only (issue #12 item 10)."""
    path = _file_of_another_user(tmp_path)
    with pytest.warns(UserWarning), pytest.raises(StorageError) as caught:
        PickledProtocol(f"pickled://{path}")
    message = str(caught.value)
    assert f"Refusing pickled database {path}: it belongs to" in message
    assert "not to you" in message and "Copy it into a folder you own" in message


def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        folder = tmp_path / "theirs"
        folder.mkdir()
        os.chmod(folder, 0o755)
        os.chown(folder, 65534, 65534)
    elif os.environ.get("CI") == "true":
        pytest.fail("CI runs as root (.ci/run installs packages), which this test needs to chown a folder")
    else:
        pytest.skip("needs root to give a folder to another user")
    with pytest.warns(UserWarning), pytest.raises(StorageError, match=r"its folder .* belongs to"):
        PickledProtocol(f"pickled://{folder}/db.pkl")


def test_a_file_of_the_first_version_opens_and_is_sealed_when_written(tmp_path: Path) -> None:
    path = tmp_path / "db.pkl"
    trial = Trial(name="t")
    data = {
        "format": "unitrack.db/1",
        "projects": [],
        "groups": [],
        "trials": [{**to_json(trial), "writers": {}}],
    }
    path.write_bytes(pickle.dumps(data))
    os.chmod(path, 0o600)
    with pytest.warns(UserWarning):
        db = PickledProtocol(f"pickled://{path}", strict=False)
    assert [t.uid for t in db.fetch_trials(None)] == [trial.uid]
    db.log_trial_metrics(trial, x=1.0)
    assert pickle.loads(path.read_bytes())["format"] == "unitrack.pickled/2"  # noqa: S301 - our own file
    with pytest.warns(UserWarning):
        again = PickledProtocol(f"pickled://{path}")
    assert again.fetch_trials(None)[0].metrics["x"].values == (1.0,)


def test_a_changed_byte_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        db = PickledProtocol(f"pickled://{tmp_path}/db.pkl", strict=False)
    trial = db.new_trial(Trial(name="t"))
    assert trial is not None
    db.log_trial_metrics(trial, x=0.91)
    raw = bytearray((tmp_path / "db.pkl").read_bytes())
    raw[raw.index(b"\x8c\x01t\x94") + 2] ^= 1  # the trial's name inside the sealed data: "t" -> "u"
    (tmp_path / "db.pkl").write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=r"db\.pkl is corrupt at byte 0: its data does not match"):
        db.fetch_trials(None)
