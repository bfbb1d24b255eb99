"""ExperimentManager, the register grammar and the view filters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import (
    AlreadyExistsError,
    ConfigError,
    ExperimentNotFoundError,
    InvalidExperimentRoot,
    RegisterSyntaxError,
)
from unitrack.experiment.manager import ExperimentManager, sanitize_name
from unitrack.experiment.paramfile import load_param
from unitrack.experiment.search import compile_filter, compile_filters
from unitrack.experiment.sweep import expand

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {
    "a": 1,
    "b": "x",
    "lr": 0.1,
    "opt": {"m": 0.9, "n": 1},
    "shape": [1, 2],
    "free": None,
    "flag": False,
}


# ---------------------------------------------------------------------------------------------- grammar
def test_alternatives_make_the_cartesian_product_in_key_order() -> None:
    out = expand("{a: 1 | 2, b: Hello | Bye}", DEFAULTS)
    assert out == [
        {"a": 1, "b": "Hello"},
        {"a": 1, "b": "Bye"},
        {"a": 2, "b": "Hello"},
        {"a": 2, "b": "Bye"},
    ]


def test_zip_pairs_alternatives_by_position() -> None:
    assert expand("{a: 1 | 2, b: 3 | 4}", DEFAULTS, zip=True) == [{"a": 1, "b": "3"}, {"a": 2, "b": "4"}]


def test_zip_with_different_lengths_is_an_error() -> None:
    with pytest.raises(RegisterSyntaxError, match="same number"):
        expand("{a: 1 | 2, b: 3 | 4 | 5}", DEFAULTS, zip=True)


def test_values_are_cast_to_the_defaults_types_and_none_never() -> None:
    out = expand("{lr: 1, a: 2.0, b: 3, free: 7, flag: true}", DEFAULTS)
    assert out == [{"lr": 1.0, "a": 2, "b": "3", "free": 7, "flag": True}]
    assert isinstance(out[0]["lr"], float) and isinstance(out[0]["a"], int)
    assert expand("{a: , lr: null}", DEFAULTS) == [{"a": None, "lr": None}]


def test_partial_dicts_merge_and_lists_keep_their_length() -> None:
    assert expand("{opt: {m: 0.5}}", DEFAULTS) == [{"opt": {"m": 0.5, "n": 1}}]
    assert expand('{shape: "[3, 4] | [5, 6]"}', DEFAULTS) == [{"shape": [3, 4]}, {"shape": [5, 6]}]
    with pytest.raises(RegisterSyntaxError, match="list of 2 items"):
        expand("{shape: [1, 2, 3]}", DEFAULTS)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{nope: 1}", "unknown key 'nope'; known: a, b, flag, free, lr, opt, shape"),
        ("{a: [1, 2] | 3}", "position 11"),
        ("{a: x}", "a is an int"),
        ("[1, 2]", "expected a mapping"),
        ("{a: !!python/object/apply:os.system [ls]}", "position"),
        ("{lr: ~normal(0, 1)}", "unknown distribution"),
        ("{lr: ~loguniform(0, 1)}", "0 < low"),
    ],
)
def test_bad_register_strings_are_config_errors_with_a_position(text: str, fragment: str) -> None:
    with pytest.raises(RegisterSyntaxError, match="position") as info:
        expand(text, DEFAULTS)
    assert fragment in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_random_search_is_seeded_and_combined_with_the_grid() -> None:
    first = expand("{lr: ~loguniform(1e-4, 1e-1), a: 1 | 2}", DEFAULTS, samples=3, seed=7)
    assert first == expand("{lr: ~loguniform(1e-4, 1e-1), a: 1 | 2}", DEFAULTS, samples=3, seed=7)
    assert len(first) == 6
    assert all(1e-4 <= o["lr"] <= 1e-1 for o in first)
    picks = expand("{b: ~choice(p, q), a: ~uniform(0, 1)}", {"a": 0.5, "b": "x"}, samples=5, seed=1)
    assert {o["b"] for o in picks} <= {"p", "q"} and all(0 <= o["a"] <= 1 for o in picks)


@given(st.text(max_size=60))
def test_any_text_gives_experiments_or_a_config_error(text: str) -> None:
    try:
        out = expand(text, DEFAULTS)
    except RegisterSyntaxError as exc:
        assert 0 <= exc.position <= max(len(text), 1) + 2
    else:
        assert isinstance(out, list) and all(isinstance(o, dict) for o in out)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "lr"]), st.lists(st.integers(-5, 5), min_size=1, max_size=3))
)
def test_number_of_experiments_is_the_product_of_alternatives(spec: dict[str, list[int]]) -> None:
    text = (
        "{"
        + ", ".join(
            f"{k}: {' | '.join(map(str, v))}" if len(v) > 1 else f"{k}: {v[0]}" for k, v in spec.items()
        )
        + "}"
    )
    expected = 1
    for v in spec.values():
        expected *= len(v)
    assert len(expand(text, DEFAULTS)) == expected


# ------------------------------------------------------------------------------------------------ filters
def test_filters_compare_numbers_and_strings_without_eval() -> None:
    assert compile_filters(["lr<0.1"]).matches({"lr": 0.01})
    assert not compile_filters(["lr<0.1"]).matches({"lr": 0.5})
    assert compile_filters(["0<=a<4", "b==x"]).matches({"a": 2, "b": "x"})
    assert not compile_filters(["b==__import__('os')"]).matches({"b": "x"})
    assert compile_filters(["l"]).keys({"lr": 1, "x": 2}) == ["lr"]


@pytest.mark.parametrize(("text", "position"), [("lr<", 3), ("<3", 0), ("a<b<c<d", 7), ("1<(<2", 2)])
def test_filter_syntax_errors_name_the_position(text: str, position: int) -> None:
    with pytest.raises(RegisterSyntaxError, match=f"position {position}"):
        compile_filter(text)


@given(st.text(max_size=30))
def test_any_filter_text_compiles_or_raises_a_config_error(text: str) -> None:
    try:
        compile_filter(text).matches({"a": 1, "b": "x"})
    except RegisterSyntaxError:
        pass


# ------------------------------------------------------------------------------------------------ manager
@pytest.fixture
def manager(tmp_path: Path) -> ExperimentManager:
    (tmp_path / "defaults.yml").write_text("a: 1  # a number\nb: x\nlr: 0.1\n")
    (tmp_path / "script.sh").write_text('#!/bin/bash\necho "$1"\n')
    m = ExperimentManager(tmp_path / "root")
    m.initialise(defaults=str(tmp_path / "defaults.yml"), script=str(tmp_path / "script.sh"), purpose="test")
    return m


def test_uninitialised_root_raises_invalid_experiment_root(tmp_path: Path) -> None:
    with pytest.raises(InvalidExperimentRoot, match="missing experiment.yml"):
        ExperimentManager(tmp_path).check_initialised()
    with pytest.raises(InvalidExperimentRoot):
        ExperimentManager(tmp_path).register(string_params="{a: 1}")


def test_initialise_twice_is_refused(manager: ExperimentManager) -> None:
    with pytest.raises(AlreadyExistsError):
        manager.initialise()


def test_register_writes_params_run_sh_and_a_trial(manager: ExperimentManager) -> None:
    folders = manager.register(string_params="{a: 1 | 2, b: y}")
    assert [os.path.basename(f) for f in folders] == ["a=1__b=y", "a=2__b=y"]
    params = load_param(folders[1])
    assert (params["a"], params["b"], params["lr"], params["_status"]) == (2, "y", 0.1, "registered")
    assert params["_root"] == folders[1] and params["_purpose"] == "test"
    assert os.access(os.path.join(folders[1], "run.sh"), os.X_OK)
    assert ExperimentManager(manager.root).experiments == folders  # experiment.yml remembers them
    from unitrack.persistence.registry import get_protocol

    with get_protocol(f"hdf5://{manager.root}") as db:
        trials = {t.name: t for t in db.fetch_trials(None)}
    assert trials["a=2__b=y"].parameters == {"a": 2, "b": "y", "lr": 0.1}


def test_repeats_and_names_get_suffixes_and_never_overwrite(manager: ExperimentManager) -> None:
    first = manager.register(string_params="{a: 3}", repeats=3, backend="ephemeral://")
    assert [os.path.basename(f) for f in first] == ["a=3", "a=3_1", "a=3_2"]
    import unitrack.experiment.manager as mod

    old = mod.SAME_NAMES
    mod.SAME_NAMES = 2
    try:
        with pytest.raises(AlreadyExistsError, match="all taken"):
            manager.register(string_params="{a: 3}", repeats=1, backend="ephemeral://")
    finally:
        mod.SAME_NAMES = old


def test_register_needs_a_name_or_string_params(manager: ExperimentManager) -> None:
    with pytest.raises(ValueError, match="name or string_params"):
        manager.register()


def test_names_cannot_leave_the_root(manager: ExperimentManager, tmp_path: Path) -> None:
    folders = manager.register(string_params="{b: ../../x}", backend="ephemeral://")
    folders += manager.register(name="../escape", backend="ephemeral://")
    for folder in folders:
        assert os.path.dirname(os.path.realpath(folder)) == os.path.realpath(manager.root)
    assert not (tmp_path / "x").exists() and not (tmp_path / "escape").exists()
    assert load_param(folders[0])["b"] == "../../x"


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "x\x00y", "\n", "a" * 500, "c:\\d"])
def test_sanitized_names_are_single_safe_components(name: str) -> None:
    safe = sanitize_name(name)
    assert "/" not in safe and "\\" not in safe and ".." not in safe and not safe.startswith(".")
    assert all(ord(c) >= 32 for c in safe) and 0 < len(safe) <= 120


def test_note_reset_unlink_relink_clean_and_move(manager: ExperimentManager, tmp_path: Path) -> None:
    folders = manager.register(string_params="{a: 1 | 2}", backend="ephemeral://")
    manager.note("a=1", "look")
    assert list(load_param(folders[0])["_notes"]) == ["look"]
    manager.note("a=1", "look", remove=True)
    assert list(load_param(folders[0])["_notes"]) == []
    manager.reset("a=*", "finished")
    assert manager.status(folders[1]) == "finished"
    with pytest.raises(ExperimentNotFoundError):
        manager.reset("zzz")
    assert manager.unlink("a=2") == [folders[1]]
    assert manager.experiments == [folders[0]]
    assert manager.relink("a=2") == [folders[1]]
    manager.unlink("a=2")
    (tmp_path / "root" / "keep").mkdir()
    assert manager.clean() == [folders[1]]
    assert not os.path.exists(folders[1]) and (tmp_path / "root" / "keep").exists()
    new = manager.move(tmp_path / "moved")
    assert manager.experiments == [os.path.join(new, "a=1")]
    assert load_param(os.path.join(new, "a=1"))["_root"] == os.path.join(new, "a=1")
    assert ExperimentManager(new).experiments == manager.experiments


def test_run_runs_registered_scripts_and_marks_them(manager: ExperimentManager, tmp_path: Path) -> None:
    (Path(manager.root) / "script.sh").write_text(
        '#!/bin/bash\ngrep -q "a: 2" "$1" && exit 3\necho ran "$1"\n'
    )
    folders = manager.register(string_params="{a: 1 | 2}")
    codes = manager.run("*")
    assert codes == {folders[0]: 0, folders[1]: 3}
    assert manager.status(folders[0]) == "finished" and manager.status(folders[1]) == "error"
    assert "ran" in Path(folders[0], "run.log").read_text()
    assert manager.run("*") == {}  # finished and failed runs are skipped


INJECTIONS = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "; touch PWNED; rm -rf ~",
    "a b",
    'it\'s "quoted"',
    "line\nbreak",
]


def test_hostile_values_round_trip_and_run_nothing(manager: ExperimentManager, tmp_path: Path) -> None:
    (Path(manager.root) / "script.sh").write_text('#!/bin/bash\ncat "$1" > /dev/null\n')
    for value in INJECTIONS:
        quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        folders = manager.register(string_params=f'{{b: "{quoted}"}}')
        assert load_param(folders[0])["b"] == value
    codes = manager.run("*")
    assert set(codes.values()) == {0}
    found = subprocess.run(["find", str(tmp_path), "-name", "PWNED"], capture_output=True, text=True).stdout
    assert found == "" and not Path("PWNED").exists()


def test_initialise_from_an_experiment_file(tmp_path: Path) -> None:
    m = ExperimentManager(tmp_path / "q")
    m.initialise(name=str(ROOT / "examples" / "quadratic.py"))
    assert set(m._parameters(m.load_defaults())) == {"x0", "step", "tol", "iterations"}
    script = (tmp_path / "q" / "script.sh").read_text()
    assert f"{sys.executable} -m unitrack.experiment.launch {ROOT / 'examples' / 'quadratic.py'}" in script
    with pytest.raises(ConfigError):
        ExperimentManager(tmp_path / "r").initialise(name="no_such_module:Thing")


def test_an_experiment_file_runs_without_a_main_block_and_imports_its_neighbours(
    tmp_path: Path, subprocess_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "helper.py").write_text("SCALE = 3\n")
    (code / "exp.py").write_text(
        "from helper import SCALE\n"
        "from unitrack.experiment import Experiment\n\n"
        "class Scaled(Experiment):\n"
        '    """Scale x."""\n\n'
        "    x: int = 1  # @p the input\n\n"
        "    def run(self):\n"
        '        self.message({"y": self.x * SCALE})\n'
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading the file puts code/ on sys.path
    manager = ExperimentManager(tmp_path / "set")
    manager.initialise(name=str(code / "exp.py"))
    folders = manager.register(string_params="{x: 2 | 5}")
    for key, value in subprocess_env.items():
        monkeypatch.setenv(key, value)
    assert set(manager.run("*").values()) == {0}
    assert [load_param(f)["_messages"]["y"] for f in folders] == [6, 15]


def test_a_combination_registered_again_needs_repeats(manager: ExperimentManager) -> None:
    manager.register(string_params="{a: 1 | 2}", backend="ephemeral://")
    with pytest.raises(ConfigError, match=r"1 of these experiments are already registered .*a=2.*repeats"):
        manager.register(string_params="{a: 2 | 3}", backend="ephemeral://")
    assert [os.path.basename(p) for p in manager.experiments] == ["a=1", "a=2"]  # nothing written
    again = manager.register(string_params="{a: 2 | 3}", repeats=2, backend="ephemeral://")
    assert [os.path.basename(p) for p in again] == ["a=2_1", "a=2_2", "a=3", "a=3_1"]
    assert manager.register(string_params="{a: 4}", backend="ephemeral://")  # a new combination needs nothing


def test_roots_registered_from_python_are_remembered(tmp_path: Path) -> None:
    from unitrack.experiment import Experiment, GlobalExperimentManager

    class Single(Experiment):
        """One parameter."""

        x: int = 1  # @p x

    (tmp_path / "d.yml").write_text("a: 1\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    managed = ExperimentManager(tmp_path / "managed")
    managed.initialise(defaults=str(tmp_path / "d.yml"), script=str(tmp_path / "s.sh"))
    managed.register(string_params="{a: 1 | 2}")
    Single().register(tmp_path / "standalone", "one")
    finder = GlobalExperimentManager()
    assert finder.roots == [str(tmp_path / "managed"), str(tmp_path / "standalone")]
    table = finder.find()
    assert sorted(zip(table["_root"], table["_name"], strict=True)) == [
        (str(tmp_path / "managed"), "a=1"),
        (str(tmp_path / "managed"), "a=2"),
        (str(tmp_path / "standalone"), "one"),
    ]
    assert set(table["_status"]) == {"registered"}
    import shutil

    shutil.rmtree(tmp_path / "managed")
    assert GlobalExperimentManager().clean() == [str(tmp_path / "managed")]
    assert GlobalExperimentManager().roots == [str(tmp_path / "standalone")]
