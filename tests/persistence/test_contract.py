"""The contract every backend honours, written once against the Protocol (see conftest.BACKENDS)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from tests.persistence.conftest import BACKENDS
from unitrack.errors import InvalidNameError, InvalidQueryError, ItemNotFound, NotFoundError, SchemaError
from unitrack.persistence.aggregators import StatAggregator
from unitrack.persistence.protocol import PRIMITIVES, Protocol
from unitrack.persistence.registry import known_schemes
from unitrack.persistence.structure import (
    CustomStatus,
    Metric,
    MetricPoint,
    Project,
    Status,
    Trial,
    TrialGroup,
    TrialUpdate,
)


def test_every_registered_scheme_is_in_the_contract_suite() -> None:
    canonical = {s for s, b in known_schemes().items() if s not in b.aliases and b.in_contract_suite}
    missing = canonical - set(BACKENDS)
    assert not missing, f"schemes registered without a contract-suite entry: {sorted(missing)}"


def test_primitives_are_the_abstract_methods() -> None:
    assert "update_trial" in PRIMITIVES and "log_trial_metrics" not in PRIMITIVES
    with pytest.raises(TypeError, match="abstract"):
        Protocol()  # type: ignore[abstract]


@pytest.fixture
def project(protocol: Protocol) -> Project:
    return protocol.new_project(Project(name="proj", description="d"))


@pytest.fixture
def trial(protocol: Protocol, project: Project) -> Trial:
    stored = protocol.new_trial(
        Trial(name="t1", project_id=project.uid, parameters={"lr": 0.1, "opt": {"m": 0.9}})
    )
    assert stored is not None
    return stored


# ------------------------------------------------------------------------------------------------ projects
def test_new_project_twice_returns_the_existing_one(protocol: Protocol) -> None:
    first = protocol.new_project(Project(name="p", description="first"))
    again = protocol.new_project(Project(name="p", description="second"))
    assert again.uid == first.uid == "p"
    assert protocol.get_project(Project(name="p")).description == "first"  # type: ignore[union-attr]


def test_get_project_of_a_missing_project_returns_none(protocol: Protocol) -> None:
    assert protocol.get_project(Project(name="nope")) is None


def test_project_lists_its_groups_and_trials(protocol: Protocol, project: Project, trial: Trial) -> None:
    group = protocol.new_trial_group(TrialGroup(name="g", project_id=project.uid))
    assert group is not None
    stored = protocol.get_project(project)
    assert stored is not None and stored.trials == {trial.uid} and stored.groups == {group.uid}
    assert [p.uid for p in protocol.fetch_projects({"name": "proj"})] == ["proj"]


# -------------------------------------------------------------------------------------------------- groups
def test_group_of_a_missing_project_is_refused_when_strict(protocol: Protocol) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        protocol.new_trial_group(TrialGroup(name="g", project_id="ghost"))
    assert protocol.fetch_groups(None) == []


def test_group_lifecycle(protocol: Protocol, project: Project, trial: Trial) -> None:
    group = protocol.new_trial_group(TrialGroup(name="sweep", project_id=project.uid))
    assert group is not None and group.trials == frozenset()
    assert protocol.new_trial_group(TrialGroup(name="sweep", project_id=project.uid)) is None
    protocol.add_group_trial(group, trial)
    protocol.set_group_metadata(group, a=1)
    protocol.set_group_metadata(group, b=2)
    stored = protocol.get_trial_group(group)
    assert stored is not None
    assert stored.trials == {trial.uid} and dict(stored.metadata) == {"a": 1, "b": 2}
    assert protocol.fetch_trials({"group_id": group.uid})[0].uid == trial.uid
    updated = protocol.fetch_and_update_group({"name": "sweep"}, "set_group_metadata", c=3)
    assert dict(updated.metadata) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ItemNotFound):
        protocol.fetch_and_update_group({"name": "other"}, "set_group_metadata", c=3)


def test_same_group_name_in_two_projects_are_two_groups(protocol: Protocol) -> None:
    protocol.new_project(Project(name="a"))
    protocol.new_project(Project(name="b"))
    ga = protocol.new_trial_group(TrialGroup(name="g", project_id="a"))
    gb = protocol.new_trial_group(TrialGroup(name="g", project_id="b"))
    assert ga is not None and gb is not None and ga.uid != gb.uid


# -------------------------------------------------------------------------------------------------- trials
def test_new_trial_of_an_existing_trial_returns_none(protocol: Protocol, trial: Trial) -> None:
    again = Trial(name="t1", project_id="proj", parameters={"lr": 0.1, "opt": {"m": 0.9}})
    assert again.uid == trial.uid
    assert protocol.new_trial(again) is None


def test_auto_increment_stores_a_new_revision_with_the_same_hash(protocol: Protocol, trial: Trial) -> None:
    again = Trial(name="t1", project_id="proj", parameters={"lr": 0.1, "opt": {"m": 0.9}})
    second = protocol.new_trial(again, auto_increment=True)
    third = protocol.new_trial(again, auto_increment=True)
    assert second is not None and third is not None
    assert (second.revision, third.revision) == (1, 2)
    assert second.hash == trial.hash
    assert [t.revision for t in protocol.get_trial(trial)] == [0, 1, 2]


def test_get_trial_of_a_missing_trial_returns_an_empty_list(protocol: Protocol) -> None:
    assert protocol.get_trial(Trial(name="ghost")) == []


def test_trial_of_a_missing_project_is_refused_and_nothing_written(protocol: Protocol) -> None:
    with pytest.raises(NotFoundError, match="ghost"):
        protocol.new_trial(Trial(name="t", project_id="ghost"))
    assert protocol.fetch_trials(None) == []


def test_non_strict_backend_accepts_trials_without_project(make_protocol) -> None:  # type: ignore[no-untyped-def]
    p = make_protocol(strict=False)
    assert p.new_trial(Trial(name="t", project_id="ghost")) is not None


def test_add_project_trial_attaches_it(protocol: Protocol) -> None:
    protocol.new_project(Project(name="other"))
    t = protocol.new_trial(Trial(name="loose"))
    assert t is not None
    protocol.add_project_trial(Project(name="other"), t)
    assert protocol.fetch_trials({"uid": t.uid})[0].project_id == "other"
    with pytest.raises(NotFoundError):
        protocol.add_project_trial(Project(name="missing"), t)


def test_update_of_a_missing_trial_raises_and_writes_nothing(protocol: Protocol, trial: Trial) -> None:
    with pytest.raises(NotFoundError, match="no_such"):
        protocol.log_trial_metrics("no_such_0", step=1, loss=1.0)
    assert protocol.fetch_trials(None)[0].metrics == {}


# ------------------------------------------------------------------------------------------------- merging
def test_arguments_metadata_and_tags_merge(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_arguments(trial, batch=32)
    protocol.log_trial_arguments(trial, lr=0.2)
    protocol.log_trial_metadata(trial, host="a", gpu=None)
    protocol.log_trial_metadata(trial, host="b")
    protocol.add_trial_tags(trial, team="x")
    protocol.add_trial_tags(trial, notes=["n1", "n2"])
    stored = protocol.fetch_trials({"uid": trial.uid})[0]
    assert dict(stored.parameters) == {"lr": 0.2, "opt": {"m": 0.9}, "batch": 32}
    assert dict(stored.metadata) == {"host": "b", "gpu": None}
    assert dict(stored.tags) == {"team": "x", "notes": ["n1", "n2"]}
    assert stored.hash == trial.hash  # parameters merged later do not change the identity


def test_fetched_objects_are_snapshots(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_metadata(trial, nested={"k": [1, 2]})
    first = protocol.fetch_trials(None)[0]
    first.metadata["nested"]["k"].append(3)  # type: ignore[index]
    assert protocol.fetch_trials(None)[0].metadata["nested"] == {"k": [1, 2]}


# --------------------------------------------------------------------------------------------- description
def test_an_update_replaces_the_description_and_one_without_it_keeps_it(
    protocol: Protocol, project: Project
) -> None:
    t = protocol.new_trial(Trial(name="described", project_id=project.uid, description="first purpose"))
    assert t is not None
    protocol.update_trial(t.uid, TrialUpdate(description="second purpose", metadata={"k": 1}))
    stored = protocol.fetch_trials({"uid": t.uid})[0]
    assert stored.description == "second purpose" and dict(stored.metadata) == {"k": 1}
    protocol.update_trial(t.uid, TrialUpdate(metadata={"k": 2}))
    protocol.set_trial_status(t, Status.Running)
    protocol.log_trial_metrics(t, step=0, loss=1.0)
    assert protocol.fetch_trials({"uid": t.uid})[0].description == "second purpose"
    assert [x.uid for x in protocol.fetch_trials({"description": "second purpose"})] == [t.uid]
    taken = protocol.find_and_update_trial({"uid": t.uid}, TrialUpdate(description="taken"))
    assert taken is not None and taken.description == "taken"
    protocol.update_trial(t.uid, TrialUpdate(description=""))  # an empty description is a description
    stored = protocol.fetch_trials({"uid": t.uid})[0]
    assert stored.description == "" and dict(stored.metadata) == {"k": 2}
    assert stored.metrics["loss"].values == (1.0,) and stored.status is Status.Running


@pytest.mark.parametrize("bad", [5, b"purpose", ["purpose"], "nul\x00char"])
def test_a_bad_description_is_refused_with_schema_error_and_nothing_written(
    protocol: Protocol, trial: Trial, bad: Any
) -> None:
    with pytest.raises(SchemaError, match="description"):
        protocol.update_trial(trial.uid, TrialUpdate(description=bad, metadata={"k": 1}))
    stored = protocol.fetch_trials(None)[0]
    assert stored.description is None and dict(stored.metadata) == {}


# ------------------------------------------------------------------------------------------------- metrics
def test_metrics_append_with_and_without_steps(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_metrics(trial, step=1, loss=0.9, acc=0.1)
    protocol.log_trial_metrics(trial, step=2, loss=0.5)
    protocol.log_trial_metrics(trial, loss=0.4)  # no step: appended
    protocol.log_trial_metrics(trial, loss=0.3)
    protocol.log_trial_metrics(trial, step=2, loss=0.45)  # same step again: replaces that point
    loss = protocol.fetch_trials(None)[0].metrics["loss"]
    assert list(loss) == [(1, 0.9), (2, 0.45), (None, 0.4), (None, 0.3)]
    assert loss.latest == 0.45
    assert loss.to_dict() == {1: 0.9, 2: 0.45}
    assert protocol.fetch_trials(None)[0].metrics["acc"].latest == 0.1


def test_metric_values_round_trip_exactly(protocol: Protocol, trial: Trial) -> None:
    values = [0.1, -0.0, 1e308, 5e-324, 2**62, -(2**62), math.inf, -math.inf]
    for i, v in enumerate(values):
        protocol.log_trial_metrics(trial, step=i, x=v)
    protocol.log_trial_metrics(trial, step=len(values), x=math.nan)
    protocol.log_trial_metrics(trial, step=len(values) + 1, flag=True)
    got = protocol.fetch_trials(None)[0].metrics
    assert list(got["x"].values[:-1]) == values
    assert math.isnan(got["x"].values[-1])
    assert got["flag"].values == (1,)


def test_metric_with_a_slash_in_its_name_is_fine(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_metrics(trial, step=0, **{"train/loss": 1.0})
    assert protocol.fetch_trials(None)[0].metrics["train/loss"].latest == 1.0


@pytest.mark.parametrize("bad", ["abc", [1, 2], {"a": 1}, None, 10**400, -(10**309)])
def test_non_numeric_metric_raises_schema_error_and_writes_nothing(
    protocol: Protocol, trial: Trial, bad: object
) -> None:
    with pytest.raises(SchemaError, match="loss"):
        protocol.log_trial_metrics(trial, step=0, ok=1.0, loss=bad)
    assert protocol.fetch_trials(None)[0].metrics == {}


@pytest.mark.parametrize("step", [10**400, -(10**309), float("inf"), float("nan"), "3", True])
def test_a_step_that_cannot_be_stored_is_refused_and_nothing_written(
    protocol: Protocol, trial: Trial, step: object
) -> None:
    with pytest.raises(SchemaError, match="step"):
        protocol.log_trial_metrics(trial, step=step, loss=1.0)
    with pytest.raises(SchemaError, match="step"):
        protocol.log_trial_step(trial, step, {"loss": 1.0}, {"messages": {"loss": 1.0}})
    got = protocol.fetch_trials(None)[0]
    assert got.metrics == {} and "messages" not in got.metadata


def test_many_points_in_one_batch(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_metric_points(trial, [MetricPoint("m", i, float(i)) for i in range(100)])
    assert len(protocol.fetch_trials(None)[0].metrics["m"]) == 100


def test_log_trial_step_appends_points_and_merges_metadata(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_metadata(trial, keep="me")
    protocol.log_trial_step(trial, 1, {"loss": 0.5, "epoch": 3}, {"messages": {"loss": 0.5, "note": "a"}})
    protocol.log_trial_step(trial, 2, {"loss": 0.25}, {"messages": {"loss": 0.25}})
    protocol.log_trial_step(trial, None, {"loss": 0.125})  # no metadata, no step
    got = protocol.fetch_trials(None)[0]
    assert list(got.metrics["loss"]) == [(1, 0.5), (2, 0.25), (None, 0.125)]
    assert got.metrics["epoch"].values == (3,)
    assert got.metadata == {"keep": "me", "messages": {"loss": 0.25}}  # merged key by key


@pytest.mark.parametrize(
    ("metrics", "metadata", "match"),
    [
        ({"ok": 1.0, "loss": "high"}, {"messages": {"x": 1}}, "loss"),
        ({"ok": 1.0}, {"messages": {"x": object()}}, "messages"),
        ({"ok": 1.0, "a/../b": 2.0}, {"messages": {"x": 1}}, "a/../b"),
        ({"ok": 1.0, "bad\ud800": 2.0}, {"messages": {"x": 1}}, "lone surrogate"),
    ],
)
def test_log_trial_step_with_a_bad_value_writes_nothing(
    protocol: Protocol, trial: Trial, metrics: dict[str, Any], metadata: dict[str, Any], match: str
) -> None:
    with pytest.raises(SchemaError, match=re.escape(match)):
        protocol.log_trial_step(trial, 1, metrics, metadata)
    got = protocol.fetch_trials(None)[0]
    assert got.metrics == {} and "messages" not in got.metadata


def test_log_trial_step_keeps_no_reference_to_its_arguments(protocol: Protocol, trial: Trial) -> None:
    messages = {"loss": 0.5}
    protocol.log_trial_step(trial, 1, {"loss": 0.5}, {"messages": messages})
    messages["loss"] = 99.0
    assert protocol.fetch_trials(None)[0].metadata["messages"] == {"loss": 0.5}


def test_a_replayed_batch_is_applied_once(protocol: Protocol, trial: Trial) -> None:
    batch = TrialUpdate(metrics=(MetricPoint("m", None, 1.0),), writer="w1", seq=7)
    protocol.update_trial(trial.uid, batch)
    protocol.update_trial(trial.uid, batch)  # a client retrying after a lost acknowledgement
    protocol.update_trial(trial.uid, TrialUpdate(metrics=(MetricPoint("m", None, 2.0),), writer="w1", seq=8))
    protocol.update_trial(trial.uid, TrialUpdate(metrics=(MetricPoint("m", None, 3.0),), writer="w2", seq=0))
    assert protocol.fetch_trials(None)[0].metrics["m"].values == (1.0, 2.0, 3.0)


# ------------------------------------------------------------------------------------------ status/chronos
def test_status_and_errors(protocol: Protocol, trial: Trial) -> None:
    protocol.set_trial_status(trial, Status.Running)
    assert protocol.fetch_trials({"status": "running"})[0].uid == trial.uid
    protocol.set_trial_status(trial, "exception", error=ValueError("boom"))
    protocol.set_trial_status(trial, CustomStatus("registered", 1))
    stored = protocol.fetch_trials(None)[0]
    assert stored.status == CustomStatus("registered", 1) and stored.status == "registered"
    assert stored.errors == ("ValueError('boom')",)
    assert protocol.fetch_trials({"status": {"$in": ["registered", "running"]}})[0].uid == trial.uid
    assert protocol.fetch_trials({"status": Status.Running}) == []


def test_trial_start_and_finish_record_runtime_and_status(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_start(trial)
    assert protocol.fetch_trials(None)[0].status is Status.Running
    protocol.log_trial_finish(trial, None, None, None)
    stored = protocol.fetch_trials(None)[0]
    assert stored.status is Status.Completed
    assert stored.chronos["runtime"]["count"] == 1 and stored.chronos["runtime"]["sum"] >= 0


def test_trial_finish_with_an_exception_records_it(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_start(trial)
    try:
        raise RuntimeError("diverged")
    except RuntimeError as exc:
        protocol.log_trial_finish(trial, type(exc), exc, exc.__traceback__)
    stored = protocol.fetch_trials(None)[0]
    assert stored.status is Status.Exception
    assert "RuntimeError: diverged" in stored.errors[-1]


def test_interrupted_trial(protocol: Protocol, trial: Trial) -> None:
    protocol.log_trial_start(trial)
    protocol.log_trial_finish(trial, KeyboardInterrupt, KeyboardInterrupt(), None)
    assert protocol.fetch_trials(None)[0].status is Status.Interrupted


def test_chronos_aggregate(protocol: Protocol, trial: Trial) -> None:
    for _ in range(3):
        protocol.log_trial_chrono_start(trial, "epoch", aggregator=StatAggregator.lazy(1))
        protocol.log_trial_chrono_finish(trial, "epoch", None, None, None)
    chrono = protocol.fetch_trials(None)[0].chronos["epoch"]
    assert chrono["count"] == 2 and chrono["skipped"] == 1


def test_chrono_finish_without_start_raises(protocol: Protocol, trial: Trial) -> None:
    with pytest.raises(NotFoundError, match="was not started"):
        protocol.log_trial_chrono_finish(trial, "never", None, None, None)


# -------------------------------------------------------------------------------------------------- queries
def test_fetch_trials_queries(protocol: Protocol, project: Project) -> None:
    for i, lr in enumerate([0.001, 0.01, 0.1, 1.0]):
        t = protocol.new_trial(
            Trial(name=f"t{i}", project_id="proj", parameters={"lr": lr, "opt": "sgd" if i % 2 else "adam"})
        )
        assert t is not None
        protocol.log_trial_metrics(t, step=0, loss=lr * 10)
    names = lambda q: sorted(t.name for t in protocol.fetch_trials(q))  # noqa: E731
    assert names({"parameters.lr": {"$lt": 0.1}}) == ["t0", "t1"]
    assert names({"parameters.lr": {"$gte": 0.1, "$lte": 1}}) == ["t2", "t3"]
    assert names({"parameters.opt": "sgd"}) == ["t1", "t3"]
    assert names({"parameters.opt": {"$regex": "^ad"}}) == ["t0", "t2"]
    assert names({"parameters.missing": {"$exists": False}}) == ["t0", "t1", "t2", "t3"]
    assert names({"metrics.loss": {"$gt": 0.5}}) == ["t2", "t3"]
    assert names([("parameters.opt", {"$nin": ["sgd"]}), ("name", {"$ne": "t0"})]) == ["t2"]
    assert names({"parameters.lr": 1}) == ["t3"]  # 1 == 1.0: numbers compare numerically
    with pytest.raises(InvalidQueryError, match=r"\$near"):
        protocol.fetch_trials({"parameters.lr": {"$near": 1}})


def test_regex_runs_in_linear_time_and_bad_patterns_are_invalid_query_errors(
    protocol: Protocol, trial: Trial
) -> None:
    # Python's re backtracks for ever on this against a uid (64 hex digits, then _0); RE2 answers at once.
    assert protocol.fetch_trials({"uid": {"$regex": "^([0-9a-f]+)+$"}}) == []
    assert [t.uid for t in protocol.fetch_trials({"uid": {"$regex": "^([0-9a-f]+)+_0$"}})] == [trial.uid]
    for bad in ["a{99999999999}", "(?=t)t", "(t)\\1", "(", "t" * 5000]:
        with pytest.raises(InvalidQueryError, match=r"\$regex"):
            protocol.fetch_trials({"name": {"$regex": bad}})


def test_find_trial_summaries_hold_every_field_and_only_the_latest_value(
    protocol: Protocol, project: Project
) -> None:
    kept = protocol.new_trial(
        Trial(name="s", project_id="proj", parameters={"lr": 0.1, "opt": {"m": 0.9}}, description="why")
    )
    other = protocol.new_trial(Trial(name="o", project_id="proj", parameters={"lr": 0.5}))
    assert kept is not None and other is not None
    for step, loss in [(1, 0.5), (2, 0.25), (1, 0.75)]:
        protocol.log_trial_metrics(kept, step=step, loss=loss)
    protocol.log_trial_metrics(other, step=0, loss=2.0)
    protocol.add_trial_tags(kept, notes=["first"])
    protocol.log_trial_metadata(kept, messages={"loss": 0.25})
    protocol.set_trial_status(kept, Status.Exception, error="Traceback...\nValueError: boom")
    summaries = protocol.find_trial_summaries({"parameters.lr": {"$lt": 0.2}})
    assert [s.uid for s in summaries] == [kept.uid]
    (summary,) = summaries
    (full,) = protocol.fetch_trials({"uid": kept.uid})
    for name in ("name", "description", "tags", "parameters", "metadata", "status", "errors", "project_id"):
        assert getattr(summary, name) == getattr(full, name), name
    assert summary.metrics["loss"].latest == full.metrics["loss"].latest == 0.75
    assert summary.metrics["loss"].values == () and summary.metrics["loss"].steps == ()
    assert [s.name for s in protocol.find_trial_summaries({"metrics.loss": {"$gt": 1}})] == ["o"]
    assert sorted(s.name for s in protocol.find_trial_summaries(None)) == ["o", "s"]
    assert "find_trial_summaries" in PRIMITIVES


def test_summaries_count_the_points_logged_so_a_change_keeping_the_latest_value_shows(
    protocol: Protocol, trial: Trial
) -> None:
    def logged() -> tuple[int | None, int | None]:
        (summary,) = protocol.find_trial_summaries({"uid": trial.uid})
        (full,) = protocol.fetch_trials({"uid": trial.uid})
        return summary.metrics["loss"].logged, full.metrics["loss"].logged

    protocol.log_trial_metrics(trial, step=1, loss=0.5)
    protocol.log_trial_metrics(trial, step=2, loss=0.25)
    first = logged()
    assert first[0] is not None and first[0] == first[1]
    protocol.log_trial_metrics(trial, step=3, loss=0.25)  # the latest value stays 0.25
    second = logged()
    assert second[0] == second[1] and second[0] > first[0]  # type: ignore[operator]
    protocol.log_trial_metrics(
        trial, step=1, loss=0.75
    )  # a past point replaced: still 3 points, same latest?
    protocol.log_trial_metrics(trial, step=3, loss=0.25)
    third = logged()
    assert third[0] == third[1] and third[0] > second[0]  # type: ignore[operator]
    (full,) = protocol.fetch_trials({"uid": trial.uid})
    assert full.metrics["loss"].values == (0.75, 0.25, 0.25)


def test_insert_trials_stores_complete_trials_once(protocol: Protocol, project: Project) -> None:
    loss = Metric("loss", (0, 1, None, 2.5), (1.0, 0.5, 7, math.nan), latest=math.nan)
    a = Trial(
        name="a",
        project_id="proj",
        parameters={"lr": 0.1},
        tags={"k": [1, 2]},
        metadata={"host": "n1"},
        metrics={"loss": loss, "acc": Metric("acc", (None, None), (0.5, 0.5), latest=0.5)},
        chronos={"epoch": {"kind": "value", "val": 1.5}},
        status=Status.Exception,
        errors=("Traceback...\nValueError: boom",),
    )
    b = Trial(name="b", project_id="proj", description="empty")
    assert protocol.insert_trials([a, b, a]) == [True, True, False]
    assert protocol.insert_trials([a]) == [False]
    assert protocol.insert_trials([]) == []
    got = {t.name: t for t in protocol.fetch_trials(None)}
    assert sorted(got) == ["a", "b"]
    ga = got["a"]
    assert ga.uid == a.uid and ga.status == Status.Exception and tuple(ga.errors) == tuple(a.errors)
    assert list(ga.metrics) == ["loss", "acc"]
    assert ga.metrics["loss"].steps == (0, 1, None, 2.5) and ga.metrics["loss"].values[:3] == (1.0, 0.5, 7)
    assert math.isnan(ga.metrics["loss"].values[3]) and math.isnan(ga.metrics["loss"].latest)  # type: ignore[arg-type]
    assert ga.metrics["acc"].values == (0.5, 0.5) and ga.metrics["acc"].steps == (None, None)
    assert (ga.parameters, ga.tags, ga.metadata, ga.chronos) == (
        {"lr": 0.1},
        {"k": [1, 2]},
        {"host": "n1"},
        {"epoch": {"kind": "value", "val": 1.5}},
    )
    assert got["b"].description == "empty" and not got["b"].metrics
    (summary,) = protocol.find_trial_summaries({"name": "a"})
    assert summary.metrics["acc"].latest == 0.5 and summary.metrics["acc"].values == ()
    protocol.log_trial_metrics(ga, step=3, loss=0.125)  # an inserted trial takes points like any other
    assert protocol.fetch_trials({"name": "a"})[0].metrics["loss"].values[-1] == 0.125


def test_insert_trials_checks_projects_and_groups(make_protocol: Any) -> None:
    protocol = make_protocol(strict=True)
    with pytest.raises(NotFoundError, match="ghost"):
        protocol.insert_trials([Trial(name="c", project_id="ghost")])
    assert protocol.fetch_trials(None) == []


def test_fetch_and_update_trial_reserves_distinct_trials(protocol: Protocol, project: Project) -> None:
    for i in range(3):
        protocol.new_trial(Trial(name=f"w{i}", project_id="proj"))
    taken = {
        protocol.fetch_and_update_trial(
            {"status": "createdgroup"}, "set_trial_status", status=Status.Running
        ).uid
        for _ in range(3)
    }
    assert len(taken) == 3
    with pytest.raises(ItemNotFound):
        protocol.fetch_and_update_trial({"status": "createdgroup"}, "set_trial_status", status=Status.Running)


def test_fetch_and_update_trial_refuses_other_methods(protocol: Protocol, trial: Trial) -> None:
    with pytest.raises(SchemaError, match="cannot call 'commit'"):
        protocol.fetch_and_update_trial({}, "commit", file_name_override="/tmp/x")


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "../x",
        "..",
        "a\x00b",
        "",
        "x" * 4096,
        "a\\b",
        "line\nbreak",
        "lone\ud800surrogate",
        ".hidden",
        ".unitrack",
    ],
)
def test_bad_trial_names_are_refused_before_anything_is_written(protocol: Protocol, name: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        protocol.new_trial(Trial(name=name))
    assert "trial name" in str(info.value)
    assert protocol.fetch_trials(None) == []


@pytest.mark.parametrize("name", ["a/b", "..", "a\x00b"])
def test_bad_project_names_are_refused(protocol: Protocol, name: str) -> None:
    with pytest.raises(InvalidNameError, match="project name"):
        protocol.new_project(Project(name=name))
    assert protocol.fetch_projects(None) == []


def test_unstorable_parameter_types_are_refused(protocol: Protocol) -> None:
    with pytest.raises(SchemaError, match="parameters.path"):
        protocol.new_trial(Trial(name="t", parameters={"path": object()}))
    with pytest.raises(SchemaError, match="keys must be str"):
        protocol.new_trial(Trial(name="t", parameters={"d": {1: 2}}))
    assert protocol.fetch_trials(None) == []


# -------------------------------------------------------------------------------- issue #12 item 8: ids
def test_an_int_project_id_is_read_as_its_text_and_every_reader_can_read_it(
    make_protocol,  # type: ignore[no-untyped-def]
    backend_name: str,
) -> None:
    """track's type hints allowed int project ids. The first version wrote such a group to the journal and then
    refused it, so every later reader of that store failed; the id is now its decimal text, checked before
    anything is written, and a fresh reader (the same files, for backends that keep any) reads it back."""
    p = make_protocol()
    p.new_project(Project(name="7"))
    group = p.new_trial_group(TrialGroup(name="g", project_id=7))  # type: ignore[arg-type]
    assert group is not None and group.project_id == "7"
    trial = p.new_trial(Trial(name="t", project_id=7, group_id=group.uid))  # type: ignore[arg-type]
    assert trial is not None and trial.project_id == "7"
    p.add_group_trial(group, trial)
    # ephemeral keeps nothing; socket and the multiplexer read from an ephemeral:// in these fixtures
    reader = p if backend_name in ("ephemeral", "socket", "multiplexer") else make_protocol()
    (got,) = reader.fetch_groups(None)
    assert got.project_id == "7" and got.uid == group.uid and got.trials == {trial.uid}
    assert reader.fetch_trials(None)[0].project_id == "7"
    assert reader.fetch_projects(None)[0].groups == {group.uid}


@pytest.mark.parametrize("bad", [7.5, True, ["p"], {"p": 1}, b"p"])
def test_an_id_of_another_type_is_refused_before_anything_is_written(protocol: Protocol, bad: object) -> None:
    with pytest.raises(SchemaError, match="project_id"):
        protocol.new_trial_group(TrialGroup(name="g", project_id=bad))  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="project_id"):
        protocol.new_trial(Trial(name="t", project_id=bad))  # type: ignore[arg-type]
    assert protocol.fetch_groups(None) == [] and protocol.fetch_trials(None) == []
