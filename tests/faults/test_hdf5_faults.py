"""hdf5:// under faults: 16 concurrent writers, 200 SIGKILLs, a damaged run among healthy ones, and single-bit
damage of every file the backend writes for itself (trial.json, .unitrack/index.json, .unitrack/trials.jnl)
(issue #12 items 6 and 7). Workers are forked (tests/faults/harness.py)."""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    Ack,
    Gate,
    Worker,
    exactly_once,
    flipped_copies,
    flipped_in_place,
    fork_worker,
    kill_at_random_moments,
    writers_beside_readers,
)
from unitrack.errors import StorageError, StoreLockedError
from unitrack.persistence import lifecycle
from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.structure import CustomStatus, Project, Status, Trial, TrialGroup

REGISTERED = CustomStatus("registered", 1)


def _warm_up(tmp_path: Path) -> None:
    """Write one store in this process before forking, so each forked worker inherits what the first store of a
    process loads and sets up (about 0.1 s each otherwise)."""
    with HDF5Protocol(f"hdf5://{tmp_path / 'warm-up'}", strict=False) as db:
        trial = db.new_trial(Trial(name="warm-up"))
        assert trial is not None
        db.log_trial_metrics(trial, x=1.0)


def _write_shared(db: HDF5Protocol, uid: str, name: str, value: int) -> None:
    """One point on the shared trial: one writer at a time, so take the store, write, and hand it back."""
    deadline = time.monotonic() + 60
    while True:
        try:
            db.log_trial_metrics(uid, **{name: value})
            break
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
    db.commit()  # closes the shared trial's store: the next writer may take it


def _write_own_and_shared(ack: Ack, root: str, shared: str, name: str, count: int) -> None:
    db = HDF5Protocol(f"hdf5://{root}", strict=False)
    shared_db = HDF5Protocol(
        f"hdf5://{root}", strict=False
    )  # its own stores, so commit() hands back only those
    own = db.new_trial(Trial(name=name))
    assert own is not None
    for i in range(count):
        db.log_trial_metrics(own, step=i, v=i)
        ack(f"{name}.v", i)
        if i % 20 == 0:
            _write_shared(shared_db, shared, name, i)
            ack(f"shared.{name}", i)
    db.close()
    shared_db.close()


def _poll(ack: Ack, root: str, stop: str) -> None:
    _quiet_torn_tails()
    db = HDF5Protocol(f"hdf5://{root}", strict=False)
    reads = 0
    while not os.path.exists(stop):
        time.sleep(0.05)  # a person refreshing a listing, not a busy loop taking a core from the writers
        for trial in db.fetch_trials(None):
            if trial.status == lifecycle.DAMAGED:
                ack("problem", f"{trial.name}:damaged:{trial.metadata['damage']}")
            for name, metric in trial.metrics.items():
                if len(set(metric.values)) != len(metric.values):
                    ack("problem", f"{trial.name}.{name}:duplicate")
        reads += 1
    ack("reads", reads)
    db.close()


def _quiet_torn_tails() -> None:
    """The store warns when it reads a journal whose last write was cut by a kill (its rows before are intact);
    in these tests that is expected, and what is read is checked value by value."""
    warnings.filterwarnings("ignore", ".*dropped a torn tail", RuntimeWarning)


def _dump(ack: Ack, root: str, out: str) -> None:
    _quiet_torn_tails()
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        data = {
            t.name: {
                "status": lifecycle.status_word(t.status),
                "metrics": {name: list(m.values) for name, m in t.metrics.items()},
            }
            for t in db.fetch_trials(None)
        }
    Path(out).write_text(json.dumps(data))


def _read_back(root: str, tmp_path: Path) -> dict[str, Any]:
    out = str(tmp_path / f"dump-{time.monotonic_ns()}.json")
    fork_worker("dump", _dump, root, out).join()
    return json.loads(Path(out).read_text())  # type: ignore[no-any-return]


def _series(data: dict[str, Any]) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {}
    for trial, info in data.items():
        for name, values in info["metrics"].items():
            series[f"shared.{name}" if trial == "shared" else f"{trial}.{name}"] = values
    return series


def _acked(
    workers: list[Worker], skip: tuple[str, ...] = ("own", "reads", "problem", "open")
) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = {}
    for worker in workers:
        for key, value in worker.lines:
            if key not in skip:
                acked.setdefault(key, []).append(int(value))
    return acked


def test_sixteen_writers_and_two_readers_store_every_acknowledged_value_once(tmp_path: Path) -> None:
    """16 writers released together, each on its own trial and, one at a time, on one shared trial; two
    readers list every trial meanwhile and never see a damaged one or a value twice."""
    root = str(tmp_path / "runs")
    _warm_up(tmp_path)
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        shared = db.new_trial(Trial(name="shared"))
        assert shared is not None
    stop = str(tmp_path / "stop")
    writers = writers_beside_readers(
        _write_own_and_shared, _poll, root, shared.uid, [40 + 5 * w for w in range(16)], stop
    )
    problems = exactly_once(_acked(writers), _series(_read_back(root, tmp_path)), in_flight=0)
    assert not problems, problems


