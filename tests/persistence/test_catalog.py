"""The run catalog (seam 5): its columns, status words, damaged runs, filters, and that a listing never reads a
metric series or creates a file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitrack.errors import ConfigError, RegisterSyntaxError, UnknownKeyError
from unitrack.persistence import catalog, lifecycle
from unitrack.persistence.filters import KeySpace, compile_filter, compile_filters
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status, Trial, TrialGroup

SEAM_FIELDS = [
    "name",
    "status",
    "project",
    "group",
    "description",
    "created",
    "started",
    "ended",
    "last_seen",
    "host",
    "pid",
    "error",
    "notes",
    "tags",
    "version",
    "revision",
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two trials of group 'sweep' in hdf5://runs: one finished with points, one failed."""
    root = tmp_path / "runs"
    with get_protocol(f"hdf5://{root}", strict=False) as db:
        group = TrialGroup(name="sweep", project_id="p")
        db.new_trial_group(group)
        ok = db.new_trial(
            Trial(name="ok", parameters={"lr": 0.1, "opt": {"m": 0.9}}, group_id=group.uid, project_id="p")
        )
        bad = db.new_trial(Trial(name="bad", parameters={"lr": 0.5}, group_id=group.uid, project_id="p"))
        assert ok is not None and bad is not None
        db.log_trial_start(ok)
        for step in range(5):
            db.log_trial_metrics(ok, step=step, loss=1.0 / (step + 1))
        db.add_trial_tags(ok, notes=["good one"], host="node7")
        db.log_trial_finish(ok, None, None, None)
        db.log_trial_start(bad)
        try:
            raise ValueError("lr too large")
        except ValueError as exc:
            db.log_trial_finish(bad, type(exc), exc, exc.__traceback__)
    return root


def test_runs_has_the_seam_columns_in_order_indexed_by_uid(folder: Path) -> None:
    frame = catalog.runs(folder)
    assert frame.index.name == "uid" and len(frame) == 2
    assert list(frame.columns) == [*SEAM_FIELDS, "parameters.lr", "parameters.opt.m", "metrics.loss"]
    ok = frame[frame["name"] == "ok"].iloc[0]
    assert (ok["status"], ok["group"], ok["project"], ok["notes"], ok["host"]) == (
        "finished",
        "sweep",
        "p",
        ["good one"],
        "node7",
    )
    assert ok["parameters.opt.m"] == 0.9 and ok["metrics.loss"] == 0.2
    assert ok["started"] <= ok["ended"]
    bad = frame[frame["name"] == "bad"].iloc[0]
    assert bad["status"] == "error" and bad["error"] == "ValueError: lr too large"
    assert math.isnan(bad["metrics.loss"])


def test_a_folder_and_its_uri_list_the_same_runs(folder: Path) -> None:
    by_folder = catalog.runs(folder)
    by_uri = catalog.runs(f"hdf5://{folder}")
    assert by_folder.drop(columns=["tags", "notes"]).equals(by_uri.drop(columns=["tags", "notes"]))
    assert list(catalog.runs(folder / "ok")["name"]) == ["ok"]  # a run's own folder lists that run


def test_query_filters_and_status_select_runs(folder: Path) -> None:
    assert list(catalog.runs(folder, {"parameters.lr": {"$lt": 0.2}})["name"]) == ["ok"]
    assert list(catalog.runs(folder, filters=["lr>0.2"])["name"]) == ["bad"]
    assert list(catalog.runs(folder, status="Exception")["name"]) == ["bad"]
    assert list(catalog.runs(folder, status="completed,error")["name"]) == ["ok", "bad"]
    with pytest.raises(UnknownKeyError, match="Did you mean 'lr'"):
        catalog.runs(folder, filters=["lrr<1"])
    with pytest.raises(ConfigError, match="Did you mean 'error'"):
        catalog.runs(folder, status="eror")


def test_listing_reads_no_series_so_a_damaged_store_hides_no_run(folder: Path) -> None:
    journal = folder / "ok" / "store.journal"
    journal.write_bytes(b"\x00garbage" * 64)
    with get_protocol(f"hdf5://{folder}") as db:
        assert sorted(t.name for t in db.find_trial_summaries(None)) == ["bad", "ok"]
    assert sorted(catalog.runs(folder)["name"]) == ["bad", "ok"]


