"""The web view's HTTP side without a browser: the JSON API, read-only, hosts, logins, headers, the bind policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from unitrack.errors import ConfigError
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import MetricPoint, Trial
from unitrack.persistence.users import UserStore
from unitrack.ui import figures
from unitrack.ui.app import CSP, create_app
from unitrack.ui.data import Source


def _decode(values: object) -> list:
    """plotly.js's typed-array form (what the figure API sends for long lines) as a list."""
    if isinstance(values, dict):
        assert values["dtype"] == "f8"
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype="<f8").tolist()
    return list(values)  # type: ignore[call-overload]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    with get_protocol(f"hdf5://{tmp_path}") as db:
        db.strict = False
        for seed in range(3):
            t = db.new_trial(Trial(name=f"run{seed}", parameters={"lr": 0.1, "seed": seed}))
            assert t is not None
            db.log_trial_metric_points(t, [MetricPoint("loss", s, s * seed) for s in range(5000)])
    return tmp_path


@pytest.fixture
def client(root: Path) -> TestClient:
    source = Source(root)
    with TestClient(create_app(source), base_url="http://127.0.0.1") as http:
        yield http
    source.close()


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/", "/api/runs", "/static/app.js", "/api/runs/missing"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self';" in CSP and "unsafe-eval" not in CSP


def test_the_view_is_read_only_and_answers_only_its_hosts(client: TestClient) -> None:
    assert client.post("/api/runs").status_code == 405
    assert client.delete("/api/runs").status_code == 405
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/runs", headers={"host": "localhost:8080"}).status_code == 200


