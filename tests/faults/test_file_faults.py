"""file:// under faults: 16 concurrent writers, 200 SIGKILLs, exclusive reservations, a deleted database and
damaged files (issue #12 items 1 and 6). Workers are forked (tests/faults/harness.py)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from tests.faults.harness import (
    Ack,
    Gate,
    Worker,
    exactly_once,
    flipped_in_place,
    fork_worker,
    kill_at_random_moments,
    writers_beside_readers,
)
from unitrack.errors import ItemNotFound, StorageError
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.structure import Status, Trial

WRITERS = 16


def _write_own_and_shared(ack: Ack, uri: str, shared: str, name: str, count: int) -> None:
    db = FileProtocol(uri, strict=False)
    own = db.new_trial(Trial(name=name))
    assert own is not None
    ack("own", own.uid)
    for i in range(count):
        db.log_trial_metrics(own, step=i, v=i)
        ack(f"{name}.v", i)
        db.log_trial_metrics(shared, **{name: i})
        ack(f"shared.{name}", i)
    db.close()


def _poll(ack: Ack, uri: str, stop: str) -> None:
    """Read while others write: every series seen holds distinct values only (no value applied twice)."""
    db = FileProtocol(uri, strict=False)
    reads = 0
    while not os.path.exists(stop):
        for trial in db.fetch_trials(None):
            for name, metric in trial.metrics.items():
                values = [v for v in metric.values]
                if len(set(values)) != len(values):
                    ack("problem", f"{trial.name}.{name}:duplicate")
        reads += 1
    ack("reads", reads)
    db.close()


def _dump(ack: Ack, uri: str, out: str) -> None:
    """Read the whole database in a fresh process and write every series to ``out`` as JSON."""
    with FileProtocol(uri, strict=False) as db:
        data = {
            t.name: {name: list(m.values) for name, m in t.metrics.items()} for t in db.fetch_trials(None)
        }
    Path(out).write_text(json.dumps(data))


def _read_back(uri: str, tmp_path: Path) -> dict[str, dict[str, list[Any]]]:
    out = str(tmp_path / f"dump-{time.monotonic_ns()}.json")
    fork_worker("dump", _dump, uri, out).join()
    return json.loads(Path(out).read_text())  # type: ignore[no-any-return]


def _stored_series(data: dict[str, dict[str, list[Any]]]) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {}
    for trial, metrics in data.items():
        for name, values in metrics.items():
            key = f"shared.{name}" if trial == "shared" else f"{trial}.{name}"
            series[key] = values
    return series


def _acked(workers: list[Worker]) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = {}
    for worker in workers:
        for key, value in worker.lines:
            if key not in ("own", "reads", "problem"):
                acked.setdefault(key, []).append(int(value))
    return acked


def test_sixteen_writers_and_two_readers_store_every_acknowledged_value_once(tmp_path: Path) -> None:
    """16 writers released together, each on its own trial and one shared trial created by a process that is
    still running (its journal not folded), writers finishing at different times, two readers polling."""
    uri = f"file://{tmp_path}/db.json"
    holder = FileProtocol(uri, strict=False)  # a scheduler that created the shared trial and keeps running
    shared = holder.new_trial(Trial(name="shared"))
    assert shared is not None
    stop = str(tmp_path / "stop")
    writers = writers_beside_readers(
        _write_own_and_shared, _poll, uri, shared.uid, [400 + 100 * w for w in range(WRITERS)], stop
    )
    holder.close()
    stored = _stored_series(_read_back(uri, tmp_path))
    problems = exactly_once(_acked(writers), stored, in_flight=0)
    assert not problems, problems


def _write_until_killed(ack: Ack, uri: str, shared: str, name: str, own_trial: bool) -> None:
    db = FileProtocol(uri, strict=False)
    ack("open")
    target = shared
    if own_trial:
        own = db.new_trial(Trial(name=name))
        assert own is not None
        target = own.uid
        ack("own", own.uid)
    for i in range(100_000):
        db.log_trial_metrics(target, **{name: i})
        ack(f"{'own' if own_trial else 'shared'}.{name}", i)
        if i % 97 == 96:
            db.commit()  # folds and rotates while others write and die


def test_two_hundred_sigkills_lose_nothing_acknowledged(tmp_path: Path, rng: random.Random) -> None:
    """200 writers, four at a time, each SIGKILLed after a random number of acknowledged calls (some while
    opening, creating their trial or folding); the database then holds every acknowledged value exactly once."""
    uri = f"file://{tmp_path}/db.json"
    with FileProtocol(uri, strict=False) as db:
        shared = db.new_trial(Trial(name="shared"))
        assert shared is not None
    killed = kill_at_random_moments(
        lambda k: fork_worker(f"k{k}", _write_until_killed, uri, shared.uid, f"k{k}", own_trial=k % 3 == 0),
        rng,
    )
    assert len(killed) == 200
    data = _read_back(uri, tmp_path)
    stored: dict[str, list[Any]] = {}
    for trial, metrics in data.items():
        for name, values in metrics.items():
            stored[f"shared.{name}" if trial == "shared" else f"own.{name}"] = values
    acked: dict[str, list[int]] = {}
    for worker in killed:
        for key, value in worker.lines:
            if key.startswith(("own.", "shared.")):
                acked.setdefault(key, []).append(int(value))
    problems = exactly_once(acked, stored)
    assert not problems, problems


def _reserve(ack: Ack, uri: str) -> None:
    db = FileProtocol(uri)
    while True:
        try:
            trial = db.fetch_and_update_trial(
                {"status": "createdgroup"}, "set_trial_status", status="running"
            )
        except ItemNotFound:
            break
        ack("took", trial.name)
    db.close()


def test_twelve_workers_reserve_each_trial_exactly_once(tmp_path: Path) -> None:
    """A scheduler queues 60 trials and keeps running (its journal not folded); 12 workers released together
    reserve them with fetch_and_update_trial. Each trial is taken by exactly one worker."""
    uri = f"file://{tmp_path}/db.json"
    scheduler = FileProtocol(uri, strict=False)
    for i in range(60):
        scheduler.new_trial(Trial(name=f"job{i}"))
    gate = Gate()
    workers = [fork_worker(f"r{i}", _reserve, uri, gate=gate) for i in range(12)]
    gate.open(len(workers))
    taken: list[str] = []
    for worker in workers:
        worker.join(timeout_s=120)
        taken.extend(worker.acked("took"))
    scheduler.close()
    assert sorted(taken) == sorted(f"job{i}" for i in range(60)), "a trial was reserved twice or not at all"
    with FileProtocol(uri) as db:
        assert all(t.status is Status.Running for t in db.fetch_trials(None))


def _open_write_commit(ack: Ack, uri: str, uid: str, name: str, rounds: int) -> None:
    for i in range(rounds):
        db = FileProtocol(uri, strict=False)
        db.log_trial_metrics(uid, **{name: i})
        ack(f"shared.{name}", i)
        db.commit()
        db.close()


def test_processes_opening_and_committing_together_never_raise_or_lose_a_write(tmp_path: Path) -> None:
    """Each call opens a new journal while others fold (track's .jnl.new race gave a raw FileNotFoundError)."""
    uri = f"file://{tmp_path}/db.json"
    with FileProtocol(uri, strict=False) as db:
        shared = db.new_trial(Trial(name="shared"))
        assert shared is not None
    gate = Gate()
    workers = [
        fork_worker(f"c{i}", _open_write_commit, uri, shared.uid, f"c{i}", 40, gate=gate) for i in range(8)
    ]
    gate.open(len(workers))
    for worker in workers:
        worker.join(timeout_s=240)
    problems = exactly_once(_acked(workers), _stored_series(_read_back(uri, tmp_path)), in_flight=0)
    assert not problems, problems


def _write_and_die(ack: Ack, uri: str, uid: str) -> None:
    db = FileProtocol(uri, strict=False)
    db.log_trial_metrics(uid, x=1.0)
    ack("wrote")
    os.kill(os.getpid(), 9)


def test_deleting_the_database_file_resets_the_database(tmp_path: Path) -> None:
    """A journal left by a killed writer belongs to the database it was started against, not to a new one."""
    uri = f"file://{tmp_path}/db.json"
    with FileProtocol(uri, strict=False) as db:
        uid = db.new_trial(Trial(name="old")).uid  # type: ignore[union-attr]
    fork_worker("dies", _write_and_die, uri, uid).join(expect_success=False)
    (tmp_path / "db.json").unlink()
    with FileProtocol(uri, strict=False) as db:
        assert db.fetch_trials(None) == []
        fresh = db.new_trial(Trial(name="old"))
        assert fresh is not None and fresh.uid == uid
    with FileProtocol(uri, strict=False) as db:
        assert [t.metrics for t in db.fetch_trials(None)] == [{}]


def _small_database(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    uri = f"file://{tmp_path}/db.json"
    with FileProtocol(uri, strict=False) as db:
        trial = db.new_trial(Trial(name="t", parameters={"lr": 0.5}))
        assert trial is not None
        db.log_trial_metrics(trial, step=1, loss=0.25)
        db.set_trial_status(trial, Status.Completed)
    with FileProtocol(uri, strict=False) as db:
        (trial,) = db.fetch_trials(None)
        expected = {
            "parameters": dict(trial.parameters),
            "loss": list(trial.metrics["loss"]),
            "status": str(trial.status),
            "name": trial.name,
        }
    return uri, expected


def _read_small(uri: str) -> dict[str, Any]:
    with FileProtocol(uri, strict=False) as db:
        (trial,) = db.fetch_trials(None)
        return {
            "parameters": dict(trial.parameters),
            "loss": list(trial.metrics["loss"]),
            "status": str(trial.status),
            "name": trial.name,
        }


def test_every_single_bit_flip_of_the_database_is_detected_or_harmless(tmp_path: Path) -> None:
    """Exhaustive: each bit of a small db.json flipped in turn gives a StorageError naming the file, or the
    values that were written; never other values (track's '"trials"' -> '"urials"' read as an empty database)."""
    uri, expected = _small_database(tmp_path)
    path = tmp_path / "db.json"
    size = path.stat().st_size
    wrong: list[str] = []
    for bit in flipped_in_place(path):
        try:
            got = _read_small(uri)
        except StorageError as exc:
            assert "db.json" in str(exc), str(exc)
            continue
        except Exception as exc:  # anything else is a crash, not a detection naming the file
            wrong.append(f"bit {bit}: {type(exc).__name__}: {exc}")
            continue
        if got != expected:
            wrong.append(f"bit {bit}: read {got}")
    assert _read_small(uri) == expected
    assert not wrong, f"{len(wrong)} flips of {size * 8} misread: {wrong[:5]}"


def test_every_single_bit_flip_of_the_journal_is_detected_or_harmless(tmp_path: Path) -> None:
    """Exhaustive over a journal of a few records (never folded: the writer was killed)."""
    uri = f"file://{tmp_path}/db.json"
    with FileProtocol(uri, strict=False) as db:
        db.new_trial(Trial(name="t", parameters={"lr": 0.5}))
    fork_worker("w", _write_three_and_die, uri).join(expect_success=False)
    expected = _read_small(uri)
    assert expected["loss"] == [(1, 0.25), (2, 0.125)] and expected["status"] == "completed"
    path = tmp_path / "db.json.jnl"
    wrong: list[str] = []
    for bit in flipped_in_place(path):
        try:
            got = _read_small(uri)
        except StorageError as exc:
            assert "db.json" in str(exc), str(exc)
            continue
        except Exception as exc:
            wrong.append(f"bit {bit}: {type(exc).__name__}: {exc}")
            continue
        if got != expected:
            wrong.append(f"bit {bit}: read {got}")
    assert _read_small(uri) == expected
    assert not wrong, f"{len(wrong)} flips of {path.stat().st_size * 8} misread: {wrong[:5]}"


def _write_three_and_die(ack: Ack, uri: str) -> None:
    db = FileProtocol(uri, strict=False)
    (trial,) = db.fetch_trials(None)
    db.log_trial_metrics(trial, step=1, loss=0.25)
    db.log_trial_metrics(trial, step=2, loss=0.125)
    db.set_trial_status(trial, Status.Completed)
    os.kill(os.getpid(), 9)
