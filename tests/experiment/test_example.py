"""examples/quadratic.py runs from its own command line and its results are queryable."""

from __future__ import annotations

import subprocess
import sys

from tests.experiment.conftest import WORKTREE
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status
from unitrack.store.readers import CollectionReader


def test_quadratic_example_runs_and_is_queryable(tmp_path, subprocess_env):
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, str(WORKTREE / "examples" / "quadratic.py"), "--update", "{step: 0.1}",
         "--execute", str(root / "exp1")],
        env=subprocess_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (trial,) = get_protocol(f"hdf5://{root}").fetch_trials({"parameters.step": 0.1})
    assert trial.name == "exp1" and trial.status == Status.Completed
    assert abs(trial.metadata["messages"]["f"] - 3.0) < 0.01
    assert len(trial.metrics["x"]) == len(trial.metrics["f"]) > 10
    assert get_protocol(f"hdf5://{root}").fetch_trials({"parameters.step": 0.2}) == []
    # The embedded default: the experiment folder is at once the xmen experiment and the cox store.
    assert (root / "exp1" / "params.yml").exists() and (root / "exp1" / "store.h5").exists()
    reader = CollectionReader(str(root))
    metrics, params = reader.df("metrics"), reader.df("metadata")
    reader.close()
    assert set(metrics["exp_id"]) == {"exp1"} and set(metrics["name"]) == {"x", "f"}
    assert params["step"].tolist() == [0.1]
