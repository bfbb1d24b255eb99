"""xmen's utils at unitrack.experiment.utils."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from unitrack.errors import IncompatibleYmlException, UnsafeYAMLError
from unitrack.experiment import utils
from unitrack.experiment.functional import functional_experiment
from unitrack.experiment.meta import version_string
from unitrack.experiment.utils import (
    dic_from_yml,
    dic_to_yaml,
    dics_to_pandas,
    flatten,
    get_git,
    get_meta,
    get_run_script,
    get_size,
    get_version,
    load_param,
    load_params,
    save_param,
)


def test_every_seed_name_is_exported():
    for name in ("load_param", "save_param", "load_params", "flatten", "dic_to_yaml", "dic_from_yml", "get_size",
                 "get_meta", "get_git", "get_version", "get_run_script", "dics_to_pandas",
                 "IncompatibleYmlException", "TypedMeta", "get_attribute_helps", "get_docs"):  # fmt: skip
        assert hasattr(utils, name), name


def test_get_size():
    assert get_size(1253656) == "1.20MB" and get_size(1253656678) == "1.17GB" and get_size(10) == "10.00B"


def test_flatten_and_dics_to_pandas():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a_b": 1, "a_c_d": 2, "e": 3}
    frame = dics_to_pandas([{"a": {"b": 1}, "x": 0}, {"a": {"b": 2}, "x": 1}], "a_")
    assert list(frame.columns) == ["a_b"] and list(frame["a_b"]) == [1, 2]


def test_yaml_round_trip_keeps_comments(tmp_path):
    text = "a: 1  # the a\nb: [1, 2]\n"
    (tmp_path / "params.yml").write_text(text)
    loaded = load_param(str(tmp_path))
    loaded["a"] = 2
    save_param(loaded, str(tmp_path))
    assert (tmp_path / "params.yml").read_text() == "a: 2  # the a\nb: [1, 2]\n"
    assert load_params([str(tmp_path)]) == [{"a": 2, "b": (1, 2)}]
    assert dic_to_yaml({"a": 1}) == "a: 1\n"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_dic_from_yml_errors(tmp_path):
    assert dic_from_yml(string="{a: 1}") == {"a": 1}
    (tmp_path / "d.yml").write_text("b: 2\n")
    assert dic_from_yml(path=str(tmp_path / "d.yml")) == {"b": 2}
    with pytest.raises(IncompatibleYmlException):
        dic_from_yml(string="a", path="b")
    with pytest.raises(IncompatibleYmlException, match="does not hold a mapping"):
        dic_from_yml(string="[1]")
    with pytest.raises(IncompatibleYmlException, match="Cannot read"):
        dic_from_yml(path=str(tmp_path / "missing.yml"))
    with pytest.raises(UnsafeYAMLError):
        dic_from_yml(string="!!python/object/apply:os.system ['touch PWNED']")


def test_get_meta_never_returns_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert set(get_meta()) == {"mac", "host", "user", "home"}
    with pytest.warns(UserWarning, match="never records the whole environment"):
        meta = get_meta(get_environ=True, get_slurm=True, get_platform=True, get_cpu=True, get_memory=True)
    assert meta["environ"] == {"SLURM_JOB_ID": "42"} and meta["slurm"] == {"SLURM_JOB_ID": "42"}
    assert "hunter2" not in repr(meta)


def test_get_git_and_version(tmp_path):
    assert get_git(str(tmp_path)) == {}
    here = get_version(path=os.path.dirname(__file__))
    assert set(here["git"]) == {"local", "remote", "commit", "branch", "dirty"}
    from tests.experiment.experiments_for_tests import Typed

    version = get_version(cls=Typed)
    assert version["module"] == "tests.experiment.experiments_for_tests" and version["class"] == "Typed"


def _run_git(repo, *args):
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A real git repository with one commit of ``tracked.txt`` and ``code.py`` (a function ``train``)."""
    folder = tmp_path / "repo"
    folder.mkdir()
    _run_git(folder, "init", "-q", "-b", "main")
    (folder / "tracked.txt").write_text("one\n")
    (folder / "code.py").write_text("def train(root, lr=0.1):  # @p the rate\n    return lr\n")
    _run_git(folder, "add", "tracked.txt", "code.py")
    _run_git(folder, "commit", "-q", "-m", "first")
    return folder


def test_get_git_reports_a_clean_work_tree(repo):
    assert get_git(str(repo)) == {
        "local": os.path.realpath(repo),
        "commit": _run_git(repo, "rev-parse", "HEAD"),
        "remote": "",
        "branch": "main",
        "dirty": False,
    }


def test_untracked_files_leave_the_work_tree_clean(repo):
    (repo / "new.txt").write_text("not added\n")
    assert get_git(str(repo))["dirty"] is False


@pytest.mark.parametrize("stage", [False, True])
def test_changed_tracked_files_make_the_work_tree_dirty(repo, stage):
    (repo / "tracked.txt").write_text("two\n")
    if stage:
        _run_git(repo, "add", "tracked.txt")
    assert get_git(str(repo / "tracked.txt"))["dirty"] is True


def test_get_git_without_git_on_the_path_is_empty(repo, tmp_path, monkeypatch):
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert get_git(str(repo)) == {}


def test_version_string_reads_the_commit_of_every_layout(repo):
    commit = _run_git(repo, "rev-parse", "HEAD")
    assert version_string(get_version(path=str(repo))) == commit
    old_params_yml = {
        "module": "m",
        "class": "C",
        "git": {"local_path": "/r", "remote_url": "", "hash": commit},
    }
    assert version_string(old_params_yml) == commit
    assert version_string({"module": "m", "class": "C", "git_local": "/r", "git_commit": commit}) == commit
    assert version_string({"module": "m", "class": "C"}) == "m:C"


@pytest.fixture
def train(repo):
    """The function ``train`` imported from the repository's ``code.py``."""
    spec = importlib.util.spec_from_file_location("_repo_code", repo / "code.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_repo_code"] = module
    spec.loader.exec_module(module)
    yield module.train
    sys.modules.pop("_repo_code", None)


def test_get_version_of_a_function_records_the_function(repo, train):
    expected = {
        "module": "_repo_code",
        "function": "train",
        "path": str(repo / "code.py"),
        "git": get_git(str(repo)),
    }
    assert get_version(fn=train) == expected
    assert get_version(cls=functional_experiment(train)) == expected


def test_get_run_script_quotes_and_validates():
    script = get_run_script("pkg.mod", "Exp")
    assert script.startswith("#!/bin/sh\n") and '-m unitrack.experiment.launch pkg.mod:Exp "$@"' in script
    with pytest.raises(ValueError, match="not a Python identifier"):
        get_run_script('x"); import os; os.system("id', "Exp")
