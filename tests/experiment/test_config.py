"""GlobalExperimentManager.find / find_to_dataframe: xmen's search over experiment roots, never evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from unitrack.errors import ConfigError, RegisterSyntaxError
from unitrack.experiment import GlobalExperimentManager
from unitrack.experiment.manager import ExperimentManager
from unitrack.persistence.registry import get_protocol

HOSTILE = "__import__('os').system('touch PWNED')"


def make_root(tmp_path: Path, name: str, updates: str, purpose: str = "") -> ExperimentManager:
    (tmp_path / "d.yml").write_text("lr: 0.1\ndepth: 2\nopt: sgd\n")
    (tmp_path / "s.sh").write_text("#!/bin/bash\ntrue\n")
    manager = ExperimentManager(tmp_path / name)
    manager.initialise(defaults=str(tmp_path / "d.yml"), script=str(tmp_path / "s.sh"), purpose=purpose)
    manager.register(string_params=updates, purpose=purpose)
    return manager


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.chdir(tmp_path)
    a = make_root(tmp_path, "alpha", "{lr: 0.01 | 0.1, depth: 2 | 10}", purpose="grid")
    b = make_root(tmp_path, "beta", "{lr: 0.001 | 0.5}")
    a.run("lr=0.01__depth=2")
    # The backend holds the runs (params.yml mirrors it): change one run there, as a running experiment would.
    with get_protocol(f"hdf5://{b.root}") as backend:
        (trial,) = backend.fetch_trials({"name": Path(b.experiments[1]).name})
        backend.log_trial_arguments(trial, opt=HOSTILE, extra=1)
        backend.log_trial_metadata(trial, messages={"loss": 0.25})
    return [Path(a.root), Path(b.root)]


def test_find_returns_xmen_columns_and_all_parameters(roots: list[Path]) -> None:
    table = GlobalExperimentManager(roots).find()
    assert list(table)[:10] == [
        "_root", "_purpose", "_type", "_notes", "_meta", "_name", "_created", "_status", "_messages", "_version",
    ]  # fmt: skip
    assert {"lr", "depth", "opt"} <= set(table)
    assert len({len(column) for column in table.values()}) == 1 and len(table["_name"]) == 6
    assert table["_purpose"].count("grid") == 4


def test_find_param_match_compares_numbers_numerically(roots: list[Path]) -> None:
    table = GlobalExperimentManager(roots).find(param_match=["lr<0.05"])
    assert sorted(table["_name"]) == ["lr=0.001", "lr=0.01__depth=10", "lr=0.01__depth=2"]
    assert "lr" in table and "depth" not in table  # only the matched parameters are reported
    both = GlobalExperimentManager(roots).find(param_match=["lr<0.05", "2<depth<=10"])
    assert both["_name"] == ["lr=0.01__depth=10"] and both["depth"] == [10]


def test_find_by_root_pattern_type_and_status(roots: list[Path]) -> None:
    manager = GlobalExperimentManager(roots)
    assert set(manager.find(pattern="*beta")["_name"]) == {"lr=0.001", "lr=0.5"}
    assert manager.find(types_match=["python"])["_name"] == []
    finished = manager.find(param_match=["_status==finished"])
    assert finished["_name"] == ["lr=0.01__depth=2"] and finished["_status"] == ["finished"]
    again = manager.find(last=manager.find(pattern="alpha"), param_match=["depth==10"])
    assert sorted(again["_name"]) == ["lr=0.01__depth=10", "lr=0.1__depth=10"]


def test_find_missing_entry_fills_absent_parameters(roots: list[Path]) -> None:
    table = GlobalExperimentManager(roots).find(missing_entry=None)
    assert sorted(table["extra"], key=str) == [1, None, None, None, None, None]


def test_a_stored_value_that_looks_like_code_is_compared_as_text(roots: list[Path], tmp_path: Path) -> None:
    manager = GlobalExperimentManager(roots)
    assert manager.find(param_match=["opt!=sgd"])["opt"] == [HOSTILE]
    assert manager.find(param_match=["opt>sgd"])["_name"] == []  # '_' < 's' as text, nothing run
    assert manager.find(param_match=["opt<sgd"])["_name"] == ["lr=0.5"]
    assert not list(tmp_path.rglob("PWNED"))


def test_find_modes_and_bad_filters(roots: list[Path]) -> None:
    manager = GlobalExperimentManager(roots)
    sets = manager.find(mode="set")
    assert "_name" not in sets and [len(e) for e in sets["_experiments"]] == [4, 2]
    defaults = manager.find(load_defaults=True, param_match=["lr>0.2"])
    assert defaults["_name"] == ["lr=0.5"] and "_status" not in defaults
    with pytest.raises(RegisterSyntaxError, match="position"):
        manager.find(param_match=["lr<"])
    with pytest.raises(ConfigError, match="mode"):
        manager.find(mode="nope")


def test_roots_come_from_unitrack_home(
    roots: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yml").write_text(f"roots:\n- {roots[1]}\n- {tmp_path / 'missing'}\n")
    monkeypatch.setenv("UNITRACK_HOME", str(home))
    assert set(GlobalExperimentManager().find()["_name"]) == {"lr=0.001", "lr=0.5"}
    monkeypatch.setenv("UNITRACK_HOME", str(tmp_path / "nohome"))
    assert GlobalExperimentManager().roots == []


def test_find_to_dataframe_columns_and_prefix(roots: list[Path], tmp_path: Path) -> None:
    manager = GlobalExperimentManager(roots)
    frame, prefix = manager.find_to_dataframe(manager.find())
    assert prefix == str(tmp_path)
    assert list(frame.columns)[:4] == ["name", "created", "type", "purpose"]
    assert {"status", "commit", "branch", "loss", "lr", "depth", "opt"} <= set(frame.columns)
    assert "alpha/lr=0.01__depth=2" in set(frame["name"]) and len(frame) == 6
    short, _ = manager.find_to_dataframe(
        manager.find(), verbose=False, display_status=True, display_messages="lo", display_params="^lr$"
    )
    assert list(short.columns) == ["name", "status", "loss", "lr"]
