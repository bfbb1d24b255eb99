"""Registration and resume under SIGKILL: a folder, its params.yml and its trial always agree (#12 items 2, 3).

Writers are real processes killed at seeded random moments while they register, run and resume experiments;
after every kill a fresh reader checks, over every backend's view (the backend's trials, each folder's
params.yml, the hdf5 summaries and ``CollectionReader``), that each run's values are filed under the folder
whose params.yml registered them, and that every acknowledged step is there exactly once. Self-contained for
now; it moves onto the shared harness of ``tests/faults/`` when that lands.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from unitrack.errors import NotFoundError
from unitrack.experiment.link import experiment_group
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Trial
from unitrack.store.readers import CollectionReader

WORKTREE = Path(__file__).resolve().parents[2]
#: Kills per test and backend (raise it to search harder: UNITRACK_FAULT_KILLS=100).
KILLS = int(os.environ.get("UNITRACK_FAULT_KILLS", "6"))

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from unitrack.experiment import Experiment
    from unitrack.experiment.link import TrialLink

    class E(Experiment):
        '''Registers itself and messages its own number, or counts on after a restart.'''

        k: int = 0  # @p which registration this is

        def run(self):
            self.message({"k": float(self.k)}, step=0)

    root, mode = sys.argv[1], sys.argv[2]
    if mode == "attach":  # run registered params.yml files, as `unitrack run` does
        for params in sys.argv[3:]:
            E().main(["-x", params])
        sys.exit(0)
    k = int(sys.argv[3])
    E(k=-1).register(root + ".warm", "w")()  # imports and first-use costs paid before the kill clock starts
    if mode == "crash-after-trial":  # the moment #12 names: the trial exists, its params.yml may not
        created = TrialLink.__init__
        def then_die(self, *args, **kwargs):
            created(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        TrialLink.__init__ = then_die
    print("ready", flush=True)
    while True:
        if mode == "resume":
            ex = E().register(root, "e", restart=True)
            with ex:
                n = int(ex.messages.get("n", 0)) + 1
                ex.message({"n": n})
                print(f"acked {n}", flush=True)  # message() returned: durable in the backend
        else:
            ex = E(k=k)
            ex.register(root, "e")
            print(f"registered {k} {ex.directory}", flush=True)
            ex()
            print(f"done {k} {ex.directory}", flush=True)
            k += 1
            if mode != "register":
                break
    """
)


