"""One catalog (#14 item 3): a folder, ``hdf5://folder``, the roots a user registered and ``unitrack.runs`` list
the same runs with the same status words; a damaged run is listed as damaged and hides no other (#12 item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env)


def rows(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def readme_folder(tmp_path: Path) -> Path:
    """The README's two commands, then ``python examples/quickstart.py``, in one folder."""
    register = cli(
        "register",
        "--root",
        "runs",
        "--experiment",
        str(ROOT / "examples" / "quadratic.py"),
        "-u",
        "{step: 0.01 | 0.1, x0: 0.0 | 5.0}",
        cwd=tmp_path,
    )
    assert register.returncode == 0, register.stderr
    run = cli("run", "--root", "runs", "--jobs", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    quick = python(str(ROOT / "examples" / "quickstart.py"), cwd=tmp_path)
    assert quick.returncode == 0, quick.stderr
    return tmp_path


def test_a_folder_its_backend_uri_the_registered_roots_and_python_list_the_same_runs(
    readme_folder: Path,
) -> None:
    by_folder = rows(cli("view", "runs", "--json", cwd=readme_folder))
    by_uri = rows(cli("view", "hdf5://runs", "--json", cwd=readme_folder))
    assert len(by_folder) == len(by_uri) == 8
    assert sorted(r["name"] for r in by_folder) == sorted(r["name"] for r in by_uri)
    assert {r["status"] for r in by_folder} == {r["status"] for r in by_uri} == {"finished"}

    code = (
        "import unitrack; from unitrack.experiment import GlobalExperimentManager as G; "
        "f = unitrack.runs('runs'); t = G().find(); "
        "print(len(f), sorted(set(f['status'])), len(t['_name']), sorted(set(t['_status'])))"
    )
    result = python("-c", code, cwd=readme_folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["8", "['finished']", "8", "['finished']"]


def test_a_folder_where_only_the_quickstart_ran_lists_its_runs(tmp_path: Path) -> None:
    quick = python(str(ROOT / "examples" / "quickstart.py"), cwd=tmp_path)
    assert quick.returncode == 0, quick.stderr
    listed = rows(cli("view", "runs", "--json", cwd=tmp_path))
    assert sorted(r["name"] for r in listed) == ["step=0.001", "step=0.01", "step=0.1", "step=1.0"]
    assert {r["status"] for r in listed} == {"finished"}  # track's Completed, in the one vocabulary


@pytest.fixture
def failed(tmp_path: Path) -> Path:
    """A root with one finished and one failed run (a script that exits 4 for a=2)."""
    (tmp_path / "d.yml").write_text("a: 1\n")
    (tmp_path / "s.sh").write_text(
        '#!/bin/bash\ngrep -q "a: 2" "$1" && { echo "ValueError: a is 2"; exit 4; }\ntrue\n'
    )
    root = tmp_path / "F"
    reg = cli(
        "register",
        "-r",
        str(root),
        "-d",
        str(tmp_path / "d.yml"),
        "-s",
        str(tmp_path / "s.sh"),
        "-u",
        "{a: 1 | 2}",
    )
    assert reg.returncode == 0, reg.stderr
    assert cli("run", "-r", str(root)).returncode == 1
    return root


@pytest.mark.parametrize("word", ["error", "exception", "Exception", "ERRORGROUP"])
def test_status_is_one_vocabulary_as_input_and_output(failed: Path, word: str) -> None:
    listed = rows(cli("view", str(failed), "--status", word, "--json"))
    assert [(r["name"], r["status"]) for r in listed] == [("a=2", "error")]
    assert [r["name"] for r in rows(cli("view", str(failed), "-f", f"status=={word}", "--json"))] == ["a=2"]
    assert [r["name"] for r in rows(cli("view", str(failed), "--status", "completed,error", "--json"))] == [
        "a=1",
        "a=2",
    ]


def test_a_failed_run_shows_why_in_view(failed: Path) -> None:
    table = cli("view", str(failed))
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert "error" in header.split()
    failed_line = next(line for line in lines if line.startswith("a=2"))
    assert "ValueError: a is 2" in failed_line


def test_collection_reader_stores_are_the_stores_by_id(readme_folder: Path) -> None:
    code = (
        "from unitrack.store.readers import CollectionReader; r = CollectionReader('runs'); "
        "s = r.stores; print(sorted(s) == sorted(r.exp_ids), len(s), "
        "sorted({type(v).__name__ for v in s.values()}), len(s['step=0.1__x0=0.0']['metrics'].df))"
    )
    result = python("-c", code, cwd=readme_folder)
    assert result.returncode == 0, result.stderr
    same, count, kinds, nrows = result.stdout.split(maxsplit=3)
    assert same == "True" and int(count) == 8 and kinds == "['Store']" and int(nrows) > 0


@pytest.mark.parametrize("damage", [b"", b"{a: [unclosed\n", b"\xff\xfe not text", b"- a list\n"])
def test_a_damaged_params_yml_is_listed_as_damaged_and_hides_no_other_run(
    tmp_path: Path, damage: bytes
) -> None:
    """#12 item 7: an unreadable params.yml (no trial: an xmen folder) is listed as damaged with the file and the
    reason; a damaged params.yml beside a trial changes nothing; run, note and reset go on for the others."""
    (tmp_path / "d.yml").write_text("a: 1\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    root = tmp_path / "D"
    reg = cli(
        "register",
        "-r",
        str(root),
        "-d",
        str(tmp_path / "d.yml"),
        "-s",
        str(tmp_path / "s.sh"),
        "-u",
        "{a: 1 | 2 | 3}",
    )
    assert reg.returncode == 0, reg.stderr
    (root / "a=1" / "params.yml").write_bytes(damage)  # a run with its trial: the backend still lists it
    (root / "xmen-run").mkdir()
    (root / "xmen-run" / "params.yml").write_bytes(damage)  # a folder with only its params.yml
    listed = {r["name"]: r for r in rows(cli("view", str(root), "--json", "-c", "name,status,error"))}
    assert sorted(listed) == ["a=1", "a=2", "a=3", "xmen-run"]
    assert listed["xmen-run"]["status"] == "damaged"
    assert "xmen-run/params.yml" in listed["xmen-run"]["error"]
    assert {listed[n]["status"] for n in ("a=1", "a=2", "a=3")} == {"registered"}
    note = cli("note", "a=*", "checked", "-r", str(root))
    assert note.returncode == 0, note.stderr
    assert "noted on 2 experiment(s)" in note.stdout and "a=1" in note.stderr  # the damaged one is named
    reset = cli("reset", "a=*", "-r", str(root), "-s", "stopped")
    assert reset.returncode == 0 and "2 experiment(s) set to stopped" in reset.stdout, reset.stderr
    run = cli("run", "-r", str(root), "--rerun")
    assert "2 finished" in run.stdout, (run.stdout, run.stderr)
    assert "a=1" in run.stderr  # skipped, and said why
    after = {r["name"]: r["status"] for r in rows(cli("view", str(root), "--json"))}
    assert after == {"a=1": "registered", "a=2": "finished", "a=3": "finished", "xmen-run": "damaged"}
