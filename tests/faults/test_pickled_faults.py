"""pickled:// under faults: 16 concurrent writers, 200 SIGKILLs, exclusive reservations and single-bit damage
(issue #12 items 6 and 10). Every call rewrites the whole file, so the counts are small."""

from __future__ import annotations

import json
import os
import random
import time
import warnings
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
from unitrack.persistence.backends.pickled import PickledProtocol
from unitrack.persistence.structure import Status, Trial


def _open(uri: str) -> PickledProtocol:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "for compatibility only", tested in test_pickled.py
        return PickledProtocol(uri, strict=False)


def _write_own_and_shared(ack: Ack, uri: str, shared: str, name: str, count: int) -> None:
    db = _open(uri)
    own = db.new_trial(Trial(name=name))
    assert own is not None
    for i in range(count):
        db.log_trial_metrics(own, step=i, v=i)
        ack(f"{name}.v", i)
        db.log_trial_metrics(shared, **{name: i})
        ack(f"shared.{name}", i)


def _poll(ack: Ack, uri: str, stop: str) -> None:
    db = _open(uri)
    while not os.path.exists(stop):
        time.sleep(0.01)
        for trial in db.fetch_trials(None):
            for name, metric in trial.metrics.items():
                if len(set(metric.values)) != len(metric.values):
                    ack("problem", f"{trial.name}.{name}:duplicate")


def _dump(ack: Ack, uri: str, out: str) -> None:
    data = {t.name: {n: list(m.values) for n, m in t.metrics.items()} for t in _open(uri).fetch_trials(None)}
    Path(out).write_text(json.dumps(data))


def _read_back(uri: str, tmp_path: Path) -> dict[str, dict[str, list[Any]]]:
    out = str(tmp_path / f"dump-{time.monotonic_ns()}.json")
    fork_worker("dump", _dump, uri, out).join()
    return json.loads(Path(out).read_text())  # type: ignore[no-any-return]


def _stored(uri: str, tmp_path: Path) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {}
    for trial, metrics in _read_back(uri, tmp_path).items():
        for name, values in metrics.items():
            series[f"shared.{name}" if trial == "shared" else f"{trial}.{name}"] = values
    return series


def _acked(workers: list[Worker]) -> dict[str, list[int]]:
    acked: dict[str, list[int]] = {}
    for worker in workers:
        for key, value in worker.lines:
            if key.startswith(("shared.", "own.")) or key.endswith(".v"):
                acked.setdefault(key, []).append(int(value))
    return acked


def test_sixteen_writers_and_two_readers_store_every_acknowledged_value_once(tmp_path: Path) -> None:
    uri = f"pickled://{tmp_path}/db.pkl"
    shared = _open(uri).new_trial(Trial(name="shared"))
    assert shared is not None
    stop = str(tmp_path / "stop")
    writers = writers_beside_readers(
        _write_own_and_shared, _poll, uri, shared.uid, [10 + w for w in range(16)], stop
    )
    problems = exactly_once(_acked(writers), _stored(uri, tmp_path), in_flight=0)
    assert not problems, problems


def _write_until_killed(ack: Ack, uri: str, shared: str, k: int) -> None:
    db = _open(uri)
    name = f"k{k}"
    target, key = shared, f"shared.{name}"
    if k % 3 == 0:
        own = db.new_trial(Trial(name=name))
        assert own is not None
        target, key = own.uid, f"own.{name}"
        ack("created", name)
    for i in range(100_000):
        db.log_trial_metrics(target, **{name: i})
        ack(key, i)


def test_two_hundred_sigkills_lose_nothing_acknowledged(tmp_path: Path, rng: random.Random) -> None:
    """Kills land while the file is loaded, rewritten (temporary file, rename) or locked."""
    uri = f"pickled://{tmp_path}/db.pkl"
    shared = _open(uri).new_trial(Trial(name="shared"))
    assert shared is not None
    killed = kill_at_random_moments(
        lambda k: fork_worker(f"k{k}", _write_until_killed, uri, shared.uid, k), rng, most=12
    )
    data = _read_back(uri, tmp_path)
    stored: dict[str, list[Any]] = {}
    for trial, metrics in data.items():
        for name, values in metrics.items():
            stored[f"shared.{name}" if trial == "shared" else f"own.{name}"] = values
    problems = exactly_once(_acked(killed), stored)
    assert not problems, problems
    created = {value for w in killed for key, value in w.lines if key == "created"}
    assert created <= set(data), f"acknowledged trials missing: {sorted(created - set(data))[:5]}"


def _reserve(ack: Ack, uri: str) -> None:
    db = _open(uri)
    while True:
        try:
            trial = db.fetch_and_update_trial(
                {"status": "createdgroup"}, "set_trial_status", status="running"
            )
        except ItemNotFound:
            break
        ack("took", trial.name)


def test_twelve_workers_reserve_each_trial_exactly_once(tmp_path: Path) -> None:
    uri = f"pickled://{tmp_path}/db.pkl"
    db = _open(uri)
    for i in range(30):
        db.new_trial(Trial(name=f"job{i}"))
    gate = Gate()
    workers = [fork_worker(f"r{i}", _reserve, uri, gate=gate) for i in range(12)]
    gate.open(len(workers))
    taken = [name for worker in workers for name in (worker.join(timeout_s=120), worker.acked("took"))[1]]
    assert sorted(taken) == sorted(f"job{i}" for i in range(30)), "a trial was reserved twice or not at all"
    assert all(t.status is Status.Running for t in _open(uri).fetch_trials(None))


def _read(uri: str) -> Any:
    (trial,) = _open(uri).fetch_trials(None)
    return (trial.name, dict(trial.parameters), list(trial.metrics["loss"]), str(trial.status))


def test_every_single_bit_flip_of_the_file_is_detected_or_harmless(tmp_path: Path) -> None:
    uri = f"pickled://{tmp_path}/db.pkl"
    db = _open(uri)
    trial = db.new_trial(Trial(name="t", parameters={"lr": 0.5}))
    assert trial is not None
    db.log_trial_metrics(trial, step=1, loss=0.25)
    db.set_trial_status(trial, Status.Completed)
    expected = _read(uri)
    path = tmp_path / "db.pkl"
    wrong: list[str] = []
    for bit in flipped_in_place(path):
        try:
            got = _read(uri)
        except StorageError as exc:
            if "db.pkl" not in str(exc):
                wrong.append(f"bit {bit}: {exc}")
            continue
        except Exception as exc:
            wrong.append(f"bit {bit}: {type(exc).__name__}: {exc}")
            continue
        if got != expected:
            wrong.append(f"bit {bit}: read {got}")
    assert _read(uri) == expected
    assert not wrong, f"{len(wrong)} flips of {path.stat().st_size * 8} misread: {wrong[:5]}"
