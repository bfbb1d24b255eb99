"""The file:// backend's own behaviour: journals, folding, crashes and many processes (real subprocesses)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest

from unitrack.errors import CorruptStoreError, StorageError
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.structure import Status, Trial

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from unitrack.persistence.backends.file import FileProtocol
uri, uid, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
db = FileProtocol(uri, strict=False, eager=False)
print("ready", flush=True)
for i in range(count):
    db.log_trial_metrics(uid, **{name: i})
    print(i, flush=True)
db.close()
"""

RESERVER = """
import sys
from unitrack.errors import ItemNotFound
from unitrack.persistence.backends.file import FileProtocol
db = FileProtocol(sys.argv[1])
taken = []
while True:
    try:
        t = db.fetch_and_update_trial({"status": "createdgroup"}, "set_trial_status", status="running")
    except ItemNotFound:
        break
    taken.append(t.name)
db.close()
print(" ".join(taken), flush=True)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=_env()
    )


@pytest.fixture
def db_uri(tmp_path: Path) -> str:
    return f"file://{tmp_path}/db.json"


def _new_trial(uri: str, name: str = "shared") -> str:
    with FileProtocol(uri, strict=False) as db:
        trial = db.new_trial(Trial(name=name))
        assert trial is not None
        return trial.uid


def test_data_survives_reopen_and_the_json_is_readable(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=1, loss=0.5)
        db.log_trial_metadata(uid, host="h")
    data = json.loads((tmp_path / "db.json").read_text())
    assert data["format"] == "unitrack.db/1"
    assert data["trials"][0]["metrics"]["loss"]["values"] == [0.5]
    assert not list((tmp_path / "db.json.journal").glob("*.jnl"))  # folded and removed at close
    assert (tmp_path / "db.json.lock").exists()  # the lock file is never deleted


def test_second_process_sees_writes_before_close(db_uri: str) -> None:
    uid = _new_trial(db_uri)
    writer = FileProtocol(db_uri)
    reader = FileProtocol(db_uri)
    writer.log_trial_metrics(uid, step=0, x=1.0)
    assert reader.fetch_trials({"uid": uid})[0].metrics["x"].values == (1.0,)
    writer.close()
    reader.close()


def test_journal_is_folded_when_it_grows(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/db.json?journal_mb=0.01"
    uid = _new_trial(uri)
    with FileProtocol(uri) as db:
        for i in range(2000):
            db.log_trial_metrics(uid, step=i, x=float(i))
        assert (tmp_path / "db.json").stat().st_size > 10_000  # folded while running, not only at close
        journals = list((tmp_path / "db.json.journal").glob("*.jnl"))
        assert len(journals) == 1 and journals[0].stat().st_size < 200_000
    with FileProtocol(uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == tuple(float(i) for i in range(2000))


def test_commit_with_file_name_override_writes_a_copy(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=0, x=1.0)
        db.commit(file_name_override=str(tmp_path / "copy.json"))
    assert json.loads((tmp_path / "copy.json").read_text())["trials"][0]["metrics"]["x"]["values"] == [1.0]


def test_corrupt_database_raises_corrupt_store_error(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text('{"format": "unitrack.db/1", "trials": [')
    with pytest.raises(CorruptStoreError, match="db.json is corrupt at byte"):
        FileProtocol(f"file://{tmp_path}/db.json")


def test_foreign_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text('{"hello": "world"}')
    with pytest.raises(StorageError, match="not a unitrack"):
        FileProtocol(f"file://{tmp_path}/db.json")


def test_a_flipped_byte_inside_a_journal_is_detected(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    db = FileProtocol(db_uri)
    for i in range(5):
        db.log_trial_metrics(uid, step=i, x=0.91)
    journal = next((tmp_path / "db.json.journal").glob("*.jnl"))
    raw = bytearray(journal.read_bytes())
    raw[raw.index(b"0.91")] = ord("1")  # "loss": 0.91 -> 1.91, the tampering track's AES layer let through
    journal.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=r"\.jnl is corrupt at byte \d+"):
        FileProtocol(db_uri)
    os.close(db._journal.fd)  # type: ignore[union-attr]


def test_a_torn_last_line_of_a_dead_journal_is_dropped_with_a_warning(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    folder = tmp_path / "db.json.journal"
    folder.mkdir(exist_ok=True)
    from unitrack.persistence.backends.file import _encode_line

    line = _encode_line(
        {"op": "update_trial", "uid": uid, "update": {"dtype": "trial_update", "metrics": [["x", 0, 1.0]]}}
    )
    (folder / "deadbeef.jnl").write_bytes(line + line[: len(line) // 2])  # a writer cut off mid-line
    with FileProtocol(db_uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == (1.0,)
        with pytest.warns(RuntimeWarning, match=r"deadbeef\.jnl: dropped a torn last record at byte \d+"):
            db.commit()
    assert not (folder / "deadbeef.jnl").exists()
    with FileProtocol(db_uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == (1.0,)


def _commit_allowing_torn_tails(db: FileProtocol) -> None:
    # SIGKILL can cut a line that straddles a page boundary (the kernel checks for a fatal signal between
    # page copies); that call never returned, and the fold drops the torn tail with a warning naming it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db.commit()
    for w in caught:
        assert "dropped a torn last record" in str(w.message), str(w.message)


def test_writers_killed_at_random_moments_lose_nothing_acknowledged(db_uri: str) -> None:
    """SIGKILL a writer 60 times, each after a seeded random number of acknowledged calls."""
    rng = random.Random(20261121)
    uid = _new_trial(db_uri)
    acked: dict[str, set[int]] = {}
    for k in range(60):
        name = f"w{k}"
        proc = _spawn(WRITER, db_uri, uid, name, "100000")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        kill_after = rng.choice([0, 1, 2, rng.randrange(3, 50), rng.randrange(50, 400)])
        seen: set[int] = set()
        while len(seen) < kill_after:
            seen.add(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # acknowledgements already in the pipe
        seen.update(int(x) for x in rest.split())
        proc.stdout.close()
        proc.wait()
        acked[name] = seen
        if k % 15 == 14:
            with FileProtocol(db_uri) as db:  # fold now and then: dead journals get folded and deleted
                _commit_allowing_torn_tails(db)
    with FileProtocol(db_uri) as db:  # opens without any repair step
        metrics = db.fetch_trials({"uid": uid})[0].metrics
    for name, seen in acked.items():
        values = metrics[name].values if name in metrics else ()
        counts = Counter(values)
        assert all(counts[i] == 1 for i in seen), f"{name}: an acknowledged value is missing or duplicated"
        assert all(c == 1 for c in counts.values()), f"{name}: a value was stored twice"
        assert set(values) <= set(range(max(seen, default=-1) + 2)), f"{name}: a value nobody wrote"


def test_sixteen_processes_write_every_value_exactly_once(db_uri: str) -> None:
    """1/10 of the load benchmark: 16 processes x 1,000 values into one database."""
    uid = _new_trial(db_uri)
    procs = [_spawn(WRITER, db_uri, uid, f"writer{w}", "1000") for w in range(16)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
    with FileProtocol(db_uri) as db:
        metrics = db.fetch_trials({"uid": uid})[0].metrics
    for w in range(16):
        assert sorted(metrics[f"writer{w}"].values) == list(range(1000))


def test_concurrent_workers_reserve_distinct_trials(db_uri: str) -> None:
    with FileProtocol(db_uri, strict=False) as db:
        for i in range(40):
            db.new_trial(Trial(name=f"job{i}"))
    procs = [_spawn(RESERVER, db_uri) for _ in range(6)]
    taken: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        taken.extend(out.split())
    assert sorted(taken) == sorted(f"job{i}" for i in range(40))
    with FileProtocol(db_uri) as db:
        assert all(t.status is Status.Running for t in db.fetch_trials(None))


def test_forked_child_writes_its_own_journal(db_uri: str) -> None:
    uid = _new_trial(db_uri)
    db = FileProtocol(db_uri)
    db.log_trial_metrics(uid, x=1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            db.log_trial_metrics(uid, x=2)
            db.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    db.log_trial_metrics(uid, x=3)
    db.close()
    with FileProtocol(db_uri) as again:
        assert sorted(again.fetch_trials(None)[0].metrics["x"].values) == [1, 2, 3]
