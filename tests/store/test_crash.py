"""Crash safety: SIGKILLed writers, truncated and bit-flipped files. Real processes, real files."""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import struct
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from unitrack.errors import CorruptStoreError
from unitrack.store import Store
from unitrack.store.readers import CollectionReader

KILLS = 100


def row(i: int) -> dict:
    return {"i": i, "x": i * 0.5, "s": "r" * (i % 7)}


def _writer_child(out_dir: str, exp_id: str, wfd: int) -> None:
    """Append rows forever, reporting each index once append_row has returned."""
    try:
        store = Store(out_dir, exp_id, h5_every_rows=64)
        table = store.add_table("t", {"i": int, "x": float, "s": str})
        store.add_table("meta", {"name": str})
        i = table.nrows
        while True:
            table.append_row(row(i))
            os.write(wfd, b"%d\n" % i)
            i += 1
    finally:
        os._exit(0)


def kill_writer_after(out_dir: str, exp_id: str, delay_s: float) -> list[int]:
    """Fork a writer, kill it with SIGKILL after ``delay_s``; return the acknowledged row indices."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(rfd)
        _writer_child(out_dir, exp_id, wfd)
    os.close(wfd)
    data = b""
    deadline = time.monotonic() + delay_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    complete = data[: data.rfind(b"\n") + 1]
    return [int(x) for x in complete.split()]


def test_sigkill_never_loses_an_acknowledged_row(out_dir):
    rng = random.Random(20261121)
    acked_max: dict[str, int] = {}
    exp_ids: list[str] = []
    torn = 0
    for n in range(KILLS):
        if not exp_ids or rng.random() < 0.6:
            exp_id = f"run{n:03d}"
            exp_ids.append(exp_id)
        else:
            exp_id = rng.choice(exp_ids)
        # Biased to the first 50 ms of a (new) store, where cox left unreadable files.
        delay = rng.uniform(0, 0.05) if rng.random() < 0.7 else rng.uniform(0.05, 0.2)
        acked = kill_writer_after(out_dir, exp_id, delay)
        if acked:
            assert acked == list(range(acked[0], acked[-1] + 1))
            acked_max[exp_id] = max(acked_max.get(exp_id, -1), acked[-1])

        path = os.path.join(out_dir, exp_id)
        h5 = os.path.join(path, "store.h5")
        if os.path.exists(h5):  # always a complete file: pandas opens it
            with pd.HDFStore(h5, "r") as store:
                if "/t" in store.keys():
                    got = store.select("t")["i"].tolist()
                    assert got == list(range(len(got)))
        if not os.path.exists(os.path.join(path, "store.journal")):
            assert exp_id not in acked_max  # killed before the store existed; nothing was acknowledged
            continue
        # A write that crosses a page boundary can be cut short by SIGKILL (the kernel checks for fatal
        # signals between pages), leaving a torn tail; it is never an acknowledged row, and it is dropped
        # with a warning.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Store(out_dir, exp_id, mode="r") as reader:
                if "t" in reader.tables:
                    assert reader["t"].nrows >= acked_max.get(exp_id, -1) + 1
            with Store(out_dir, exp_id) as store:  # the lock died with the writer; no repair step
                table = store.add_table("t", {"i": int, "x": float, "s": str})
                df = table.df
                expected = [row(i) for i in range(len(df))]
                assert df.to_dict("records") == expected
                assert len(df) >= acked_max.get(exp_id, -1) + 1
        assert all("torn tail" in str(w.message) for w in caught), [str(w.message) for w in caught]
        torn += bool(caught)
    assert sum(v + 1 for v in acked_max.values()) > 0
    assert torn < KILLS // 2
    # every store reopens and reads back together
    frame = CollectionReader(out_dir).df("t")
    assert len(frame) >= sum(v + 1 for v in acked_max.values())


@pytest.fixture
def closed_store(out_dir):
    with Store(out_dir, "good") as s:
        t = s.add_table("t", {"i": int, "x": float, "s": str, "b": bool})
        for i in range(40):
            t.append_row({"i": i, "x": i / 3, "s": "é" * (i % 5), "b": i % 2 == 0})
        s.add_table("u", {"y": float})
        for i in range(10):
            s["u"].append_row({"y": float(i) * 1e300})
    with Store(out_dir, "good", mode="r") as s:
        full = {name: table.df for name, table in s.tables.items()}
    return out_dir, full


def _same_prefix(df, full) -> bool:
    prefix = full.iloc[: len(df)]
    for column in full.columns:
        left, right = df[column].tolist(), prefix[column].tolist()
        if column in ("x", "y"):
            left = [struct.pack("<d", v) for v in left]
            right = [struct.pack("<d", v) for v in right]
        if left != right:
            return False
    return True


@pytest.mark.parametrize("damage", ["truncate", "flip", "both"])
def test_damaged_journal_gives_error_or_valid_prefix(closed_store, tmp_path, damage):
    out_dir, full = closed_store
    good = os.path.join(out_dir, "good")
    journal = Path(good, "store.journal").read_bytes()
    rng = random.Random(hash(damage) & 0xFFFF)
    outcomes = {"corrupt": 0, "prefix": 0}
    for trial in range(150):
        data = bytearray(journal)
        if damage in ("truncate", "both"):
            del data[rng.randrange(len(data)) :]
        if damage in ("flip", "both") and data:
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        folder = tmp_path / f"{damage}{trial}"
        shutil.copytree(good, folder / "s")
        (folder / "s" / "store.journal").write_bytes(bytes(data))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                store = Store(str(folder), "s", mode="r")
            except CorruptStoreError as exc:
                assert exc.offset >= 0 and "store.journal" in exc.path
                outcomes["corrupt"] += 1
                continue
        outcomes["prefix"] += 1
        shorter = False
        for name, table in store.tables.items():
            assert _same_prefix(table.df, full[name]), (damage, trial, name)
            shorter |= table.nrows < len(full[name])
        shorter |= set(store.tables) != set(full)
        if damage == "flip" and shorter:
            # same length but fewer rows: only a detected torn tail can do that, and it must say so
            assert any("torn tail" in str(w.message) for w in caught)
    assert outcomes["corrupt"] + outcomes["prefix"] == 150


def test_torn_tail_is_dropped_with_warning_and_writer_continues(closed_store):
    out_dir, full = closed_store
    journal = os.path.join(out_dir, "good", "store.journal")
    size = os.path.getsize(journal)
    with open(journal, "r+b") as fh:
        fh.truncate(size - 5)
    with pytest.warns(RuntimeWarning, match=r"store.journal: dropped a torn tail of \d+ bytes at byte \d+"):
        store = Store(out_dir, "good")
    # The torn row is taken back from the store.h5 the last close built (the journal is a prefix of it).
    assert store["u"].nrows == 10
    store["u"].append_row({"y": 1.5})
    store.close()
    with Store(out_dir, "good", mode="r") as s:  # no warning now: the tail was cut before appending
        assert s["u"].df["y"].tolist()[-3:] == [8.0 * 1e300, 9.0 * 1e300, 1.5]
        assert s["t"].nrows == 40


def test_a_torn_tail_with_no_store_h5_behind_it_is_dropped(closed_store):
    """Without a store.h5 holding it, the torn row is gone: the writer continues after the valid prefix."""
    out_dir, _ = closed_store
    journal = os.path.join(out_dir, "good", "store.journal")
    os.unlink(os.path.join(out_dir, "good", "store.h5"))
    with open(journal, "r+b") as fh:
        fh.truncate(os.path.getsize(journal) - 5)
    with pytest.warns(RuntimeWarning, match=r"dropped a torn tail"):
        store = Store(out_dir, "good")
    assert store["u"].nrows == 9
    store["u"].append_row({"y": 1.5})
    store.close()
    with Store(out_dir, "good", mode="r") as s:
        assert s["u"].df["y"].tolist()[-2:] == [8e300, 1.5]


def test_corrupt_middle_frame_raises_with_offset(closed_store):
    out_dir, _ = closed_store
    journal = os.path.join(out_dir, "good", "store.journal")
    data = bytearray(Path(journal).read_bytes())
    data[200] ^= 0xFF
    Path(journal).write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=r"corrupt at byte \d+") as info:
        Store(out_dir, "good", mode="r")
    assert info.value.offset <= 200
    with pytest.raises(CorruptStoreError):
        Store(out_dir, "good")  # a writer refuses too: appending after corruption would hide it
    with pytest.raises(CorruptStoreError):
        CollectionReader(out_dir)
    assert CollectionReader(out_dir, skip_errs=True).exp_ids == []


def test_damaged_store_h5_never_changes_values(closed_store):
    out_dir, full = closed_store
    h5 = os.path.join(out_dir, "good", "store.h5")
    data = bytearray(Path(h5).read_bytes())
    rng = random.Random(7)
    for _ in range(50):
        data[rng.randrange(len(data))] ^= 0xFF
    Path(h5).write_bytes(bytes(data))
    with Store(out_dir, "good", mode="r") as s:  # the journal is the source of truth
        for name, table in s.tables.items():
            assert _same_prefix(table.df, full[name]) and table.nrows == len(full[name])
    with Store(out_dir, "good") as s:  # and store.h5 is rebuilt from it
        pass
    assert pd.read_hdf(h5, "t")["i"].tolist() == list(range(40))


def test_reader_of_a_live_store_ignores_a_write_in_progress(closed_store):
    out_dir, full = closed_store
    with Store(out_dir, "good") as writer:
        journal = os.path.join(writer.path, "store.journal")
        with open(journal, "ab") as fh:  # what a reader can see while a page-crossing write is copied
            fh.write(b"\x20\x00\x00\x00partial")
        with Store(out_dir, "good", mode="r") as reader:  # no warning: the writer is alive
            assert reader["t"].nrows == 40
        with open(journal, "r+b") as fh:
            fh.truncate(os.path.getsize(journal) - 11)