@pytest.fixture(params=["hdf5", "file"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(tmp_path: Path, backend: str) -> tuple[Path, str, dict[str, str], Path]:
    """(root, backend URI, environment, writer script): no ``UNITRACK_URI`` means ``hdf5://ROOT``."""
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(WORKTREE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if backend == "file":
        uri = env["UNITRACK_URI"] = f"file://{tmp_path}/db.json"
    else:
        uri = f"hdf5://{root}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return root, uri, env, script


def run_writer(
    script: Path, root: Path, env: dict[str, str], mode: str, k: int, kill_after_s: float | None
) -> list[str]:
    """Run a writer; with ``kill_after_s`` SIGKILL it that long after it is ready. Returns its acknowledged lines."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), mode, str(k)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    ready = proc.stdout.readline()
    assert ready == "ready\n", proc.stderr.read()
    if kill_after_s is not None:
        time.sleep(kill_after_s)  # the random moment itself: nothing to await
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    if kill_after_s is None and mode != "crash-after-trial":
        assert proc.returncode == 0, err
    return out.splitlines()


def read_trials(uri: str, root: Path) -> list[Trial]:
    """The trials of the experiments in ``root`` (its group: the warm-up runs elsewhere share a file:// db)."""
    with warnings.catch_warnings():  # a killed writer's torn journal tail is dropped with a warning
        warnings.simplefilter("ignore")
        with get_protocol(uri) as protocol:
            # The root's group, in its own backend (found by its mark) or in a shared one (named by its path).
            group = experiment_group(protocol, root, uri)
            return protocol.fetch_trials({"group_id": group.uid})


def read_params(root: Path) -> dict[str, dict[str, Any]]:
    """Every experiment folder's params.yml (each must parse: they are written atomically)."""
    return {p.parent.name: YAML(typ="safe").load(p.read_text()) for p in sorted(root.glob("*/params.yml"))}


def check_agreement(root: Path, uri: str, acknowledged: list[str]) -> dict[str, Trial]:
    """Assert that folders, params.yml, trials and CollectionReader agree; return the trials by name."""
    params = read_params(root)
    trials = read_trials(uri, root)
    by_name = {t.name: t for t in trials}  # the one created last: a database keeps a deleted folder's run
    if uri.startswith("hdf5"):  # where the folder is the run, a name is one run
        assert len(by_name) == len(trials), f"two trials share a name: {sorted(t.name for t in trials)}"
    for name, trial in by_name.items():
        assert name in params, f"trial {name} has no params.yml in its folder"
        assert trial.parameters["k"] == params[name]["k"], name
        assert trial.metadata["directory"] == str(root / name)
        if "k" in trial.metrics:
            assert set(trial.metrics["k"].values) == {float(params[name]["k"])}, name
    if uri.startswith("hdf5"):
        for summary in root.glob("*/trial.json"):
            data = json.loads(summary.read_text())
            folder = summary.parent.name
            assert folder in params, f"{summary} has no params.yml beside it"
            assert data["name"] == folder and data["uid"] == by_name[folder].uid
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                frame = CollectionReader(str(root)).df("metrics")
            except NotFoundError:  # no run got as far as its first point
                frame = None
        if frame is not None:
            for exp_id, values in frame.groupby("exp_id")["value"]:
                assert set(values) == {float(params[exp_id]["k"])}, f"{exp_id} holds another run's values"
    for line in acknowledged:
        word, k, directory = line.split()
        folder = os.path.basename(directory)
        assert params[folder]["k"] == int(k)
        if word == "done":
            assert params[folder]["_status"] == "finished" and by_name[folder].metrics["k"].values == (
                float(k),
            )
    return by_name


def test_sigkill_at_random_moments_of_registration_never_mislabels_a_run(setup: tuple, backend: str) -> None:
    root, uri, env, script = setup
    rng = random.Random(f"register-{backend}")
    acknowledged: list[str] = []
    for attempt in range(KILLS):
        delay = rng.uniform(0.0, 0.3)
        lines = run_writer(script, root, env, "register", 1000 * (attempt + 1), delay)
        acknowledged += [line for line in lines if line.split()[0] in ("registered", "done")]
        check_agreement(root, uri, acknowledged)
    # A run killed before it got its trial is reused: running its params.yml (what `unitrack run` does)
    # creates the trial in its own folder.
    registered = [
        str(root / f / "params.yml")
        for f, state in read_params(root).items()
        if state["_status"] == "registered"
    ]
    done = subprocess.run(
        [sys.executable, str(script), str(root), "attach", *registered],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    by_name = check_agreement(root, uri, acknowledged)
    assert by_name and all(
        "k" in t.metrics for n, t in by_name.items() if read_params(root)[n]["_status"] != "running"
    )


def test_sigkill_at_random_moments_of_resume_keeps_every_acknowledged_value_once(
    setup: tuple, backend: str
) -> None:
    root, uri, env, script = setup
    run_writer(script, root, env, "once", 1, None)  # registered and run once: e holds n = nothing yet
    rng = random.Random(f"resume-{backend}")
    acknowledged: list[int] = []
    for _ in range(KILLS):
        lines = run_writer(script, root, env, "resume", 0, rng.uniform(0.0, 0.4))
        acknowledged += [int(line.split()[1]) for line in lines if line.startswith("acked")]
        (trial,) = read_trials(uri, root)
        values = list(trial.metrics["n"].values) if "n" in trial.metrics else []
        assert len(values) == len(set(values)), f"a resumed run counted from a stale params.yml: {values}"
        assert set(acknowledged) <= set(values) and values == sorted(values)
        assert trial.metadata["messages"].get("n", 0) == (values[-1] if values else 0)
        assert read_params(root)["e"]["k"] == 1
    assert acknowledged, "no resume was acknowledged before its kill: raise the kill delays"


def test_a_kill_right_after_the_trial_is_created_then_registering_again_files_each_run_under_its_folder(
    setup: tuple,
) -> None:
    """#12's reproduction: killed between trial creation and params.yml, then registered again twice."""
    root, uri, env, script = setup
    run_writer(script, root, env, "crash-after-trial", 1, None)
    run_writer(script, root, env, "once", 2, None)
    run_writer(script, root, env, "once", 3, None)
    by_name = check_agreement(root, uri, [])
    finished = {name: t.parameters["k"] for name, t in by_name.items() if "k" in t.metrics}
    assert sorted(finished.values()) == [2, 3]


def test_registering_again_after_a_runs_folder_was_deleted_files_the_new_run_under_it(setup: tuple) -> None:
    root, uri, env, script = setup
    run_writer(script, root, env, "once", 1, None)
    shutil.rmtree(root / "e")
    run_writer(script, root, env, "once", 2, None)
    by_name = check_agreement(root, uri, [])
    assert by_name["e"].parameters["k"] == 2 and by_name["e"].metrics["k"].values == (2.0,)
