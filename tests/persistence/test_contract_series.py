"""The series primitive's contract, on every backend (the ``protocol`` fixture of conftest.BACKENDS).

Every backend must return, for the same request, exactly what :func:`series_of_metric` computes from the full
series that ``fetch_trials`` returns: the same points, chosen by the same rules, wherever they are chosen (in
Python, in SQL, on the server).
"""

from __future__ import annotations

import math
import random

import pytest

from unitrack.errors import SchemaError
from unitrack.persistence.protocol import PRIMITIVES, Protocol
from unitrack.persistence.series import SeriesRequest, series_of_metric
from unitrack.persistence.structure import MetricPoint, Trial


def _trial(protocol: Protocol, name: str) -> Trial:
    protocol.strict = False
    stored = protocol.new_trial(Trial(name=name, parameters={"seed": name}))
    assert stored is not None
    return stored


def _expected(protocol: Protocol, request: SeriesRequest) -> list[tuple[str, str, tuple, tuple, int]]:
    by_uid = {t.uid: t for t in protocol.fetch_trials(None)}
    out = []
    for uid in request.uids:
        trial = by_uid.get(uid)
        for name in request.metrics:
            if trial is not None and name in trial.metrics and len(trial.metrics[name]):
                s = series_of_metric(uid, trial.metrics[name], request)
                out.append((s.uid, s.metric, s.steps, s.values, s.total))
    return out


def _got(protocol: Protocol, request: SeriesRequest) -> list[tuple[str, str, tuple, tuple, int]]:
    return [(s.uid, s.metric, s.steps, s.values, s.total) for s in protocol.find_series(request)]


@pytest.fixture
def noisy(protocol: Protocol) -> tuple[Trial, Trial]:
    """Two trials: 'a' with 600 noisy points of loss (one spike) and 50 of acc; 'b' with 300 of loss."""
    rng = random.Random(7)
    a, b = _trial(protocol, "a"), _trial(protocol, "b")
    points = [MetricPoint("loss", s, 1 / (s + 1) + rng.random() / 10) for s in range(600)]
    points[321] = MetricPoint("loss", 321, 50.0)  # a spike downsampling must keep
    points += [MetricPoint("acc", s * 10, s / 50) for s in range(50)]
    for start in range(0, len(points), 100):
        protocol.log_trial_metric_points(a, points[start : start + 100])
    protocol.log_trial_metric_points(b, [MetricPoint("loss", s, float(s % 7)) for s in range(300)])
    protocol.commit()
    return a, b


def test_find_series_is_a_primitive() -> None:
    assert "find_series" in PRIMITIVES


def test_every_point_when_no_limit_in_request_order(protocol: Protocol, noisy: tuple[Trial, Trial]) -> None:
    a, b = noisy
    request = SeriesRequest(uids=(b.uid, "no-such-uid", a.uid), metrics=("loss", "acc", "missing"))
    got = protocol.find_series(request)
    assert [(s.uid, s.metric, len(s)) for s in got] == [
        (b.uid, "loss", 300),
        (a.uid, "loss", 600),
        (a.uid, "acc", 50),
    ]
    assert got[1].values[321] == 50.0 and got[1].steps[-1] == 599 and got[2].steps[-1] == 490
    assert _got(protocol, request) == _expected(protocol, request)


@pytest.mark.parametrize("method", ["minmax", "lttb"])
def test_downsampled_points_are_the_reference_selection(
    protocol: Protocol, noisy: tuple[Trial, Trial], method: str
) -> None:
    a, b = noisy
    request = SeriesRequest(uids=(a.uid, b.uid), metrics=("loss", "acc"), max_points=40, method=method)
    got = protocol.find_series(request)
    assert _got(protocol, request) == _expected(protocol, request)
    loss_a = got[0]
    assert len(loss_a) <= 40 and loss_a.total == 600 and loss_a.downsampled
    assert loss_a.steps[0] == 0 and loss_a.steps[-1] == 599  # first and last kept
    assert 50.0 in loss_a.values  # the spike survives
    assert list(loss_a.steps) == sorted(loss_a.steps)
    assert len(got[1]) == 40 if method == "lttb" else len(got[1]) <= 40  # acc: 50 points -> 40 at most


def test_step_range_keeps_points_inside_it(protocol: Protocol, noisy: tuple[Trial, Trial]) -> None:
    a, _ = noisy
    request = SeriesRequest(uids=(a.uid,), metrics=("loss",), step_min=100, step_max=199.5)
    [series] = protocol.find_series(request)
    assert series.steps == tuple(range(100, 200)) and series.total == 100
    zoomed = SeriesRequest(uids=(a.uid,), metrics=("loss",), step_min=300, step_max=340, max_points=10)
    assert _got(protocol, zoomed) == _expected(protocol, zoomed)
    assert protocol.find_series(SeriesRequest(uids=(a.uid,), metrics=("loss",), step_min=1e9)) == []


def test_relogged_steps_and_stepless_points(protocol: Protocol) -> None:
    t = _trial(protocol, "mixed")
    protocol.log_trial_metrics(t, step=None, x=1.0)
    protocol.log_trial_metrics(t, step=None, x=2.0)
    for step in (5, 3, 4):
        protocol.log_trial_metrics(t, step=step, y=float(step))
    protocol.log_trial_metrics(t, step=3, y=30.0)  # replaces the value at step 3
    request = SeriesRequest(uids=(t.uid,), metrics=("x", "y"))
    x, y = protocol.find_series(request)
    assert (x.steps, x.values) == ((0, 1), (1.0, 2.0))  # drawn at their positions
    assert (y.steps, y.values) == ((3, 4, 5), (30.0, 4.0, 5.0))  # sorted by step, value replaced
    assert _got(protocol, request) == _expected(protocol, request)


def test_nan_and_inf_values_round_trip(protocol: Protocol) -> None:
    t = _trial(protocol, "odd")
    for step, value in enumerate([1.0, math.nan, math.inf, -math.inf, 2.0]):
        protocol.log_trial_metrics(t, step=step, v=value)
    [series] = protocol.find_series(SeriesRequest(uids=(t.uid,), metrics=("v",)))
    assert series.values[0] == 1.0 and math.isnan(series.values[1])
    assert series.values[2:] == (math.inf, -math.inf, 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uids": "abc", "metrics": ("a",)},
        {"uids": ("a",), "metrics": "loss"},
        {"uids": ("a",), "metrics": ("a",), "max_points": 3},
        {"uids": ("a",), "metrics": ("a",), "max_points": True},
        {"uids": ("a",), "metrics": ("a",), "method": "average"},
        {"uids": ("a",), "metrics": ("a",), "step_min": "0"},
        {"uids": ("a",), "metrics": ("../x",)},
        {"uids": ("",), "metrics": ("a",)},
    ],
)
def test_malformed_requests_are_refused(kwargs: dict) -> None:
    with pytest.raises(SchemaError):
        SeriesRequest(**kwargs)


def test_fetch_series_takes_trials_or_uids(protocol: Protocol, noisy: tuple[Trial, Trial]) -> None:
    a, b = noisy
    got = protocol.fetch_series([a, b.uid], ["loss"], max_points=10)
    assert [(s.uid, len(s) <= 10, s.total) for s in got] == [(a.uid, True, 600), (b.uid, True, 300)]
