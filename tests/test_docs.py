"""The README's commands and every docstring example run as written."""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "unitrack").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name.endswith("__main__"):
            continue
        names.append(name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write here
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0


def _shell_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who ran ``pip install .``: ``unitrack`` on PATH, the package importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    if (
        shutil.which("unitrack") is None
    ):  # a checkout used without installing: a stand-in for the console script
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "unitrack"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m unitrack "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def test_readme_main_command_runs_a_sweep(tmp_path: Path) -> None:
    """The README's main command, exactly as written after its install step, in a fresh folder."""
    line = next(line for line in README.splitlines() if line.startswith("python -m pip install . && "))
    command = line.removeprefix("python -m pip install . && ")
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "quadratic.py", tmp_path / "examples" / "quadratic.py")
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=_shell_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    view = done.stdout[done.stdout.rindex("name") :]  # the table `unitrack view runs` printed last
    assert view.count("finished") == 4, view
    runs = tmp_path / "runs"
    reader_dirs = [p for p in runs.iterdir() if (p / "store.h5").exists()]
    assert len(reader_dirs) == 4  # each run is a cox store in the experiment folder


def test_quickstart_example_runs(tmp_path: Path) -> None:
    env = _shell_env(tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"step=0\.01\s+completed\s+203\s+3\.000000", out), out
    assert (
        tmp_path / "runs" / "step=0.01" / "store.h5"
    ).exists()  # the embedded default: one cox store per trial


def test_readme_names_the_test_command_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pip install torch==2.13.0 -e '.[dev]' && scripts/check"
    assert command in README
    assert "torch==2.13.0 -e '.[dev]'" in ci and "scripts/check" in ci


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_readme_python_examples_run(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNITRACK_URI", raising=False)
    block = re.findall(r"```python\n(.*?)```", README, flags=re.S)[index]
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
