"""Write the cox stores under ``tests/data/cox/out`` with the original cox, for the compatibility tests.

Run it with cox from PyPI in a virtual environment of its own, outside the repository (cox installs its own
``cox-tensorboard`` script, which would replace unitrack's)::

    python3 -m venv /tmp/coxenv && . /tmp/coxenv/bin/activate
    pip install cox==0.2 pandas tables dill tensorboardX torch
    python tests/data/cox/make_stores.py            # rewrites tests/data/cox/out

The stores were made with cox 0.2, pandas 3.1.1, PyTables 3.11.1, dill 0.4.1, tensorboardX 2.6.5 and
torch 2.13.0. Each holds the tables of cox's walkthroughs: ``metadata`` (one row of hyper-parameters, what
``cox-tensorboard`` reads), ``result`` (rows logged with ``log_table_and_tb``, so ``tensorboard/`` has events)
and ``objects`` (an OBJECT, a PICKLE and a PYTORCH_STATE column).
"""

import os
import shutil
import sys

import torch
from cox.store import Store


def make(out: str) -> None:
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    for exp_id, slope, name in (("slope-1", 1.0, "linear"), ("slope-3", 3.0, "steep-linear")):
        store = Store(out, exp_id)
        store.add_table("metadata", {"slope": float, "name": str, "epochs": int, "augment": bool})
        store["metadata"].append_row({"slope": slope, "name": name, "epochs": 3, "augment": slope > 2})
        store.add_table("result", {"step": int, "x": float, "mx^2": float})
        for step in range(3):
            x = float(step)
            store.log_table_and_tb("result", {"step": step, "x": x, "mx^2": slope * x * x})
            store["result"].flush_row()
        store.add_table(
            "objects",
            {"config": Store.OBJECT, "history": Store.PICKLE, "model": Store.PYTORCH_STATE},
        )
        store["objects"].append_row(
            {
                "config": {"slope": slope, "layers": [2, 1]},
                "history": [slope, slope / 2],
                "model": torch.nn.Linear(2, 1),
            }
        )
        store.tensorboard.close()
        store.close()


if __name__ == "__main__":
    make(
        sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    )
