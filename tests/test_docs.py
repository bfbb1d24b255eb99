"""The README's commands and every docstring example run as written."""

from __future__ import annotations

import doctest
import importlib
import os
import re
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


def test_readme_main_command_runs_the_quickstart(tmp_path: Path) -> None:
    assert "python examples/quickstart.py" in README
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNITRACK_URI", None)
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
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
