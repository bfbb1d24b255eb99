"""The file:// backend's own behaviour: journals, folding, crashes and many processes (real subprocesses)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from unitrack.errors import ConcurrentWrite, CorruptStoreError, NotFoundError, StorageError
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.serialization import to_json
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
    raw = (tmp_path / "db.json").read_bytes()
    assert raw.startswith(b'{"format": "unitrack.db/2", "sha256": "')
    data = json.loads(raw)
    assert data["trials"][0]["metrics"]["loss"]["values"] == [0.5]
    assert len(raw.splitlines()) > 6  # one trial per line: readable, diffable
    assert not (tmp_path / "db.json.jnl").exists()  # folded and removed at close
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
        assert (tmp_path / "db.json.jnl").stat().st_size < 200_000
    with FileProtocol(uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == tuple(float(i) for i in range(2000))


def test_commit_with_file_name_override_writes_a_database_of_its_own(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=0, x=1.0)
        db.commit(file_name_override=str(tmp_path / "copy.json"))
    assert json.loads((tmp_path / "copy.json").read_text())["trials"][0]["metrics"]["x"]["values"] == [1.0]
    with FileProtocol(f"file://{tmp_path}/copy.json") as copy:
        copy.log_trial_metrics(uid, step=1, x=2.0)
    with FileProtocol(db_uri) as db:  # the copy has its own id: its journal never mixes with the original
        assert db.fetch_trials(None)[0].metrics["x"].values == (1.0,)


def test_corrupt_database_raises_corrupt_store_error(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text('{"format": "unitrack.db/1", "trials": [')
    with pytest.raises(
        CorruptStoreError, match="db.json is corrupt at byte .*every run stored in it is affected"
    ):
        FileProtocol(f"file://{tmp_path}/db.json")


def test_foreign_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db.json").write_text('{"hello": "world"}')
    with pytest.raises(StorageError, match="not a unitrack"):
        FileProtocol(f"file://{tmp_path}/db.json")


def test_a_changed_digit_in_the_database_is_detected(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=0, loss=0.91)
    path = tmp_path / "db.json"
    path.write_bytes(path.read_bytes().replace(b"0.91", b"0.81"))  # track returned 0.81 without a word
    with pytest.raises(
        CorruptStoreError, match=r"db\.json is corrupt at byte \d+: its content does not match"
    ):
        FileProtocol(db_uri)


def test_a_flipped_byte_inside_the_journal_is_detected(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    db = FileProtocol(db_uri)
    for i in range(5):
        db.log_trial_metrics(uid, step=i, x=0.91)
    journal = tmp_path / "db.json.jnl"
    raw = bytearray(journal.read_bytes())
    raw[raw.index(b"0.91")] = ord("1")  # "x": 0.91 -> 1.91, the tampering track's AES layer let through
    journal.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=r"db\.json\.jnl is corrupt at byte \d+"):
        FileProtocol(db_uri)
    db._closed = True  # its journal is the damaged file: leave it as it is


def _cut_frame(uid: str) -> bytes:
    from unitrack.persistence.integrity import frame

    payload = json.dumps(
        {"op": "update_trial", "uid": uid, "update": {"dtype": "trial_update", "metrics": [["x", 9, 9.0]]}}
    ).encode()
    whole = frame(payload)
    return whole[: len(whole) // 2]


def test_a_frame_cut_by_a_killed_writer_is_passed_over_and_the_next_writer_appends_after_it(
    db_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL can cut a write that straddles a page boundary; that call never returned. Frames start with a
    newline, so the next writer's frame stays whole, and the cut one is skipped with a warning naming it."""
    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=0, x=0.0)
        with open(tmp_path / "db.json.jnl", "ab") as fh:
            fh.write(_cut_frame(uid))
        reader = FileProtocol(db_uri)
        assert reader.fetch_trials(None)[0].metrics["x"].values == (
            0.0,
        )  # cut tail: maybe still being written
        db.log_trial_metrics(uid, step=1, x=1.0)
        with caplog.at_level("WARNING"):
            assert reader.fetch_trials(None)[0].metrics["x"].values == (0.0, 1.0)
        assert re.search(r"db\.json\.jnl: skipped a cut frame at byte \d+", caplog.text)
        reader.close()
    with FileProtocol(db_uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == (0.0, 1.0)


def test_an_update_before_its_trial_in_file_name_order_is_kept(db_uri: str) -> None:
    """unitrack.db/1 replayed per-process journals in file-name order: an update filed before the insert of its
    trial was dropped. Forty processes each create a trial and die without folding; one more updates them all."""
    holder = FileProtocol(db_uri, strict=False)  # a journal that stays live, so nothing is folded meanwhile
    holder.new_trial(Trial(name="anchor"))
    script = (
        "import os, sys\n"
        "from unitrack.persistence.backends.file import FileProtocol\n"
        "from unitrack.persistence.structure import Trial\n"
        "db = FileProtocol(sys.argv[1], strict=False)\n"
        "if sys.argv[2] == 'update':\n"
        "    for t in db.fetch_trials(None):\n"
        "        db.log_trial_metrics(t, step=0, x=1.0)\n"
        "else:\n"
        "    db.new_trial(Trial(name=sys.argv[2]))\n"
        "os._exit(0)\n"  # no close: the journal is left as a killed process leaves it
    )
    for i in range(40):
        assert subprocess.run([sys.executable, "-c", script, db_uri, f"t{i}"], env=_env()).returncode == 0
    assert subprocess.run([sys.executable, "-c", script, db_uri, "update"], env=_env()).returncode == 0
    holder.close()
    with FileProtocol(db_uri) as db:
        missing = [t.name for t in db.fetch_trials(None) if "x" not in t.metrics]
    assert missing == [], f"updates dropped for {missing}"


def test_deleting_the_database_resets_it_and_a_live_writer_is_told(db_uri: str, tmp_path: Path) -> None:
    uid = _new_trial(db_uri)
    writer = FileProtocol(db_uri)
    writer.log_trial_metrics(uid, step=0, x=1.0)
    (tmp_path / "db.json").unlink()
    with FileProtocol(db_uri) as fresh:
        assert fresh.fetch_trials(None) == []  # the journal left behind belonged to the deleted database
    with pytest.raises(NotFoundError, match="No trial with uid"):
        writer.log_trial_metrics(uid, step=1, x=2.0)
    writer.close()
    with FileProtocol(db_uri) as fresh:
        assert fresh.fetch_trials(None) == []


def test_a_record_the_reader_cannot_accept_is_reported_kept_and_passed_over(
    db_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A well-formed line holding a record no reader can accept (an older writer's int project_id, an update of
    a trial this database does not hold) is reported with file, byte and reason; the rest is read, and the
    record is kept under "rejected" when the database is rewritten."""
    from unitrack.persistence.integrity import frame

    uid = _new_trial(db_uri)
    with FileProtocol(db_uri) as db:
        db.log_trial_metrics(uid, step=0, x=1.0)
        bad_group = {"op": "insert_group", "group": {"dtype": "trial_group", "name": "g", "project_id": 7}}
        unknown = {
            "op": "update_trial",
            "uid": "feed_0",
            "update": {"dtype": "trial_update", "tags": {"a": 1}},
        }
        with open(tmp_path / "db.json.jnl", "ab") as fh:
            for record in (bad_group, unknown):
                fh.write(frame(json.dumps(record).encode()))
        db.log_trial_metrics(uid, step=1, x=2.0)
        with caplog.at_level("WARNING"):
            reader = FileProtocol(db_uri)
            assert reader.fetch_trials(None)[0].metrics["x"].values == (1.0, 2.0)
            reader.close()
    assert re.search(r"db\.json\.jnl: skipped the record at byte \d+: .*project_id", caplog.text)
    assert re.search(r"update of trial 'feed_0', which this database does not hold", caplog.text)
    rejected = json.loads((tmp_path / "db.json").read_text())["rejected"]
    assert [r["record"] for r in rejected] == [bad_group, unknown]
    with FileProtocol(db_uri) as db:
        assert db.fetch_trials(None)[0].metrics["x"].values == (1.0, 2.0)


def test_a_database_of_the_previous_version_and_its_journals_open(db_uri: str, tmp_path: Path) -> None:
    """unitrack.db/1 (unsealed) with per-process journals left by killed writers: replayed once, inserts first
    (that version could not order lines across journals), then written as unitrack.db/2."""
    import zlib

    trial = Trial(name="old")
    v1 = {"format": "unitrack.db/1", "projects": [], "groups": [], "trials": [], "journals": {}}
    (tmp_path / "db.json").write_text(json.dumps(v1))
    folder = tmp_path / "db.json.journal"
    folder.mkdir()

    def line(record: dict) -> bytes:  # type: ignore[type-arg]
        payload = json.dumps(record).encode()
        return b"%08x %s\n" % (zlib.crc32(payload), payload)

    update = {
        "op": "update_trial",
        "uid": trial.uid,
        "update": {"dtype": "trial_update", "metrics": [["x", 0, 1.5]]},
    }
    (folder / "0000.jnl").write_bytes(line(update))  # sorts first, but depends on the insert below
    (folder / "ffff.jnl").write_bytes(line({"op": "insert_trial", "trial": to_json(trial)}))
    with FileProtocol(db_uri) as db:
        (got,) = db.fetch_trials(None)
        assert got.metrics["x"].values == (1.5,)
    assert not folder.exists()
    assert (tmp_path / "db.json").read_bytes().startswith(b'{"format": "unitrack.db/2"')


def test_a_track_database_opens_and_is_read_as_written(db_uri: str, tmp_path: Path) -> None:
    track = [
        {
            "uid": "p",
            "name": "p",
            "groups": [],
            "trials": [
                {
                    "uid": "h_0",
                    "hash": "h",
                    "revision": 0,
                    "name": "t",
                    "parameters": {"a": 1},
                    "metrics": {"loss": {"0": 0.5, "1": 0.25}},
                }
            ],
        }
    ]
    (tmp_path / "db.json").write_text(json.dumps(track))
    with FileProtocol(db_uri, strict=False) as db:
        (got,) = db.fetch_trials(None)
        assert got.uid == "h_0" and got.metrics["loss"].values == (0.5, 0.25)
    assert json.loads((tmp_path / "db.json").read_text()) == track  # reading it rewrote nothing


def test_a_held_lock_times_out_with_concurrent_write(db_uri: str, tmp_path: Path) -> None:
    import fcntl

    uid = _new_trial(db_uri)
    fd = os.open(tmp_path / "db.json.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a process stuck while holding the lock
    try:
        with pytest.raises(ConcurrentWrite, match=r"db\.json\.lock not acquired within 0\.2 s"):
            FileProtocol(db_uri, lock_timeout_s=0.2).log_trial_metrics(uid, x=1.0)
    finally:
        os.close(fd)


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
                db.commit()
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


def test_a_forked_child_writes_through_its_own_descriptors(db_uri: str) -> None:
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