def test_api_runs_series_figure_and_errors(client: TestClient) -> None:
    runs = client.get("/api/runs", params={"filter": "seed>0"}).json()
    assert runs["count"] == 2 and runs["metrics"] == ["loss"] and runs["varying"] == ["seed"]
    name_at, loss_at = runs["columns"].index("name"), runs["columns"].index("metrics.loss")
    assert sorted((r[name_at], r[loss_at]) for r in runs["rows"]) == [("run1", 4999.0), ("run2", 9998.0)]
    uids = [r[0] for r in runs["rows"]]
    series = client.get("/api/series", params={"uid": uids, "metric": "loss", "points": 100}).json()["series"]
    assert [len(s["steps"]) <= 100 and s["total"] == 5000 and s["steps"][-1] == 4999 for s in series] == [
        True
    ] * 2
    exact = client.get(
        "/api/series", params={"uid": uids[0], "metric": "loss", "points": 0, "step_min": 10, "step_max": 19}
    ).json()["series"][0]
    assert exact["steps"] == list(range(10, 20)) and exact["times"] is None
    fig = client.get("/api/figure", params={"uid": uids, "metric": "loss", "legend": "seed={seed}"}).json()
    assert sorted(t["name"] for t in fig["data"]) == ["seed=1", "seed=2"]
    zoom = client.get(
        "/api/figure",
        params={"uid": uids[0], "metric": "loss", "step_min": 100, "step_max": 200, "points": 50},
    ).json()
    assert zoom["layout"]["xaxis"]["range"] == [100, 200] and _decode(zoom["data"][0]["x"])[0] == 100
    bad = client.get("/api/runs", params={"filter": "lr<<1"})
    assert bad.status_code == 400 and "lr<<1" in bad.json()["message"]
    assert client.get("/api/figure", params={"metric": "loss", "x": "epoch"}).status_code == 400
    assert (
        client.get("/api/series", params={"uid": uids, "metric": "loss", "points": "many"}).status_code == 400
    )
    missing = client.get("/api/runs/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"
    run = client.get(f"/api/runs/{uids[0]}").json()
    assert run["parameters"]["lr"] == 0.1 and run["metrics"]["loss"] in (4999.0, 9998.0)
    assert "/api/series" in client.get("/api").json()["doc"]


def test_groups_sweep_and_diff(client: TestClient) -> None:
    groups = client.get("/api/groups", params={"group_by": "*-seed", "metric": "loss"}).json()
    assert groups["rows"][0][:2] == ["all runs", 3]
    assert groups["rows"][0][2]["mean"] == pytest.approx((0 + 4999 + 9998) / 3)
    parallel = client.get("/api/sweep", params={"kind": "parcoords", "metric": "loss"}).json()
    assert parallel["layout"]["meta"]["axes"] == ["seed", "loss"]
    scatter = client.get("/api/sweep", params={"kind": "scatter", "metric": "loss", "param": "seed"}).json()
    assert sorted(scatter["data"][0]["x"]) == [0, 1, 2]
    uids = [r[0] for r in client.get("/api/runs").json()["rows"]]
    diff = client.get("/api/diff", params={"uid": uids}).json()
    assert {p["key"]: p["differs"] for p in diff["parameters"]} == {"lr": False, "seed": True}


def test_with_users_every_request_logs_in(root: Path, tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.json")
    users.add("reader", "reader-password", role="reader")
    source = Source(root)
    try:
        with TestClient(create_app(source, users=users), base_url="http://127.0.0.1") as http:
            assert http.get("/api/runs").status_code == 401
            assert http.get("/").headers["www-authenticate"].startswith("Basic")
            wrong = base64.b64encode(b"reader:nope").decode()
            assert http.get("/api/runs", headers={"authorization": f"Basic {wrong}"}).status_code == 401
            right = base64.b64encode(b"reader:reader-password").decode()
            assert http.get("/api/runs", headers={"authorization": f"Basic {right}"}).status_code == 200
    finally:
        source.close()


def test_another_address_needs_users_or_insecure(root: Path, tmp_path: Path) -> None:
    from unitrack.ui.serve import serve

    with pytest.raises(ConfigError, match="has no users"):
        serve(str(root), host="192.0.2.1", users_file=tmp_path / "none.json")


@given(st.text(max_size=40))
def test_legend_format_never_reaches_into_objects(fmt: str) -> None:
    try:
        label = figures.legend_label(fmt, {"lr": 0.1, "name": "run"})
    except ConfigError:
        return
    assert "__" not in label or "__" in fmt
    assert "<class" not in label


def test_legend_label_and_escape() -> None:
    assert figures.legend_label("lr={lr:.0e} s={seed}", {"lr": 0.001, "seed": 3}) == "lr=1e-03 s=3"
    assert figures.legend_label("{lr.__class__}{missing}", {"lr": 0.1}) == "??"
    assert figures.escape("<img src=x onerror=alert(1)>&") == "&lt;img src=x onerror=alert(1)&gt;&amp;"
    with pytest.raises(ConfigError):
        figures.legend_label("{", {})


def test_report_data_cannot_close_its_script(root: Path, tmp_path: Path) -> None:
    from unitrack.ui.report import write_report

    with get_protocol(f"hdf5://{root}") as db:
        db.strict = False
        db.new_trial(Trial(name="x", parameters={"note": "</script><script>alert(1)</script>"}))
    html = write_report(root, tmp_path / "r.html").read_text()
    start = html.index('<script type="application/json" id="unitrack-data">')
    data = html[start : html.index("</script>", start)]
    assert "\\u003c/script" in data
    payload = json.loads(data.split(">", 1)[1])
    assert any("</script>" in str(r) for r in payload["runs"]["rows"])


def test_series_with_typed_arrays_and_times(client: TestClient) -> None:
    uids = [r[0] for r in client.get("/api/runs").json()["rows"]]
    params = {"uid": uids[:1], "metric": "loss", "points": 0, "step_max": 99}
    plain = client.get("/api/series", params={**params, "times": 1}).json()["series"][0]
    typed = client.get("/api/series", params={**params, "times": 1, "encoding": "typed"}).json()["series"][0]
    assert _decode(typed["steps"]) == plain["steps"] == list(range(100))
    assert _decode(typed["values"]) == plain["values"] and _decode(typed["times"]) == plain["times"]
    assert len(plain["times"]) == 100 and plain["times"] == sorted(plain["times"])


def test_figure_axes_smoothing_and_log_scale(client: TestClient) -> None:
    uid = client.get("/api/runs", params={"filter": "seed==1"}).json()["rows"][0][0]
    base = {"uid": uid, "metric": "loss", "points": 0, "step_max": 99}
    relative = client.get("/api/figure", params={**base, "x": "relative"}).json()
    xs = _decode(relative["data"][0]["x"])
    assert (
        xs[0] == 0
        and xs == sorted(xs)
        and relative["layout"]["xaxis"]["title"]["text"].startswith("time since")
    )
    wall = client.get("/api/figure", params={**base, "x": "wall"}).json()
    assert wall["layout"]["xaxis"]["type"] == "date" and wall["data"][0]["x"][0].startswith("20")
    smooth = client.get("/api/figure", params={**base, "smooth": 0.9, "log": 1}).json()
    raw, line = smooth["data"]
    assert raw["meta"]["role"] == "raw" and smooth["layout"]["yaxis"]["type"] == "log"
    assert _decode(raw["y"]) == [float(s) for s in range(100)]
    assert _decode(line["y"])[-1] < 99  # the moving average lags the raw line
    assert client.get("/api/figure", params={**base, "smooth": 1.5}).status_code == 400


def test_a_file_backend_without_times_draws_against_steps(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/db.json"
    with get_protocol(uri) as db:
        db.strict = False
        t = db.new_trial(Trial(name="f", parameters={"lr": 1}))
        db.log_trial_metric_points(t, [MetricPoint("loss", s, float(s)) for s in range(50)])
    source = Source(uri)
    try:
        with TestClient(create_app(source), base_url="http://127.0.0.1") as http:
            [row] = http.get("/api/runs").json()["rows"]
            fig = http.get("/api/figure", params={"uid": row[0], "metric": "loss", "x": "wall"}).json()
            assert (
                fig["layout"]["meta"]["x"] == "step"
                and "stores no times" in fig["layout"]["annotations"][0]["text"]
            )
            assert _decode(fig["data"][0]["x"]) == list(range(50))
    finally:
        source.close()


def test_json_replies_hold_nan_and_huge_ints(tmp_path: Path) -> None:
    from unitrack.ui.app import _json

    body = json.loads(_json({"values": ["nan", 1.5], "big": 2**70}).body)
    assert body == {"values": ["nan", 1.5], "big": 2**70}