def _write_until_killed(ack: Ack, root: str, shared: str, k: int) -> None:
    db = HDF5Protocol(f"hdf5://{root}", strict=False)
    ack("open")
    name = f"k{k}"
    if k % 5 == 4:  # on the shared trial, handing it over after each point
        for i in range(100_000):
            _write_shared(db, shared, name, i)
            ack(f"shared.{name}", i)
    own = db.new_trial(Trial(name=name, parameters={"k": k}))
    assert own is not None
    ack("own", own.uid)
    db.set_trial_status(own, Status.Running)
    for i in range(100_000):
        db.log_trial_metrics(own, step=i, v=i)
        ack(f"{name}.v", i)


def test_two_hundred_sigkills_lose_nothing_acknowledged(tmp_path: Path, rng: random.Random) -> None:
    """200 writers, four at a time, each SIGKILLed after a random number of acknowledged calls (some while
    creating their trial and its store, some holding the shared trial's store); every acknowledged value is
    then read back exactly once, and no trial is damaged."""
    root = str(tmp_path / "runs")
    _warm_up(tmp_path)
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        shared = db.new_trial(Trial(name="shared"))
        assert shared is not None
    killed = kill_at_random_moments(
        lambda k: fork_worker(f"k{k}", _write_until_killed, root, shared.uid, k),
        rng,
        most=lambda k: 4 if k % 5 == 4 else 120,  # a point on the shared trial costs a store open and close
    )
    data = _read_back(root, tmp_path)
    damaged = {name: info for name, info in data.items() if info["status"] == "damaged"}
    assert not damaged, damaged
    problems = exactly_once(_acked(killed), _series(data))
    assert not problems, problems
    created = {w.name for w in killed if w.acked("own")}
    assert created <= set(data), f"acknowledged trials missing: {sorted(created - set(data))[:5]}"


def _five_runs(root: str) -> dict[str, Any]:
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        for i in range(5):
            trial = db.new_trial(Trial(name=f"run{i}", parameters={"i": i}))
            assert trial is not None
            for step in range(3):
                db.log_trial_metrics(trial, step=step, loss=i + step / 10)
            db.set_trial_status(trial, Status.Completed)
    return _listing(root)


def _listing(root: str) -> dict[str, Any]:
    with warnings.catch_warnings(), HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        _quiet_torn_tails()
        return {
            t.name: {
                "uid": t.uid,
                "status": lifecycle.status_word(t.status),
                "parameters": dict(t.parameters),
                "loss": list(t.metrics["loss"]) if "loss" in t.metrics else None,
                "damage": t.metadata.get("damage"),
            }
            for t in db.fetch_trials(None)
        }


