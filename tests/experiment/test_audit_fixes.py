"""Defects an audit of the experiment layer found: each is reproduced here as a user would meet it."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from tests.experiment.experiments_for_tests import AnExperiment, Typed
from unitrack.errors import (
    ExperimentStateError,
    IncompatibleYmlException,
    InvalidNameError,
    SchemaError,
    StorageError,
    UnknownSchemeError,
)
from unitrack.experiment import Experiment
from unitrack.persistence.registry import get_protocol


def read_yaml(path):
    return YAML(typ="safe").load(Path(path).read_text())


def trial_of(ex):
    return ex.backend.fetch_trials({"uid": ex.trial_uid})[0]


class Color(enum.IntEnum):
    RED = 1


class Messenger(Experiment):
    """Sends what it is given."""

    def run(self, messages):
        self.message(messages)


def test_message_values_of_subclassed_types_become_plain(tmp_path):
    ex = Messenger(str(tmp_path), "ex1")
    ex(
        {
            "f64": np.float64(0.5),
            "i64": np.int64(3),
            "text": np.str_("x"),
            "flag": True,
            "color": Color.RED,
            "tensor_like": np.array(2.5),
        }
    )
    expected = {"f64": 0.5, "i64": 3.0, "text": "x", "flag": 1.0, "color": 1.0, "tensor_like": 2.5}
    assert ex.messages == expected and all(type(v) in (float, str) for v in ex.messages.values())
    params = read_yaml(tmp_path / "ex1" / "params.yml")
    assert params["_status"] == "finished" and params["_messages"] == expected
    trial = trial_of(ex)
    assert trial.metadata["messages"] == expected and trial.metadata["status"] == "finished"
    assert trial.metrics["flag"].values == (1.0,) and "text" not in trial.metrics


def test_a_refused_message_uses_no_step(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1")
    ex.message({"x": 1.0})
    with pytest.raises(SchemaError, match="float64"):
        ex.message({"x": 10**400})
    ex.message({"x": 2.0})
    assert trial_of(ex).metrics["x"].steps == (1, 2)


def test_from_yml_cannot_change_a_registered_experiment(tmp_path):
    Typed(str(tmp_path), "a", i=5)
    b = Typed(str(tmp_path), "b")
    for copy in (True, False):
        with pytest.raises(ExperimentStateError, match="new instance"):
            b.from_yml(str(tmp_path / "a" / "params.yml"), copy=copy)
    assert b.i == 3 and b.directory == str(tmp_path / "b")
    assert Typed().from_yml(str(tmp_path / "a" / "params.yml"), copy=True).i == 5  # a new instance may


OLD_PARAMS = """\
_root: /somewhere/old
_status: registered
_meta:
  host: old-host
  environ:
    SECRET_TOKEN: hunter2
    CUDA_VISIBLE_DEVICES: '0'
