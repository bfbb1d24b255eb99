"""The command line of an experiment (Experiment.main / parse_args)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.experiment.experiments_for_tests import AnExperiment, NoRun, Typed


def read_yaml(path):
    return YAML(typ="safe").load(Path(path).read_text())


def test_help_lists_every_parameter_with_type_default_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        Typed().main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--update", "--purpose", "--execute", "--to_root", "--debug", "--txt", "--restart"):
        assert flag in out
    for line in ("i: int=3 ~ an int", "f: float=0.5 ~ a float", "maybe: int | None=None ~ an optional int",
                 "seed: int=42 ~ random seed, set in __init__"):  # fmt: skip
        assert line in out


def test_no_flags_prints_the_docstring(capsys):
    AnExperiment().main([])
    out = capsys.readouterr().out
    assert out.startswith("Doc strings should be used") and out.endswith("\nFor more help use --help.\n")


def test_update_and_execute_register_and_run(tmp_path, capsys):
    ex = Typed()
    ex.main(["-u", "{i: 5, f: 1}", "{items: [7]}", "-p", "a", "purpose", "-x", str(tmp_path / "ex1")])
    assert ex.status == "finished" and ex.i == 5 and ex.f == 1.0 and ex.items == [7]
    params = read_yaml(tmp_path / "ex1" / "params.yml")
    assert params["i"] == 5 and params["_purpose"] == "a purpose" and params["_status"] == "finished"


def test_update_from_a_params_file_copies_parameters_only(tmp_path):
    Typed(str(tmp_path), "ex1", i=8)
    ex = Typed()
    ex.main(["-u", str(tmp_path / "ex1" / "params.yml"), "-x", str(tmp_path / "ex2")])
    assert ex.i == 8 and ex.root == str(tmp_path / "ex2")


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ("!!python/object/apply:os.system ['touch PWNED']", "not safe YAML"),
        ("{i: !!python/object/apply:os.system ['touch PWNED']}", "not safe YAML"),
        ("{i: three}", "Parameter 'i' expects int, got 'three'"),
        ("{nope: 1}", "'nope' is not a parameter of Typed"),
        ("[1, 2]", "is either not a valid yaml string or is not a path"),
        ("{i: [unclosed", "is not valid YAML"),
    ],
)
def test_bad_updates_are_rejected_before_anything_runs(tmp_path, monkeypatch, capsys, update, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        Typed().main(["-u", update, "-x", str(tmp_path / "ex1")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_execute_with_a_bad_name_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        Typed().main(["-x", str(tmp_path / "bad\nname")])
    assert "Invalid experiment name 'bad\\nname': contains a control character" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_execute_a_registered_params_file(tmp_path):
    registered = Typed(str(tmp_path), "ex1", i=4)
    ex = Typed()
    ex.main(["-x", str(tmp_path / "ex1" / "params.yml")])
    assert ex.status == "finished" and ex.i == 4 and ex.trial_uid == registered.trial_uid


def test_execute_a_moved_params_file_uses_its_folder(tmp_path):
    Typed(str(tmp_path / "old"), "ex1", i=4)
    (tmp_path / "old").rename(tmp_path / "new")
    ex = Typed()
    ex.main(["-x", str(tmp_path / "new" / "ex1" / "params.yml")])
    assert ex.root == str(tmp_path / "new" / "ex1") and ex.status == "finished"
    assert read_yaml(tmp_path / "new" / "ex1" / "params.yml")["_root"] == str(tmp_path / "new" / "ex1")


def test_execute_a_params_file_with_python_tags_runs_nothing(tmp_path, capsys):
    (tmp_path / "ex1").mkdir()
    marker = tmp_path / "PWNED"
    (tmp_path / "ex1" / "params.yml").write_text(
        f"_status: registered\ni: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(SystemExit):
        Typed().main(["-x", str(tmp_path / "ex1" / "params.yml")])
    assert not marker.exists()
    assert "Parameter 'i' expects int" in capsys.readouterr().err


def test_update_from_a_file_with_python_tags_is_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    (tmp_path / "defaults.yml").write_text(f"i: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit):
        Typed().main(["-u", str(tmp_path / "defaults.yml"), "-x", str(tmp_path / "ex1")])
    assert not marker.exists() and not (tmp_path / "ex1").exists()
    assert "not safe YAML" in capsys.readouterr().err


def test_execute_a_finished_params_file_is_refused(tmp_path, capsys):
    Typed(str(tmp_path), "ex1")()
    with pytest.raises(SystemExit):
        Typed().main(["-x", str(tmp_path / "ex1" / "params.yml")])
    assert "is not a valid params.yml file" in capsys.readouterr().err


def test_restart_flag_continues_the_experiment_in_dir(tmp_path):
    Typed(str(tmp_path), "ex1", i=4)
    ex = Typed()
    ex.main(["-x", str(tmp_path / "ex1"), "--restart"])
    assert ex.root == str(tmp_path / "ex1") and ex.i == 4
    ex2 = Typed()
    ex2.main(["-x", str(tmp_path / "ex1")])
    assert ex2.root == str(tmp_path / "ex1_1")


def test_execute_without_value_runs_detached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = AnExperiment()
    ex.main(["-x"])
    assert ex.status == "finished" and list(tmp_path.iterdir()) == []


def test_debug_calls_debug_first(tmp_path):
    class Debuggable(Typed):
        def debug(self):
            self.i = 1
            return self

    ex = Debuggable()
    ex.main(["-d", "-x", str(tmp_path / "ex1")])
    assert ex.is_debug and ex.i == 1


def test_txt_tees_output(tmp_path, capsys):
    AnExperiment().main(["-t", "-x", str(tmp_path / "ex1")])
    assert (tmp_path / "ex1" / "out.txt").read_text() == "Hello World!\n"


def test_execute_without_run_warns(tmp_path, capsys):
    NoRun().main(["-x", str(tmp_path / "ex1")])
    assert "run is not implemented for NoRun" in capsys.readouterr().err


def test_main_accepts_a_parsed_namespace(tmp_path):
    ex = Typed()
    args = ex.parse_args(["-u", "{i: 6}", "-x", str(tmp_path / "ex1")])
    assert ex.status == "registered"
    ex.main(args)
    assert ex.status == "finished" and ex.i == 6


def test_to_root_script_runs_a_registered_experiment(tmp_path, subprocess_env):
    root = tmp_path / "root dir"
    Typed().main(["-r", str(root), "-u", "{i: 11}"])
    assert read_yaml(root / "defaults.yml")["i"] == 11
    Typed().from_yml(str(root / "defaults.yml"), copy=True).register(str(root), "ex1")
    done = subprocess.run(
        [str(root / "script.sh"), str(root / "ex1" / "params.yml")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    params = read_yaml(root / "ex1" / "params.yml")
    assert params["_status"] == "finished" and params["i"] == 11
