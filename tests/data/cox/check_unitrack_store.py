"""Check that the original cox 0.2 reads ``store.h5`` files unitrack wrote (issue #17: the ``COX_DATA`` attribute).

Two steps, in two virtual environments (cox installs its own ``cox-tensorboard`` script, which would replace
unitrack's, so it never goes into the project's)::

    # 1. with unitrack (the project's venv): write the stores of cox's walkthroughs, as make_stores.py does
    python tests/data/cox/check_unitrack_store.py write /tmp/unitrack-out

    # 2. with cox (a venv of its own, see make_stores.py): read them with cox's Store and CollectionReader
    /tmp/coxvenv/bin/python tests/data/cox/check_unitrack_store.py check /tmp/unitrack-out

``check`` prints what cox read and ends with ``OK`` (exit 0), or raises at the first difference. It was run
with cox 0.2, pandas 3.1.1, PyTables 3.11.1 and torch 2.13.0 (the result is in the README's cox bullet). The test
suite needs neither cox nor the network: ``tests/compat/test_cox_stores.py`` compares the attribute unitrack
writes with the one in the stores cox wrote (``out/``).
"""

import os
import sys

EXPECTED = {"slope-1": (1.0, "linear", [0.0, 1.0, 4.0]), "slope-3": (3.0, "steep-linear", [0.0, 3.0, 12.0])}


def write(out: str) -> None:
    """Write the stores of ``make_stores.py`` with unitrack's ``Store`` (the cox API)."""
    import torch

    from unitrack.store import Store

    torch.manual_seed(0)
    for exp_id, (slope, name, _) in EXPECTED.items():
        with Store(out, exp_id) as store:
            store.add_table("metadata", {"slope": float, "name": str, "epochs": int, "augment": bool})
            store["metadata"].append_row({"slope": slope, "name": name, "epochs": 3, "augment": slope > 2})
            store.add_table("result", {"step": int, "x": float, "mx^2": float})
            for step in range(3):
                x = float(step)
                store.log_table_and_tb("result", {"step": step, "x": x, "mx^2": slope * x * x})
                store["result"].flush_row()
            store.add_table(
                "objects", {"config": Store.OBJECT, "history": Store.PICKLE, "model": Store.PYTORCH_STATE}
            )
            store["objects"].append_row(
                {
                    "config": {"slope": slope, "layers": [2, 1]},
                    "history": [slope, slope / 2],
                    "model": torch.nn.Linear(2, 1),
                }
            )
    print(f"wrote {sorted(EXPECTED)} in {out}")


def check(out: str) -> None:
    """Read the stores in ``out`` with the original cox and check every table, schema and value."""
    import cox
    from cox.readers import CollectionReader
    from cox.store import Store

    print(f"cox {getattr(cox, '__version__', '0.2')} from {os.path.dirname(cox.__file__)}")
    for exp_id, (slope, name, squares) in EXPECTED.items():
        store = Store(out, exp_id, mode="r")
        try:
            assert sorted(store.tables) == ["metadata", "objects", "result"], sorted(store.tables)
            assert store["result"].schema == {"step": int, "x": float, "mx^2": float}, store["result"].schema
            assert store["objects"].schema == {
                "config": Store.OBJECT,
                "history": Store.PICKLE,
                "model": Store.PYTORCH_STATE,
            }, store["objects"].schema
            assert store["result"].nrows == 3
            assert store["metadata"].df["name"].tolist() == [name]
            assert store["result"].df["mx^2"].tolist() == squares
            row = store["objects"].df.iloc[0]
            assert store["objects"].get_object(row["config"]) == {"slope": slope, "layers": [2, 1]}
            assert store["objects"].get_pickle(row["history"]) == [slope, slope / 2]
            state = store["objects"].get_state_dict(row["model"])
            assert sorted(state) == ["bias", "weight"], sorted(state)
            print(
                f"{exp_id}: tables {sorted(store.tables)}, result rows {store['result'].nrows}, objects decoded"
            )
        finally:
            store.close()
    reader = CollectionReader(out)
    try:
        metadata = reader.df("metadata").set_index("exp_id")
        assert metadata.loc["slope-3", "name"] == "steep-linear" and bool(metadata.loc["slope-3", "augment"])
        result = reader.df("result")
        assert sorted(result["mx^2"].tolist()) == sorted(EXPECTED["slope-1"][2] + EXPECTED["slope-3"][2])
        objects = reader.df("objects")
        assert sorted(c["slope"] for c in objects["config"]) == [1.0, 3.0]
        print(f"CollectionReader: tables {sorted(reader.tables)}, result rows {len(result)}")
    finally:
        reader.close()
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(f"usage: {sys.argv[0]} write|check OUT")
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