i: 3
"""


def test_an_old_params_file_never_carries_environment_variables_on(tmp_path):
    folder = tmp_path / "old" / "ex1"
    folder.mkdir(parents=True)
    (folder / "params.yml").write_text(OLD_PARAMS)
    ex = Typed().register(str(tmp_path / "old"), "ex1", restart=True)
    assert ex._meta["environ"] == {"CUDA_VISIBLE_DEVICES": "0"} and ex._meta["host"] == "old-host"
    found = subprocess.run(["grep", "-rl", "hunter2", str(tmp_path)], capture_output=True, text=True).stdout
    assert found == ""


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("_timestamps: [1, 2]", "_timestamps"),
        ("_messages: 3", "_messages"),
        ("_version: 3", "_version"),
        ("_notes: abc", "_notes"),
        ("_purpose: [a]", "_purpose"),
        ("_meta: x", "_meta"),
    ],
)
def test_a_params_file_with_a_malformed_special_key_is_refused_naming_it(tmp_path, line, key):
    path = tmp_path / "params.yml"
    path.write_text(f"_status: registered\ni: 4\n{line}\n")
    ex = Typed()
    with pytest.raises(IncompatibleYmlException, match=key):
        ex.from_yml(str(path))
    assert ex.i == 3 and ex.status == "default"


def test_a_failed_registration_leaves_the_experiment_and_the_disk_as_they_were(tmp_path):
    ex = Typed()
    with pytest.raises(UnknownSchemeError):
        ex.register(str(tmp_path), "c", backend="bogus://x")
    assert ex.status == "default" and ex.root is None and not (tmp_path / "c").exists()
    ex.update({"i": 9})  # still editable
    ex.register(str(tmp_path), "c", backend="ephemeral://")
    assert ex.status == "registered" and ex.i == 9


def test_a_folder_that_cannot_be_made_is_a_storage_error(tmp_path):
    (tmp_path / "afile").write_text("")
    ex = Typed()
    with pytest.raises(StorageError, match="afile"):
        ex.register(str(tmp_path / "afile"), "x")
    assert ex.status == "default"


@pytest.mark.parametrize("name", [".unitrack", ".hidden"])
def test_hidden_names_are_refused(tmp_path, name):
    with pytest.raises(InvalidNameError, match="starts with '.'"):
        Typed(str(tmp_path), name)
    assert not (tmp_path / name).exists()


def test_a_path_ending_in_dotdot_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(InvalidNameError, match="relative folder"):
        Typed().register(str(tmp_path / "a" / ".."))
    assert not (tmp_path / "params.yml").exists()


def test_running_an_edited_params_file_updates_the_trial_parameters(tmp_path):
    Typed(str(tmp_path), "e")
    path = tmp_path / "e" / "params.yml"
    path.write_text(path.read_text().replace("\ni: 3", "\ni: 4"))
    ex = Typed()
    ex.main(["-x", str(path)])
    assert ex.i == 4
    (trial,) = get_protocol(f"hdf5://{tmp_path}").fetch_trials({"name": "e"})
    assert trial.parameters["i"] == 4
    assert get_protocol(f"hdf5://{tmp_path}").fetch_trials({"parameters.i": 4})


CLI = """\
from tests.experiment.experiments_for_tests import Typed
Typed().main()
"""


def cli(tmp_path, *args, env=None):
    script = tmp_path / "cli.py"
    script.write_text(CLI)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    env.pop("UNITRACK_URI", None)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-r", "{tmp}/r", "-x", "{tmp}/r/e1"], "separate steps"),
        (["-x", "{tmp}/afile/x"], "Cannot create the experiment folder"),
        (["-x", "{tmp}/.hidden"], "starts with '.'"),
        (["-u", "{{i: 7}}", "-x", "{tmp}/reg/e/params.yml"], "--update cannot change"),
        (["-u", "{{i: 7}}", "-f", "-x", "{tmp}/reg/e"], "--update cannot change"),
    ],
)
def test_contradicting_or_impossible_flags_exit_2_with_a_message(tmp_path, args, message):
    (tmp_path / "afile").write_text("")
    Typed(str(tmp_path / "reg"), "e")
    result = cli(tmp_path, *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert read_yaml(tmp_path / "reg" / "e" / "params.yml")["i"] == 3
    assert not (tmp_path / "r" / "e1").exists()


def test_debug_flag_says_so(tmp_path):
    result = cli(tmp_path, "-d", "-x", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Running as debug\n")


def test_to_root_script_keeps_the_callers_pythonpath(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    extra = tmp_path / "extra"  # a dependency the caller provides through PYTHONPATH
    extra.mkdir()
    (extra / "extra_dep.py").write_text("WHO = 'you'\n")
    (package / "exps.py").write_text(
        "import extra_dep\n"
        "from unitrack.experiment import Experiment\n\n"
        "class Hello(Experiment):\n"
        '    """Say hello."""\n\n'
        "    who: str = 'you'  # @p whom\n\n"
        "    def run(self):\n"
        "        print('hello', self.who)\n"
    )
    sys.path[:0] = [str(package), str(extra)]
    try:
        import exps  # noqa: PLC0415 - the module under test is made here

        exps.Hello().to_root(str(tmp_path / "root"))
    finally:
        sys.path.remove(str(package))
        sys.path.remove(str(extra))
        sys.modules.pop("exps", None)
        sys.modules.pop("extra_dep", None)
    script = (tmp_path / "root" / "script.sh").read_text()
    assert "${PYTHONPATH:+:$PYTHONPATH}" in script and "env PYTHONPATH" not in script
    unitrack_path = str(Path(__file__).resolve().parents[2])
    register = f"import exps; exps.Hello({str(tmp_path / 'root')!r}, 'e1')"
    made = subprocess.run(
        [sys.executable, "-c", register],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{package}:{extra}:{unitrack_path}"},
    )
    assert made.returncode == 0, made.stderr
    # The script puts pkg/ first and keeps the caller's PYTHONPATH (extra_dep's folder) after it.
    result = subprocess.run(
        [str(tmp_path / "root" / "script.sh"), str(tmp_path / "root" / "e1" / "params.yml")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{extra}:{unitrack_path}"},
    )
    assert result.returncode == 0, result.stderr
    assert "hello you" in result.stdout


@pytest.mark.parametrize("name", ["debug", "version", "purpose", "message", "run"])
def test_a_parameter_named_like_an_experiment_member_is_refused_at_class_definition(tmp_path, name):
    import importlib.util

    from unitrack.errors import InvalidParameterError

    path = tmp_path / f"clash_{name}.py"
    path.write_text(
        "from unitrack.experiment import Experiment\n\n"
        f'class Clash(Experiment):\n    """c"""\n\n    {name}: int = 1  # @p clashes\n'
    )
    spec = importlib.util.spec_from_file_location(f"clash_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where inspect looks for the class's source, as for any import
    try:
        with pytest.raises(InvalidParameterError, match=f"Experiment.{name}"):
            spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]


def test_running_a_params_file_with_a_new_purpose_updates_the_trial_description(tmp_path):
    Typed(str(tmp_path), "e", purpose="first")
    ex = Typed()
    ex.main(["-p", "second", "-x", str(tmp_path / "e" / "params.yml")])
    assert read_yaml(tmp_path / "e" / "params.yml")["_purpose"] == "second"
    (trial,) = get_protocol(f"hdf5://{tmp_path}").fetch_trials({"name": "e"})
    assert trial.description == "second"


def test_a_run_that_never_messages_is_a_cox_store_too(tmp_path):
    from unitrack.store import Store
    from unitrack.store.readers import CollectionReader

    Typed(str(tmp_path), "quiet", i=7)()
    assert CollectionReader(str(tmp_path)).df("metadata")["i"].tolist() == [7]
    with Store(str(tmp_path), "quiet", mode="r") as store:
        assert "metadata" in store.tables
