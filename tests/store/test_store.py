from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pandas as pd
import pytest

from unitrack.errors import (
    AlreadyExistsError,
    ConfigError,
    InvalidNameError,
    NotFoundError,
    StoreLockedError,
)
from unitrack.store import OBJECT, PICKLE, PYTORCH_STATE, Store
from unitrack.store import store as store_module

from .conftest import snapshot


def test_constants():
    assert (Store.OBJECT, Store.PICKLE, Store.PYTORCH_STATE) == (
        "__object__",
        "__pickle__",
        "__pytorch_state__",
    )
    assert (OBJECT, PICKLE, PYTORCH_STATE) == (Store.OBJECT, Store.PICKLE, Store.PYTORCH_STATE)
    assert store_module.PICKLE == PICKLE


def test_default_exp_id_is_uuid4_and_attributes(out_dir):
    with Store(out_dir) as s:
        assert uuid.UUID(s.exp_id).version == 4
        assert s.path == os.path.join(out_dir, s.exp_id)
        assert s.save_dir == os.path.join(s.path, "save") and os.path.isdir(s.save_dir)
        assert s.tb_dir == os.path.join(s.path, "tensorboard") and os.path.isdir(s.tb_dir)
        assert os.path.isdir(os.path.join(s.path, ".table_objects"))
        s.add_table("metadata", {"a": int})
        assert s.keys == ["/metadata"] and list(s.tables) == ["metadata"]
        # store.h5 exists and is complete from the start
        with pd.HDFStore(os.path.join(s.path, "store.h5"), "r") as h5:
            assert h5.keys() == []


def test_new_on_existing_store_raises(out_dir):
    Store(out_dir, "e").close()
    with pytest.raises(AlreadyExistsError, match="already exists"):
        Store(out_dir, "e", new=True)
    Store(out_dir, "fresh", new=True).close()


def test_mode_r_creates_nothing(out_dir):
    before = snapshot(out_dir)
    with pytest.raises(NotFoundError):
        Store(out_dir, "missing", mode="r")
    assert snapshot(out_dir) == before


def test_invalid_mode(out_dir):
    with pytest.raises(ConfigError, match="Invalid store mode"):
        Store(out_dir, "e", mode="x")


