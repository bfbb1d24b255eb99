"""Relocatable roots (#14 item 4): nothing inside a root records where it is, so ``cp -r``, ``mv`` and ``unitrack
move`` keep every run whole and never touch the original; a root written by the previous version still opens."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUADRATIC = str(ROOT / "examples" / "quadratic.py")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def ok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = cli(*args, cwd=cwd)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def listing(root: Path) -> dict[str, tuple[str, int]]:
    """name -> status of every run of ``root``."""
    out = {}
    for line in ok("view", str(root), "--json", "-c", "name", "-c", "status").stdout.splitlines():
        row = json.loads(line)
        out[row["name"]] = row["status"]
    return out


def points(root: Path) -> dict[str, int]:
    code = (
        "import json, sys; from unitrack import get_protocol; "
        "db = get_protocol('hdf5://' + sys.argv[1]); "
        "print(json.dumps({t.name: len(t.metrics['f']) for t in db.fetch_trials(None)}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fingerprint(root: Path) -> dict[str, str]:
    """Every file of ``root`` with the sha256 of its bytes and its mtime."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A root of two finished quadratic runs (100 points of f each)."""
    root = tmp_path / "rb"
    ok("register", "-r", str(root), "-e", QUADRATIC, "-u", "{step: 0.01 | 0.3, iterations: 100}")
    ok("run", "-r", str(root), "-j", "2")
    assert listing(root) == {"step=0.01__iterations=100": "finished", "step=0.3__iterations=100": "finished"}
    return root


def test_nothing_in_a_root_records_where_it_is(finished: Path) -> None:
    for name in ("experiment.yml", "step=0.3__iterations=100/run.sh", ".unitrack/index.json"):
        assert str(finished) not in (finished / name).read_text(), name
    assert (
        "rb" in json.loads((finished / ".unitrack" / "index.json").read_text()).__repr__()
    )  # the group: "rb"


def test_a_copied_root_runs_its_own_runs_and_never_touches_the_original(
    finished: Path, tmp_path: Path
) -> None:
    before = fingerprint(finished)
    copy = tmp_path / "rb2"
    shutil.copytree(finished, copy)
    dry = ok("run", "-r", str(copy), "--rerun", "--dry-run").stdout
    assert str(finished) + os.sep not in dry and dry.count(str(copy) + os.sep) == 2, dry
    ok("run", "-r", str(copy), "--rerun", "-j", "2")
    assert listing(copy) == listing(finished)  # the same two runs, finished: none split off as a new trial
    assert points(copy) == {"step=0.01__iterations=100": 100, "step=0.3__iterations=100": 100}
    assert fingerprint(finished) == before  # the original: not one byte, not one mtime changed


@pytest.mark.parametrize("how", ["mv", "unitrack move"])
def test_a_moved_root_continues_its_runs(finished: Path, tmp_path: Path, how: str) -> None:
    target = tmp_path / "moved" / "rc"
    target.parent.mkdir()
    if how == "mv":
        shutil.move(finished, target)
    else:
        ok("move", str(target), "-r", str(finished))
    assert not finished.exists()
    ok("reset", "step=0.3*", "-r", str(target))
    ok("run", "-r", str(target))
    assert listing(target) == {
        "step=0.01__iterations=100": "finished",
        "step=0.3__iterations=100": "finished",
    }
    assert sorted(p.name for p in target.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "step=0.01__iterations=100",
        "step=0.3__iterations=100",
    ]  # no step=0.3__iterations=100_1 registered beside the finished one


def test_a_root_written_by_the_previous_version_still_opens_copied_and_moved(
    finished: Path, tmp_path: Path
) -> None:
    """The previous version recorded absolute paths in experiment.yml and named the group by the root's path."""
    from unitrack.experiment.link import ROOT_GROUP, group_name
    from unitrack.persistence.registry import get_protocol
    from unitrack.persistence.structure import GroupUpdate, TrialGroup, TrialUpdate

    config = {
        "root": str(finished),
        "defaults": str(finished / "defaults.yml"),
        "script": str(finished / "script.sh"),
        "experiments": [str(finished / n) for n in ("step=0.01__iterations=100", "step=0.3__iterations=100")],
        "overides": [{"step": 0.01, "iterations": 100}, {"step": 0.3, "iterations": 100}],
        "created": "2024-01-01T00:00:00",
        "purpose": "",
        "notes": [],
        "type": "python",
    }
    (finished / "experiment.yml").write_text(
        "\n".join(f"{k}: {json.dumps(v)}" for k, v in config.items()) + "\n"
    )
    with get_protocol(f"hdf5://{finished}") as db:
        (marked,) = db.fetch_groups(None)
        old = db.new_trial_group(TrialGroup(name=group_name(finished), project_id=marked.project_id))
        assert old is not None
        for trial in db.fetch_trials(None):
            db.update_trial(trial.uid, TrialUpdate(group_id=old.uid))
        db.update_group(marked.uid, GroupUpdate(metadata={ROOT_GROUP: False}))
    copy = tmp_path / "old-copy"
    shutil.copytree(finished, copy)
    dry = ok("run", "-r", str(copy), "--rerun", "--dry-run").stdout
    assert str(finished) + os.sep not in dry and dry.count(str(copy) + os.sep) == 2, dry
    ok("run", "-r", str(copy), "--rerun", "-j", "2")
    assert listing(copy) == {"step=0.01__iterations=100": "finished", "step=0.3__iterations=100": "finished"}
    assert points(copy) == {"step=0.01__iterations=100": 100, "step=0.3__iterations=100": 100}


def test_with_a_shared_backend_a_moved_root_continues_and_a_copy_gets_its_own_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$UNITRACK_URI outside the root: the backend records where each root is, and `unitrack move` re-files."""
    monkeypatch.setenv("UNITRACK_URI", f"file://{tmp_path}/shared.json")
    root = tmp_path / "rb"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def names(where: Path) -> dict[str, str]:
        out = run("view", str(where), "--json", "-c", "name", "-c", "status").stdout.splitlines()
        return {r["name"]: r["status"] for r in map(json.loads, out)}

    run("register", "-r", str(root), "-e", QUADRATIC, "-u", "{step: 0.01 | 0.3, iterations: 20}")
    run("run", "-r", str(root), "-j", "2")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    run("move", str(tmp_path / "moved"), "-r", str(root))
    run("run", "-r", str(tmp_path / "moved"), "--rerun")
    run("run", "-r", str(copy), "--rerun")
    both = {"step=0.01__iterations=20": "finished", "step=0.3__iterations=20": "finished"}
    assert names(tmp_path / "moved") == names(copy) == both
    everything = run("view", f"file://{tmp_path}/shared.json", "--json", "-c", "name").stdout.splitlines()
    assert len(everything) == 4  # the moved root's two runs continued; the copy's two are its own
