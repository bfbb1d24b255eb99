"""xmen's classes and console output as xmen's users rely on them (issue #17 item 5)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from unitrack.errors import InvalidExperimentRoot, InvalidParameterError
from unitrack.experiment.manager import ExperimentManager
from unitrack.store import Store

from . import xmen_classes as xc
from .conftest import ROOT


def test_a_property_in_a_base_under_multiple_inheritance_is_not_a_parameter() -> None:
    assert "h" not in xc.Mixed._params
    ex = xc.Mixed()
    assert ex.h == 5
    with pytest.raises(InvalidParameterError, match="'h' is not a parameter"):
        ex.update({"h": 5})
    assert "h:" not in (xc.Mixed.__doc__ or "")


def test_a_new_annotation_changes_the_type_and_a_new_value_the_default() -> None:
    ex = xc.Retyped()
    ex.update({"a": 0.7})
    assert ex.a == 0.7
    with pytest.raises(InvalidParameterError, match="expects float"):
        xc.Retyped().update({"a": "text"})
    assert xc.Retyped._params["b"].default == 32 and xc.Retyped._params["b"].help == "batch size"


@pytest.mark.parametrize("cls", [xc.Retyped, xc.InitDefault])
def test_docstring_help_and_defaults_show_the_default_in_force(cls, tmp_path: Path) -> None:
    assert cls().b == 32
    assert "b: int=32 ~ batch size" in cls.__doc__ and "256" not in cls.__doc__
    cls().to_defaults(str(tmp_path))
    assert "b: 32 # batch size (default=32)" in (tmp_path / "defaults.yml").read_text()


def test_help_shows_the_default_in_force() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.compat.xmen_classes", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "a: float=0.5 ~ an a" in result.stdout and "b: int=32 ~ batch size" in result.stdout


def test_spec_is_importable_from_the_monitor_package() -> None:
    from unitrack.monitor import Spec

    spec = Spec("loss|acc@10s")
    assert (spec.regex, spec.modulo, spec.trigger) == ("loss|acc", 10, "step")


# ------------------------------------------------------------------------------------------- the manager
def _script_root(tmp_path: Path) -> Path:
    defaults, script = tmp_path / "d.yml", tmp_path / "s.sh"
    defaults.write_text("a: 1 # the a\nb: x # the b\n")
    script.write_text('#!/bin/bash\necho "$(cat ${1})"\n')
    return tmp_path / "root", defaults, script


def test_initialise_with_updates_changes_the_defaults(tmp_path: Path) -> None:
    root, defaults, script = _script_root(tmp_path)
    ExperimentManager(root).initialise(defaults=str(defaults), script=str(script), updates="{a: 7}")
    text = (root / "defaults.yml").read_text()
    assert "a: 7" in text and "# the a" in text and "b: x" in text
    named = tmp_path / "named"
    ExperimentManager(named).initialise(name="tests.compat.xmen_classes:Base", updates={"b": 64})
    assert "b: 64" in (named / "defaults.yml").read_text()
    with pytest.raises(InvalidParameterError, match="'zz' is not a parameter"):
        ExperimentManager(tmp_path / "bad").initialise(
            name="tests.compat.xmen_classes:Base", updates="{zz: 1}"
        )


def test_rm_deletes_the_whole_root_and_refuses_other_folders(tmp_path: Path) -> None:
    root, defaults, script = _script_root(tmp_path)
    manager = ExperimentManager(root)
    manager.initialise(defaults=str(defaults), script=str(script))
    manager.register(string_params="{a: 1 | 2}")
    assert manager.rm() == str(root.resolve()) and not root.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    with pytest.raises(InvalidExperimentRoot):
        ExperimentManager(plain).rm()
    assert (plain / "keep.txt").exists()


def test_run_with_sbatch_names_the_job_and_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, defaults, script = _script_root(tmp_path)
    manager = ExperimentManager(root)
    manager.initialise(defaults=str(defaults), script=str(script))
    manager.register(string_params="{a: 1 | 2}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')  # stands in for Slurm's sbatch
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    codes = manager.run("*", "sbatch", "-p", "gpu")
    assert set(codes.values()) == {0}
    lines = sorted(calls.read_text().splitlines())
    assert lines == [
        f"--job-name=a=1 --output={root}/a=1/slurm.out -p gpu {root}/a=1/run.sh",
        f"--job-name=a=2 --output={root}/a=2/slurm.out -p gpu {root}/a=2/run.sh",
    ]


# -------------------------------------------------------------------------------------- console output
def clock() -> datetime:
    return datetime(2020, 11, 18, 18, 0)


class Sink:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.messages: dict = {}

    def message(self, values, keep="latest", leader=None):
        self.messages.update(values)


def test_the_messenger_prints_xmens_left_messages_lines() -> None:
    from unitrack.monitor import Monitor

    out = io.StringIO()
    m = Monitor(msg="y.*->ex.*@20s", stream=out, clock=clock)
    ex1, ex2, y1, y2 = Sink("/tmp/ex1"), Sink("/tmp/ex2"), 0, 0
    for _ in m(range(40)):
        y1, y2 = y1 + 1, y2 + 2
    assert out.getvalue().splitlines() == [
        "[06:00PM 18/11/20 20/40]: Left messages ['y1', 'y2'] with ex1 at /tmp/ex1",
        "[06:00PM 18/11/20 20/40]: Left messages ['y1', 'y2'] with ex2 at /tmp/ex2",
        "[06:00PM 18/11/20 40/40]: Left messages ['y1', 'y2'] with ex1 at /tmp/ex1",
        "[06:00PM 18/11/20 40/40]: Left messages ['y1', 'y2'] with ex2 at /tmp/ex2",
    ]
    quiet = io.StringIO()
    m = Monitor(msg="y.*->ex.*@20s", stream=quiet, quiet=True)
    for _ in m(range(40)):
        pass
    assert quiet.getvalue() == "" and ex1.messages["y1"] == ex2.messages["y1"] == 40


def test_checkpoints_print_xmens_saved_line(tmp_path: Path) -> None:
    import torch

    from unitrack.monitor import Monitor

    out = io.StringIO()
    m = Monitor(str(tmp_path), ckpt="model@5s", stream=out, clock=clock)
    model = torch.nn.Linear(1, 1)
    for _ in m(range(5)):
        pass
    assert model is not None
    assert out.getvalue() == f"[06:00PM 18/11/20 5/5]: saved ['model'] at {tmp_path}/checkpoints\n"


def test_epoch_timing_has_end_and_next() -> None:
    from unitrack.monitor import Monitor

    out = io.StringIO()
    ticks = iter(range(10_000))
    m = Monitor(time="@1e", stream=out, clock=clock, timer=lambda: float(next(ticks)))
    for _ in m(range(3)):
        for _ in m(range(4)):
            pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first = dict(part.split("=", 1) for part in lines[0].split("]: ", 1)[1].split())
    assert {"wall", "end", "next", "step", "m_step", "load", "m_load"} <= set(first)
    assert first["end"] != "0:00:00" and first["next"] == first["end"]  # 2 epochs of 4 steps left, both
    last = dict(part.split("=", 1) for part in lines[-1].split("]: ", 1)[1].split())
    assert last["end"] == "0:00:00"


def test_a_new_store_prints_logging_in_as_cox_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(tmp_path, "exp1").close()
    assert capsys.readouterr().out == f"Logging in: {tmp_path}/exp1\n"
    Store(tmp_path, "exp1").close()  # an existing store: cox printed nothing
    Store(tmp_path, "exp2", quiet=True).close()
    assert capsys.readouterr().out == ""
    out = io.StringIO()
    Store(tmp_path, "exp3", stream=out).close()
    assert out.getvalue() == f"Logging in: {tmp_path}/exp3\n"
