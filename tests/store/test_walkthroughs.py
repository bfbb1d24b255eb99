"""The seed 002 walkthroughs, run as written (with unitrack's import paths)."""

from __future__ import annotations

import glob
import itertools
import os

import pandas as pd
import pytest

from unitrack.store import Store
from unitrack.store.readers import CollectionReader


def f(x):
    return (x - 2.03) ** 2 + 3


def run_quadratic(out_dir, step, tol, x):
    store = Store(out_dir)
    store.add_table("metadata", {"step_size": float, "tolerance": float, "initial_x": float, "out_dir": str})
    store.add_table("result", {"final_x": float, "final_opt": float})
    store["metadata"].append_row({"step_size": step, "tolerance": tol, "initial_x": x, "out_dir": out_dir})
    for _ in range(1000):
        if f(x + step) < f(x - step):
            x += step
        else:
            x -= step
        if f(x + step) - f(x - step) < tol:
            break
    store["result"].update_row({"final_x": x})
    store["result"].update_row({"final_opt": f(x)})
    store["result"].flush_row()
    store.close()
    return store.exp_id


def test_store_layout_and_working_row(out_dir):
    store = Store(out_dir)
    assert os.listdir(out_dir) == [store.exp_id]
    assert {"save", "store.h5", "tensorboard"} <= set(os.listdir(store.path))
    store.add_table("result", {"final_x": float, "final_opt": float})
    store["result"].update_row({"final_x": 3.0})
    store["result"].update_row({"final_opt": 3.9409})
    store["result"].flush_row()
    store.add_table("metadata", {"step_size": float, "tolerance": float, "initial_x": float, "out_dir": str})
    store["metadata"].append_row({"step_size": 0.01, "tolerance": 1e-6, "initial_x": 1.0, "out_dir": "/tmp/"})
    exp_id = store.exp_id
    store.close()

    s = Store(out_dir, exp_id)
    result = s["result"].df
    assert str(result) == "   final_x  final_opt\n0      3.0     3.9409"
    assert s["metadata"].df["out_dir"].tolist() == ["/tmp/"]
    s.close()
    # cox tooling reads the same tables with pandas.
    assert pd.read_hdf(os.path.join(out_dir, exp_id, "store.h5"), "result")["final_opt"].tolist() == [3.9409]


def test_named_experiment(out_dir):
    with Store(out_dir, "exp1") as store:
        assert store.exp_id == "exp1"
        assert store.path == os.path.join(out_dir, "exp1")


def test_collection_reader_over_a_grid(out_dir):
    grid = list(itertools.product([0.01, 0.1, 1.0], [1e-6, 1e-3], [0.0, 1.0]))
    ids = {run_quadratic(out_dir, *params) for params in grid}

    reader = CollectionReader(out_dir)
    df = reader.df("result")
    m_df = reader.df("metadata")
    assert len(df) == len(grid) and set(df["exp_id"]) == ids
    assert list(df.columns) == ["final_x", "final_opt", "exp_id"]

    # Filter by experiments have step_size less than 1.0
    exp_ids = set(m_df[m_df["step_size"] < 1.0]["exp_id"].tolist())
    filtered = df[df["exp_id"].isin(exp_ids)]
    assert len(filtered) == 8

    # Finding which experiment has the lowest final_opt
    exp_id = df[df["final_opt"] == min(df["final_opt"].tolist())]["exp_id"].tolist()[0]
    best = m_df[m_df["exp_id"] == exp_id]
    assert len(best) == 1
    assert df["final_opt"].min() == pytest.approx(3.0, abs=0.01)
    reader.close()


def test_collection_reader_exp_filter(out_dir):
    for x in (0.0, 1.0, 2.0):
        with Store(out_dir, f"x{x}") as s:
            s.add_table("result", {"final_x": float}).append_row({"final_x": x})
    reader = CollectionReader(out_dir, exp_filter=lambda e: e != "x0.0")
    assert sorted(reader.df("result")["final_x"]) == [1.0, 2.0]
    assert reader.df("result", exp_filter=lambda e: e == "x2.0")["final_x"].tolist() == [2.0]


def read_scalars(tb_dir):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values = {}
    for path in glob.glob(os.path.join(tb_dir, "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                number = value.simple_value if value.HasField("simple_value") else None
                if number is None and value.HasField("tensor"):
                    from tensorboard.util import tensor_util

                    number = float(tensor_util.make_ndarray(value.tensor))
                values.setdefault(value.tag, []).append((event.step, number))
    return values


def test_tensorboardx_walkthrough(out_dir):
    stores = []
    for slope in range(5):
        s = Store(out_dir)  # Create OUT_DIR/RANDOM_UUID
        s.add_table("line_graphs", {"mx": int, "mx^2": int})
        s.add_table("metadata", {"slope": int})
        s["metadata"].append_row({"slope": slope})

        for x in range(10):
            s.writer.add_scalar("line", slope * x, x)
            s.writer.add_scalar("parabola", slope * (x**2), x)

        for x in range(10):
            s.log_table_and_tb("line_graphs", {"mx": slope * x, "mx^2": slope * (x**2)})
            s["line_graphs"].flush_row()
        stores.append((slope, s.exp_id))
        s.close()

    for slope, exp_id in stores:
        scalars = read_scalars(os.path.join(out_dir, exp_id, "tensorboard"))
        assert scalars["line"] == [(x, float(slope * x)) for x in range(10)]
        # tensorboardX itself rewrites '^' in tags to '_' (as it did under cox).
        assert scalars["line_graphs/mx_2"] == [(x, float(slope * x * x)) for x in range(10)]
        with Store(out_dir, exp_id, mode="r") as s:
            assert s["line_graphs"].df["mx^2"].tolist() == [slope * x * x for x in range(10)]

    reader = CollectionReader(out_dir)
    lines = reader.df("line_graphs")
    slopes = reader.df("metadata").set_index("exp_id")["slope"]
    # Each store's rows keep their own index (0..9), as cox's concatenation did.
    assert (lines["mx"] == lines["exp_id"].map(slopes) * lines.index).all()