DAMAGE = {
    "empty": lambda data, rng: b"",
    "truncated": lambda data, rng: data[: rng.randrange(1, len(data))],
    "garbage": lambda data, rng: bytes(rng.randrange(256) for _ in range(len(data))),
    "flipped bit": lambda data, rng: (
        lambda b: data[: b // 8] + bytes([data[b // 8] ^ (1 << b % 8)]) + data[b // 8 + 1 :]
    )(rng.randrange(len(data) * 8)),
    "not json": lambda data, rng: b'{"dtype": "trial", "uid": ',
    "no uid": lambda data, rng: b'{"dtype": "trial", "name": "run2"}',
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("target", ["trial.json", "store.journal"])
def test_a_damaged_run_is_listed_as_damaged_and_every_other_run_as_written(
    tmp_path: Path, rng: random.Random, damage: str, target: str
) -> None:
    """unitrack view hdf5://ROOT failed for every run when one run's journal or trial.json was damaged."""
    root = str(tmp_path / "runs")
    before = _five_runs(root)
    path = Path(root, "run2", target)
    path.write_bytes(DAMAGE[damage](path.read_bytes(), rng))
    after = _listing(root)
    assert sorted(after) == sorted(before)
    for name in before:
        if name != "run2":
            assert after[name] == before[name], name
    got = after["run2"]
    if got["status"] == "damaged":
        assert got["uid"] == before["run2"]["uid"]  # the trial index still knows it
        assert got["damage"]["file"] == str(path) and got["damage"]["reason"]
    else:  # damage a reader cannot see (e.g. a flipped bit in a cut frame) must leave the values as written
        assert got == before["run2"], got


def test_every_single_bit_flip_of_a_summary_is_detected_or_harmless(tmp_path: Path) -> None:
    """Exhaustive over a registered trial's trial.json: the run is listed as written, or as damaged naming the
    file; never with other values (one changed digit of a trial.json used to be returned as the value)."""
    root = str(tmp_path / "runs")
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        other = db.new_trial(Trial(name="other", parameters={"lr": 0.25}))
        trial = db.new_trial(Trial(name="t", parameters={"lr": 0.5}, status=REGISTERED))
        assert trial is not None and other is not None
    expected = _listing(root)
    path = Path(root, "t", "trial.json")
    wrong: list[str] = []
    for bit in flipped_in_place(path):
        try:
            got = _listing(root)
        except Exception as exc:  # a listing never fails for one damaged run
            wrong.append(f"bit {bit}: {type(exc).__name__}: {exc}")
            continue
        if got["other"] != expected["other"]:
            wrong.append(f"bit {bit}: the other run changed: {got['other']}")
        elif got["t"]["status"] == "damaged":
            if got["t"]["damage"]["file"] != str(path):
                wrong.append(f"bit {bit}: damage names {got['t']['damage']}")
        elif got["t"] != expected["t"]:
            wrong.append(f"bit {bit}: read {got['t']}")
    assert _listing(root) == expected
    assert not wrong, f"{len(wrong)} flips of {path.stat().st_size * 8} misread: {wrong[:5]}"


def test_random_bit_flips_of_a_run_summary_with_a_store_are_detected_or_harmless(
    tmp_path: Path, rng: random.Random
) -> None:
    root = str(tmp_path / "runs")
    expected = _five_runs(root)
    path = Path(root, "run2", "trial.json")
    wrong: list[str] = []
    for bit in flipped_in_place(path, rng, count=150):
        got = _listing(root)
        if {k: v for k, v in got.items() if k != "run2"} != {
            k: v for k, v in expected.items() if k != "run2"
        }:
            wrong.append(f"bit {bit}: another run changed")
        elif got["run2"]["status"] != "damaged" and got["run2"] != expected["run2"]:
            wrong.append(f"bit {bit}: read {got['run2']}")
    assert not wrong, wrong[:5]


def _groups(root: str) -> Any:
    with HDF5Protocol(f"hdf5://{root}") as db:
        return sorted((g.name, g.project_id, dict(g.metadata)) for g in db.fetch_groups(None))


def test_every_single_bit_flip_of_the_project_index_is_detected_or_harmless(tmp_path: Path) -> None:
    root = str(tmp_path / "runs")
    with HDF5Protocol(f"hdf5://{root}") as db:
        db.new_project(Project(name="p"))
        group = db.new_trial_group(TrialGroup(name="g", project_id="p"))
        assert group is not None
        db.set_group_metadata(group, size=3)
    expected = _groups(root)
    path = Path(root, ".unitrack", "index.json")
    wrong: list[str] = []
    for bit in flipped_in_place(path):
        try:
            got = _groups(root)
        except StorageError as exc:
            if "index.json" not in str(exc):
                wrong.append(f"bit {bit}: {exc}")
            continue
        if got != expected:
            wrong.append(f"bit {bit}: read {got}")
    assert not wrong, f"{len(wrong)} flips misread: {wrong[:5]}"


def test_every_single_bit_flip_of_the_trial_index_leaves_inserts_and_writes_right(tmp_path: Path) -> None:
    """.unitrack/trials.jnl maps uids to folders. Damaged, it is rebuilt from the folders: an existing trial is
    never inserted twice and a write never lands in another folder."""
    root = str(tmp_path / "runs")
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        trial = db.new_trial(Trial(name="b", status=REGISTERED))
        assert trial is not None
    path = Path(root, ".unitrack", "trials.jnl")
    wrong: list[str] = []
    for bit in flipped_copies(path):
        with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
            if db.new_trial(Trial(name="b", status=REGISTERED)) is not None:
                wrong.append(f"bit {bit}: trial b inserted twice")
            if db._folder_of(trial.uid) != "b":  # where every write to the trial goes
                wrong.append(f"bit {bit}: writes would go to {db._folder_of(trial.uid)!r}")
        if sorted(os.listdir(root)) != [".unitrack", "b"]:
            wrong.append(f"bit {bit}: folders {sorted(os.listdir(root))}")
    assert not wrong, f"{len(wrong)} flips misread: {wrong[:5]}"


def _reserve(ack: Ack, root: str) -> None:
    from unitrack.errors import ItemNotFound

    db = HDF5Protocol(f"hdf5://{root}", strict=False)
    while True:
        try:
            trial = db.fetch_and_update_trial({"status": "registered"}, "set_trial_status", status="running")
        except ItemNotFound:
            break
        ack("took", trial.name)
    db.close()


def test_twelve_workers_reserve_each_trial_exactly_once(tmp_path: Path) -> None:
    root = str(tmp_path / "runs")
    _warm_up(tmp_path)
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        for i in range(30):
            db.new_trial(Trial(name=f"job{i}", status=REGISTERED))
    gate = Gate()
    workers = [fork_worker(f"r{i}", _reserve, root, gate=gate) for i in range(12)]
    gate.open(len(workers))
    taken: list[str] = []
    for worker in workers:
        worker.join(timeout_s=120)
        taken.extend(worker.acked("took"))
    assert sorted(taken) == sorted(f"job{i}" for i in range(30)), "a trial was reserved twice or not at all"
    assert {lifecycle.status_word(t.status) for t in _open_all(root)} == {"running"}


def _open_all(root: str) -> list[Trial]:
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        return db.fetch_trials(None)