def test_mode_w_starts_afresh(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("t", {"a": float}).append_row({"a": 1.0})
    with Store(out_dir, "e", mode="w") as s:
        assert s.tables == {}
        s.add_table("t", {"a": float}).append_row({"a": 2.0})
    with Store(out_dir, "e", mode="r") as s:
        assert s["t"].df["a"].tolist() == [2.0]


def test_reopen_appends(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("t", {"a": float}).append_row({"a": 1.0})
    with Store(out_dir, "e") as s:
        s["t"].append_row({"a": 2.0})
        assert s["t"].nrows == 2
    assert pd.read_hdf(os.path.join(out_dir, "e", "store.h5"), "t")["a"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\x00b", "x" * 4096, "", "..", "/abs", "a\\b", "."])
def test_bad_exp_id_touches_nothing(out_dir, bad):
    before = snapshot(out_dir)
    with pytest.raises(InvalidNameError):
        Store(out_dir, bad)
    assert snapshot(out_dir) == before
    assert snapshot(os.path.dirname(out_dir)) == snapshot(os.path.dirname(out_dir))


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\x00b", "x" * 4096, ""])
def test_bad_table_and_column_names_touch_nothing(out_dir, bad):
    with Store(out_dir, "e") as s:
        before = snapshot(out_dir)
        with pytest.raises(InvalidNameError):
            s.add_table(bad, {"a": float})
        with pytest.raises(InvalidNameError):
            s.add_table("t", {bad: float})
        assert snapshot(out_dir) == before
        assert s.tables == {}


def test_second_writer_in_process_is_refused(out_dir):
    with Store(out_dir, "e") as s:
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            Store(out_dir, "e")
        s.add_table("t", {"a": float}).append_row({"a": 1.0})
        # readers need no lock and see flushed rows at once
        with Store(out_dir, "e", mode="r") as r:
            assert r["t"].df["a"].tolist() == [1.0]
    Store(out_dir, "e").close()  # released


def test_second_writer_in_other_process_is_refused_with_holder(out_dir):
    code = (
        "import sys\n"
        "from unitrack.store import Store\n"
        f"s = Store({out_dir!r}, 'e', quiet=True)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "s.close()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=f"pid {child.pid} on "):
            Store(out_dir, "e")
        assert os.path.exists(os.path.join(out_dir, "e", "store.lock"))
    finally:
        child.communicate("\n", timeout=30)
    Store(out_dir, "e").close()


def test_store_h5_is_rebuilt_in_batches_while_writing(out_dir):
    with Store(out_dir, "e", h5_every_rows=10) as s:
        t = s.add_table("t", {"a": int})
        for i in range(25):
            t.append_row({"a": i})
        # after 10 rows, then 20 (the interval doubles with the table's size): the last complete batch
        assert pd.read_hdf(os.path.join(s.path, "store.h5"), "t")["a"].tolist() == list(range(20))
    assert pd.read_hdf(os.path.join(out_dir, "e", "store.h5"), "t")["a"].tolist() == list(range(25))


def test_cox_store_without_journal_is_read_and_imported(out_dir):
    folder = os.path.join(out_dir, "cox")
    os.makedirs(folder)
    frame = pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "s": ["a", "bb"]})
    with pd.HDFStore(os.path.join(folder, "store.h5"), mode="w") as h5:
        h5.put("result", frame, format="table", track_times=False)
    with Store(out_dir, "cox", mode="r") as r:
        assert r["result"].df["s"].tolist() == ["a", "bb"]
    with Store(out_dir, "cox") as s:
        s["result"].append_row({"x": 3.0, "n": 3, "s": "ccc"})
    assert pd.read_hdf(os.path.join(folder, "store.h5"), "result")["x"].tolist() == [1.0, 2.0, 3.0]


def test_str_lists_tables(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("t", {"a": float}).append_row({"a": 1.0})
        assert str(s).startswith("-- Table: t --\n")


def test_log_table_and_tb_rejects_bad_keys_before_logging(out_dir):
    with Store(out_dir, "e") as s:
        s.add_table("t", {"a": float})
        with pytest.raises(Exception, match="no column 'b'"):
            s.log_table_and_tb("t", {"b": 1.0})
        with pytest.raises(ConfigError, match="summary type"):
            s.log_table_and_tb("t", {"a": 1.0}, summary_type="nope")


@pytest.mark.parametrize("table", ["_v_x", "_c_", "_g_t"])
def test_table_names_hdf5_cannot_hold_are_refused_before_writing(out_dir, table):
    with Store(out_dir, "e") as s:
        before = snapshot(out_dir)
        with pytest.raises(InvalidNameError, match="reserved by HDF5"):
            s.add_table(table, {"a": float})
        assert snapshot(out_dir) == before


def test_fsync_setting_writes_the_same_data(out_dir):
    with Store(out_dir, "e", fsync=True) as s:
        t = s.add_table("t", {"a": float, "p": PICKLE})
        t.append_row({"a": 1.0, "p": [1]})
    with Store(out_dir, "e", mode="r") as s:
        assert s["t"].df["a"].tolist() == [1.0]
        assert s["t"].get_pickle(s["t"].df["p"][0]) == [1]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_h5_every_rows_must_be_positive(out_dir, bad):
    with pytest.raises(ConfigError, match="positive int or None"):
        Store(out_dir, "e", h5_every_rows=bad)


def test_h5_every_rows_none_rebuilds_store_h5_only_at_close(out_dir):
    with Store(out_dir, "e", h5_every_rows=None) as s:
        t = s.add_table("t", {"a": int, "name": str})
        for i in range(50):
            t.append_row({"a": i, "name": f"n{i % 3}"})
        with pd.HDFStore(os.path.join(s.path, "store.h5"), mode="r") as h5:  # the file as created, valid
            assert "/t" not in h5.keys()
        assert t.df["a"].tolist() == list(range(50))  # the rows are read from the journal
    frame = pd.read_hdf(os.path.join(out_dir, "e", "store.h5"), "t")
    assert frame["a"].tolist() == list(range(50)) and frame["name"].tolist()[:4] == ["n0", "n1", "n2", "n0"]


def test_keep_rows_false_reads_everything_back_from_the_journal(out_dir):
    with Store(out_dir, "e", h5_every_rows=None, keep_rows=False) as s:
        metrics = s.add_table("metrics", {"step": int, "name": str, "value": float})
        flags = s.add_table("flags", {"on": bool, "n": int})
        for i in range(30):
            s.append_many(
                {"metrics": [(i, "loss", 1.0 / (i + 1)), (i, "acc", i / 30)], "flags": [(i % 2 == 0, i)]}
            )
        metrics.append_row({"step": 30, "name": "loss", "value": 0.0})
        assert metrics._rows == [] and flags._fixed_rows == bytearray()  # nothing held in memory
        assert metrics.nrows == 61 and flags.nrows == 30
        assert (
            metrics.df["name"].tolist()[:3] == ["loss", "acc", "loss"] and metrics.df["step"].iloc[-1] == 30
        )
        assert list(flags.iter_rows())[:2] == [(True, 0), (False, 1)]
    frame = pd.read_hdf(os.path.join(out_dir, "e", "store.h5"), "metrics")
    assert len(frame) == 61 and frame["value"].iloc[-1] == 0.0
    with Store(out_dir, "e", keep_rows=False) as again:  # reopened: counts come from the journal
        assert again["metrics"].nrows == 61 and again["flags"].df["n"].tolist() == list(range(30))


def test_a_writer_that_keeps_no_rows_logs_in_constant_memory(out_dir):
    import tracemalloc

    with Store(out_dir, "e", h5_every_rows=None, keep_rows=False) as s:
        s.add_table("metrics", {"step": float, "name": str, "value": float, "time": float})
        s.add_table("log", {"update": str})

        def write(start: int, n: int) -> None:
            for i in range(start, start + n):
                s.append_many(
                    {
                        "metrics": [(float(i), name, 0.5, 1.0) for name in ("loss", "acc", "lr", "epoch")],
                        "log": [('{"metadata": {"messages": {"loss": 0.5}}}',)],
                    }
                )

        write(0, 2_000)  # warm up caches
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            write(2_000, 20_000)  # 100,000 rows
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 200_000, f"{grown} bytes kept for 100,000 rows"
        assert s["metrics"].nrows == 88_000


@pytest.mark.parametrize("exp_id", [".hidden", ".unitrack", ".table_objects"])
def test_hidden_store_names_are_refused_before_anything_is_written(out_dir, exp_id):
    """A hidden folder is skipped by CollectionReader and every listing: the store would be invisible (#12 item
    12). On the old code Store(out, '.hidden') was created and then never listed."""
    before = snapshot(out_dir)
    with pytest.raises(InvalidNameError, match=r"Invalid exp_id name '\.\w+': the name starts with '\.'"):
        Store(out_dir, exp_id)
    assert snapshot(out_dir) == before
