"""``unitrack view`` (#14 items 5, 6 and the speed bullet): mistakes are errors naming the closest valid keys, never
empty results; reads create nothing; ``--group-by`` gives mean ± std per group; runs come from the backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: An experiment whose loss depends on lr and seed: loss = 10 * lr + seed.
FIT = '''
from unitrack import Experiment


class Fit(Experiment):
    """A fit whose loss is known."""

    lr: float = 0.1  # @p learning rate
    seed: int = 0  # @p seed
    name: str = "Hello"  # @p a word

    def run(self):
        for step in range(3):
            self.message({"loss": 10 * self.lr + self.seed + step}, step=step)
'''


def cli(*args: str, cwd: Path | None = None, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    if home is not None:
        env["UNITRACK_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "unitrack", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def rows(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root of 6 finished Fit runs: lr 0.1 | 0.2 by seed 0 | 1 | 2 (each loss = 10 lr + seed + 2 at the end)."""
    tmp = tmp_path_factory.mktemp("fits")
    (tmp / "fit.py").write_text(FIT)
    root, home = tmp / "R", tmp / "home"  # module-scoped: the per-test UNITRACK_HOME is not set up yet
    grid = "{lr: 0.1 | 0.2, seed: 0 | 1 | 2}"
    reg = cli("register", "-r", str(root), "-e", str(tmp / "fit.py"), "-u", grid, home=home)
    assert reg.returncode == 0, reg.stderr
    run = cli("run", "-r", str(root), "-j", "2", home=home)
    assert run.returncode == 0, run.stdout + run.stderr
    return root


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("-f", "lr = 0.1"), ["'lr = 0.1'", "'=' is not an operator", "'lr'"]),
        (("-f", "nosuchkey<1"), ["'nosuchkey<1'", "Known: lr, seed, parameters.name, loss, uid, name"]),
        (("--status", "eror"), ["'eror'", "Did you mean 'error'"]),
        (("-c", "los"), ["column 'los'", "Did you mean 'loss'"]),
        (("--sort", "nosuch"), ["sort key 'nosuch'"]),
        (("--sort", "sed"), ["Did you mean 'seed'"]),
        (("--group-by", "sead"), ["group-by key 'sead'", "'seed'"]),
        (("--csv", "/nonexistent/x.csv"), ["Cannot write /nonexistent/x.csv"]),
    ],
)
def test_a_mistake_exits_2_naming_the_closest_valid_names(
    fits: Path, args: tuple[str, ...], fragments: list[str]
) -> None:
    result = cli("view", str(fits), *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_a_filter_names_keys_entirely_never_a_display_column(fits: Path) -> None:
    """A key is named entirely (`lr` is not `lr_decay`), never a display column (`age`); a field's name is the
    field's (`name` is the run's name) and a parameter with that name is `parameters.name`."""
    assert rows(cli("view", str(fits), "-f", "name==Hello", "--json")) == []
    assert len(rows(cli("view", str(fits), "-f", "name==lr=0.1__seed=0", "--json"))) == 1
    assert len(rows(cli("view", str(fits), "-f", "parameters.name==Hello", "-f", "seed>=1", "--json"))) == 4
    # No key is called `se`: xmen's prefix rule names the parameters and metrics starting so (not `status`).
    assert rows(cli("view", str(fits), "-f", "se<1", "-c", "seed", "--json")) == [{"seed": 0}] * 2
    assert {r["status"] for r in rows(cli("view", str(fits), "-f", "_status==Completed", "--json"))} == {
        "finished"
    }
    result = cli("view", str(fits), "-f", "age<1000")  # age is view's display column, not a key
    assert result.returncode == 2 and "filter 'age<1000'" in result.stderr


def test_group_by_aggregates_over_a_parameter(fits: Path) -> None:
    table = cli("view", str(fits), "--group-by", "seed")
    assert table.returncode == 0, table.stderr
    header, *lines, total = table.stdout.splitlines()
    assert header.split() == ["lr", "n", "loss"]
    assert [line.split()[:2] for line in lines] == [["0.1", "3"], ["0.2", "3"]]
    assert "4 ± 1" in lines[0] and "5 ± 1" in lines[1]  # loss = 10 lr + seed + 2 over seeds 0, 1, 2
    assert total == "2 group(s) of 6 run(s)"
    raw = rows(cli("view", str(fits), "--group-by", "seed", "--json"))
    assert [(r["lr"], r["n"], r["loss"], r["loss.std"]) for r in raw] == [
        (0.1, 3, 4.0, 1.0),
        (0.2, 3, 5.0, 1.0),
    ]


def test_group_by_in_python(fits: Path) -> None:
    code = (
        "import unitrack; from unitrack.persistence.catalog import aggregate; "
        f"t = aggregate(unitrack.runs({str(fits)!r}), 'seed'); "
        "print(t[['parameters.lr', 'n', 'metrics.loss', 'metrics.loss.std']].values.tolist())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[0.1, 3.0, 4.0, 1.0], [0.2, 3.0, 5.0, 1.0]]"


def test_notes_and_errors_are_columns_of_view(fits: Path) -> None:
    assert cli("note", "lr=0.1__seed=0", "diverged early", "-r", str(fits)).returncode == 0
    listed = {r["name"]: r for r in rows(cli("view", str(fits), "--json"))}
    assert listed["lr=0.1__seed=0"]["notes"] == ["diverged early"]
    assert "notes" in cli("view", str(fits)).stdout.splitlines()[0].split()
    shown = cli("note", "lr=0.1*", "-r", str(fits))
    assert shown.returncode == 0 and "lr=0.1__seed=0: diverged early" in shown.stdout
    assert cli("note", "lr=0.1__seed=0", "diverged early", "-r", str(fits), "--delete").returncode == 0
    assert "notes" not in cli("view", str(fits)).stdout.splitlines()[0].split()


def test_reads_create_no_file(tmp_path: Path) -> None:
    missing = cli("view", "file://nope/db.json", cwd=tmp_path)
    assert missing.returncode == 2 and "nope/db.json" in missing.stderr
    assert cli("view", "hdf5://nope", cwd=tmp_path).returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (str(empty), f"hdf5://{empty}"):
        result = cli("view", target, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip().endswith("0 run(s)"), result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]


def test_view_reads_the_backend_not_each_params_yml(tmp_path: Path) -> None:
    """The 1,000-run view read every params.yml (98% of its time); runs come from the backend's summaries, so a
    root whose params.yml files are all unreadable still lists every run with its status."""
    (tmp_path / "d.yml").write_text("a: 0\nb: 0\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    root = tmp_path / "N"
    grid = "{a: " + " | ".join(map(str, range(20))) + ", b: " + " | ".join(map(str, range(10))) + "}"
    reg = cli(
        "register", "-r", str(root), "-d", str(tmp_path / "d.yml"), "-s", str(tmp_path / "s.sh"), "-u", grid
    )
    assert reg.returncode == 0, reg.stderr
    for params in root.glob("*/params.yml"):
        params.write_text("{{{ not yaml")
    listed = rows(cli("view", str(root), "--json", "-c", "name,status,a,b"))
    assert len(listed) == 200 and {r["status"] for r in listed} == {"registered"}
    assert sorted((r["a"], r["b"]) for r in listed) == [(a, b) for a in range(20) for b in range(10)]
