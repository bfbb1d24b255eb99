"""``hdf5://``'s series index: fast reads of one metric, never a wrong value (crashes, damage, live writers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.series import SeriesRequest
from unitrack.persistence.structure import Trial

WRITER = textwrap.dedent(
    """
    import sys
    from unitrack.persistence.backends.hdf5 import HDF5Protocol
    from unitrack.persistence.structure import Trial

    root, steps = sys.argv[1], int(sys.argv[2])
    db = HDF5Protocol(f"hdf5://{root}?summary_interval_s=0.05", strict=False)
    trial = db.new_trial(Trial(name="run"))
    print(trial.uid, flush=True)
    for step in range(steps):
        db.log_trial_metrics(trial, step=step, loss=step / 2, acc=-step)
        print(step, flush=True)  # acknowledged: the call returned
    if steps < 10**9:
        db.close()
    """
)


def _read(root: Path, uid: str, metric: str = "loss", **kw: object) -> tuple:
    with HDF5Protocol(f"hdf5://{root}", strict=False) as db:
        [series] = db.find_series(SeriesRequest(uids=(uid,), metrics=(metric,), **kw))  # type: ignore[arg-type]
    return series.steps, series.values


def _index(root: Path, name: str = "run") -> dict:
    return json.loads((root / name / ".series" / "index.json").read_text())


def test_index_names_each_metric_file_and_matches_the_journal(tmp_path: Path) -> None:
    db = HDF5Protocol(f"hdf5://{tmp_path}", strict=False)
    trial = db.new_trial(Trial(name="run"))
    for step in range(1000):
        db.log_trial_metrics(trial, step=step, loss=step / 2, acc=-step)
    db.close()
    index = _index(tmp_path)
    assert {k: v["count"] for k, v in index["metrics"].items()} == {"loss": 1000, "acc": 1000}
    steps, values = _read(tmp_path, trial.uid)
    assert steps == tuple(range(1000)) and values == tuple(s / 2 for s in range(1000))
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        [series] = db.find_series(SeriesRequest(uids=(trial.uid,), metrics=("acc",)))
        assert series.times is not None and len(series.times) == 1000
        assert series.times == tuple(sorted(series.times))


def test_a_damaged_index_falls_back_to_the_journal(tmp_path: Path) -> None:
    db = HDF5Protocol(f"hdf5://{tmp_path}", strict=False)
    trial = db.new_trial(Trial(name="run"))
    for step in range(200):
        db.log_trial_metrics(trial, step=step, loss=float(step))
    db.close()
    data = tmp_path / "run" / ".series" / _index(tmp_path)["metrics"]["loss"]["file"]
    raw = bytearray(data.read_bytes())
    raw[8 * 3 * 17 + 8] ^= 0x40  # flip a bit of point 17's value
    data.write_bytes(bytes(raw))
    steps, values = _read(tmp_path, trial.uid)
    assert values == tuple(float(s) for s in range(200))
    (tmp_path / "run" / ".series" / "index.json").write_text("{not json")
    assert _read(tmp_path, trial.uid)[1] == tuple(float(s) for s in range(200))


def test_a_sigkilled_writer_loses_no_acknowledged_point_and_the_next_writer_continues(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(10**9)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        uid = proc.stdout.readline().strip()
        acknowledged = -1
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 3000:
                break
        # Read while it writes: a prefix of the run, every point right.
        steps, values = _read(tmp_path, uid)
        assert steps == tuple(range(len(steps))) and values == tuple(s / 2 for s in steps)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rest = proc.stdout.read().split()
    acknowledged = int(rest[-1]) if rest else acknowledged
    steps, values = _read(tmp_path, uid)
    assert steps[: acknowledged + 1] == tuple(range(acknowledged + 1))
    assert len(steps) <= acknowledged + 2  # at most the point being written when killed
    assert values == tuple(s / 2 for s in steps)
    # The next writer adopts (or rebuilds) the index and appends after the last point.
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        last = steps[-1]
        db.log_trial_metrics(uid, step=last + 1, loss=-1.0)
    steps2, values2 = _read(tmp_path, uid)
    assert steps2 == (*steps, last + 1) and values2 == (*values, -1.0)
    assert _index(tmp_path)["metrics"]["loss"]["count"] == len(steps2)
    # Downsampled reads see the same last point.
    steps3, values3 = _read(tmp_path, uid, max_points=100)
    assert len(steps3) <= 100 and steps3[-1] == last + 1 and values3[-1] == -1.0


def test_a_damaged_journal_hides_only_its_own_series(tmp_path: Path) -> None:
    db = HDF5Protocol(f"hdf5://{tmp_path}", strict=False)
    good, bad = db.new_trial(Trial(name="good")), db.new_trial(Trial(name="bad"))
    for step in range(100):
        db.log_trial_metrics(good, step=step, loss=float(step))
        db.log_trial_metrics(bad, step=step, loss=float(step))
    db.close()
    for name in ("index.json",):
        (tmp_path / "bad" / ".series" / name).unlink()
    journal = tmp_path / "bad" / "store.journal"
    raw = bytearray(journal.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a frame in the middle: corruption, not a torn tail
    journal.write_bytes(bytes(raw))
    with HDF5Protocol(f"hdf5://{tmp_path}", strict=False) as db:
        found = db.find_series(SeriesRequest(uids=(bad.uid, good.uid), metrics=("loss",)))
    assert [(s.uid, len(s)) for s in found] == [(good.uid, 100)]


_NAMES = ["loss", "acc", "lr", "ü-grad", "a" * 70, "x"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segments=st.lists(
        st.tuples(
            st.lists(st.sampled_from(_NAMES), min_size=1, max_size=5, unique=True), st.integers(1, 1500)
        ),
        min_size=1,
        max_size=4,
    ),
    repeat_step=st.booleans(),
)
def test_the_index_holds_exactly_the_journals_points_whatever_the_logging_pattern(
    tmp_path_factory: pytest.TempPathFactory, segments: list[tuple[list[str], int]], repeat_step: bool
) -> None:
    """The writer reads a loop's repeating rows as one fixed-width table and anything else row by row: for any
    mix of both (metrics added and dropped mid-run, long and non-ASCII names, a step logged twice, groups
    longer or shorter than a pack), each metric's indexed points are the journal's, point for point."""
    from unitrack.persistence.backends.hdf5_series import _load_index, _read_full, _read_indexed

    root = tmp_path_factory.mktemp("pattern")
    db = HDF5Protocol(f"hdf5://{root}?summary_interval_s=0.01", strict=False)
    trial = db.new_trial(Trial(name="run"))
    step = 0
    for names, repeats in segments:
        for _ in range(repeats):
            db.log_trial_metrics(trial, step=step, **{n: step * (i + 1) + 0.5 for i, n in enumerate(names)})
            if repeat_step and step % 97 == 0:
                db.log_trial_metrics(trial, step=step, **{names[0]: -1.0})  # the same step again
            step += 1
    db.close()
    folder = str(root / "run")
    index = _load_index(folder)
    assert index is not None and index["journal"][1] == os.path.getsize(os.path.join(folder, "store.journal"))
    wanted = set(_NAMES)
    indexed = _read_indexed(folder, index, wanted)
    journal = _read_full(folder, wanted)
    assert indexed is not None and sorted(indexed) == sorted(journal)
    for name, rows in journal.items():
        assert indexed[name].tolist() == [list(r) for r in rows], name


def test_the_index_of_a_running_trial_follows_its_writer(tmp_path: Path) -> None:
    """Rows logged since the last pack are read from the journal's tail: a running trial's series is whole."""
    db = HDF5Protocol(f"hdf5://{tmp_path}?summary_interval_s=0", strict=False)
    trial = db.new_trial(Trial(name="run"))
    for step in range(5000):
        db.log_trial_metrics(trial, step=step, loss=step / 2, acc=-step)
        if step in (10, 4095, 4999):
            steps, values = _read(tmp_path, trial.uid)
            assert steps == tuple(range(step + 1)) and values == tuple(s / 2 for s in range(step + 1))
    db.close()
