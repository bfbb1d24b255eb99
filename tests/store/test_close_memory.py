"""Closing a long run builds store.h5 in bounded memory (#12 item 15).

A store that keeps no rows in memory (``keep_rows=False``, as every ``hdf5://`` writer) reads its journal back
in chunks at close and appends each chunk to store.h5: the Python memory the build needs is that of a chunk,
whatever the journal's length. On the old code the whole journal was read, decoded and imaged in memory.
"""

from __future__ import annotations

import os
import tracemalloc

import pandas as pd
import pytest

from unitrack.store import Store
from unitrack.store import hdf5 as hdf5_module
from unitrack.store import journal as journal_module

CHUNK = 64 << 10  # read 64 KiB at a time here, so short journals already span many chunks


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(journal_module, "CHUNK_BYTES", CHUNK, raising=False)
    # store.h5 files above this size are streamed to disk (16 MiB by default: built in memory below it)
    monkeypatch.setattr(hdf5_module, "IMAGE_MAX_BYTES", 4 * CHUNK, raising=False)


METRICS = {"step": float, "name": str, "value": float, "time": float}
NAMES = ("loss", "accuracy", "lr", "grad_norm")


def _log(store: Store, steps: int) -> None:
    table = store.add_table("metrics", METRICS)
    for start in range(0, steps, 2_000):
        table.append_tuples(
            [
                (float(i), NAMES[k], i * 0.25 + k, 1e9 + i)
                for i in range(start, start + 2_000)
                for k in range(4)
            ]
        )


def _close_peak(folder: str, exp_id: str, steps: int) -> tuple[int, int]:
    store = Store(folder, exp_id, keep_rows=False, h5_every_rows=None)
    _log(store, steps)
    journal = store._journal_path
    tracemalloc.start()
    try:
        store.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, os.path.getsize(journal)


def test_closing_a_store_ten_times_longer_needs_no_more_memory(out_dir):
    _close_peak(out_dir, "warm-up", 10)  # imports PyTables, so neither figure counts that
    small, small_bytes = _close_peak(out_dir, "short", 4_000)  # 16,000 rows
    large, large_bytes = _close_peak(out_dir, "long", 40_000)  # 160,000 rows
    assert small_bytes > 10 * CHUNK and large_bytes > 9 * small_bytes
    # the build holds one chunk of the journal (and its decoded rows), not the journal
    assert large < 1.25 * small, (small, large)  # the same (< 1 MB here); the old code held 60 MB for large
    frame = pd.read_hdf(f"{out_dir}/long/store.h5", "metrics")
    assert len(frame) == 160_000
    last = {"step": 39_999.0, "name": "grad_norm", "value": 39_999 * 0.25 + 3, "time": 1e9 + 39_999}
    assert frame.iloc[-1].to_dict() == last
    assert frame["name"].tolist()[:4] == list(NAMES)


def _open_peak(folder: str, exp_id: str) -> tuple[int, Store]:
    tracemalloc.start()
    try:
        store = Store(folder, exp_id, keep_rows=False, h5_every_rows=None)
        return tracemalloc.get_traced_memory()[1], store
    finally:
        tracemalloc.stop()


def test_reopening_a_long_store_to_append_reads_the_journal_in_chunks(out_dir):
    for exp_id, steps in (("short", 4_000), ("long", 40_000)):
        with Store(out_dir, exp_id, keep_rows=False, h5_every_rows=None) as store:
            _log(store, steps)
    _open_peak(out_dir, "short")[1].close()  # imports and caches warmed
    small, short = _open_peak(out_dir, "short")
    large, store = _open_peak(out_dir, "long")
    short.close(rebuild_h5=False)
    assert store["metrics"].nrows == 160_000
    assert large < 1.25 * small, (small, large)
    longer = "a-much-longer-name-than-before"  # store.h5's text width is known without reading the rows again
    store["metrics"].append_row({"step": 1.0, "name": longer, "value": 0.0, "time": 0.0})
    store.close()
    frame = pd.read_hdf(f"{out_dir}/long/store.h5", "metrics")
    assert len(frame) == 160_001 and frame["name"].iloc[-1] == longer
    assert frame["name"].iloc[-2] == "grad_norm"