def test_reading_creates_no_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert catalog.runs(tmp_path / "empty").empty
    assert catalog.runs(f"hdf5://{tmp_path / 'empty'}").empty
    for missing in (f"file://{tmp_path}/nope/db.json", f"hdf5://{tmp_path}/nope", str(tmp_path / "nope")):
        with pytest.raises(ConfigError, match="nope"):
            catalog.runs(missing)
    assert [p.name for p in tmp_path.rglob("*")] == ["empty"]


def test_a_damaged_run_is_listed_as_damaged_with_its_file_and_reason() -> None:
    trial = Trial(
        name="broken",
        status=lifecycle.DAMAGED,
        metadata={"damage": {"file": "runs/broken/trial.json", "reason": "checksum mismatch"}},
    )
    row = catalog.row_of(trial)
    assert row["status"] == "damaged" and row["error"] == "runs/broken/trial.json: checksum mismatch"


def test_a_running_trial_whose_process_is_gone_is_lost_with_its_host_and_pid() -> None:
    gone = {"process": {"host": "elsewhere", "pid": 4242, "interval_s": 1.0}, "heartbeat": 1000.0}
    running = Trial(name="r", status=Status.Running, metadata=gone)
    assert catalog.run_status(running) == "lost"
    row = catalog.row_of(running)
    assert (row["status"], row["host"], row["pid"]) == ("lost", "elsewhere", 4242)
    assert row["last_seen"].timestamp() == 1000.0
    assert catalog.run_status(Trial(name="r", status=Status.Running)) == "running"  # no process recorded


def test_group_rows_gives_mean_std_and_count_per_combination() -> None:
    rows = [
        {"parameters.lr": lr, "parameters.seed": seed, "metrics.loss": 10 * lr + seed}
        for lr in (0.1, 0.2)
        for seed in (0, 1, 2)
    ]
    grouped = catalog.group_rows(rows, ["seed"])
    assert [(g["parameters.lr"], g["n"], g["metrics.loss"], g["metrics.loss.std"]) for g in grouped] == [
        (0.1, 3, 2.0, 1.0),
        (0.2, 3, 3.0, 1.0),
    ]
    with pytest.raises(UnknownKeyError, match="'seed'"):
        catalog.group_rows(rows, ["sead"])


def test_roots_are_remembered_once_in_unitrack_home(tmp_path: Path) -> None:
    catalog.remember_root(tmp_path / "a")
    catalog.remember_root(tmp_path / "a")
    catalog.remember_root(tmp_path / "b")
    assert catalog.known_roots() == [str(tmp_path / "a"), str(tmp_path / "b")]
    catalog.forget_roots([str(tmp_path / "a")])
    assert catalog.known_roots() == [str(tmp_path / "b")]


# ----------------------------------------------------------------------------------------------- filters
def test_a_filter_names_keys_entirely_before_by_prefix() -> None:
    space = KeySpace(
        ["name", "status", "parameters.a", "parameters.alpha", "parameters.name", "metrics.loss"]
    )
    assert compile_filters(["a==Bye"]).bind(space).columns == ["parameters.a"]
    assert compile_filters(["al<1"]).bind(space).columns == ["parameters.alpha"]  # xmen's prefix rule
    assert compile_filters(["name==x"]).bind(space).columns == ["name"]  # a field wins over a parameter
    assert compile_filters(["parameters.name==x"]).bind(space).columns == ["parameters.name"]
    assert compile_filters(["_status==Completed"]).bind(space).bound[0][0].right == ("==", "finished")
    with pytest.raises(UnknownKeyError, match="'=' is not an operator"):
        compile_filters(["a = 1"]).bind(space)


@given(st.text(max_size=40))
def test_any_filter_text_compiles_or_raises_a_config_error(text: str) -> None:
    try:
        flt = compile_filter(text)
    except RegisterSyntaxError:
        return
    flt.matches({"a": 1, "b": "x", "c": [1, 2], "d": None})


def test_values_compare_as_numbers_or_text_never_evaluated() -> None:
    keep = compile_filters(["lr<0.1", "opt!=__import__('os').system('x')"])
    assert keep.matches({"lr": 0.01, "opt": "sgd"}) and not keep.matches({"lr": 1e-1, "opt": "sgd"})
    assert compile_filters(["notes==done"]).matches({"notes": ["todo", "done"]})
    assert not compile_filters(["notes!=done"]).matches({"notes": ["todo", "done"]})
