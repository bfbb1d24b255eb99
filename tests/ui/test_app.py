"""The web view's HTTP side without a browser: the JSON API, read-only, hosts, logins, headers, the bind policy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import wait_until
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


# ------------------------------------------------------------------------------------------------ one catalog
@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """Every kind of run a listing meets: finished runs (two seeds of lr 0.1, one of 0.2), a failed run, a run
    whose process is gone (lost), a damaged trial.json, an xmen folder with only its params.yml, and one whose
    params.yml cannot be read."""
    root = tmp_path / "mixed"
    with get_protocol(f"hdf5://{root}") as db:
        db.strict = False
        for name, lr, seed in (("a", 0.1, 0), ("b", 0.1, 1), ("c", 0.2, 0)):
            t = db.new_trial(Trial(name=name, parameters={"lr": lr, "seed": seed, "opt": {"m": 0.9}}))
            assert t is not None
            db.log_trial_start(t)
            db.log_trial_metrics(t, step=0, loss=lr * 10 + seed, acc=0.5)
            db.add_trial_tags(t, notes=["first note", "second"])
            db.log_trial_finish(t, None, None, None)
        failed = db.new_trial(Trial(name="failed", parameters={"lr": 0.3, "seed": 0, "opt": {"m": 0.9}}))
        db.log_trial_start(failed)
        db.log_trial_metrics(failed, step=0, loss=9.0)
        try:
            1 / 0  # noqa: B018 - the failure recorded
        except ZeroDivisionError as exc:
            db.log_trial_finish(failed, type(exc), exc, exc.__traceback__)
        gone = db.new_trial(Trial(name="gone", parameters={"lr": 0.4, "seed": 0, "opt": {"m": 0.9}}))
        db.log_trial_start(gone)
        # Its process ran on another host and stopped beating long ago.
        db.log_trial_metadata(
            gone, process={"host": "elsewhere", "pid": 4242, "interval_s": 1.0}, heartbeat=1000.0
        )
        bad = db.new_trial(Trial(name="bad", parameters={"lr": 0.5}))
        assert bad is not None
    summary = root / "bad" / "trial.json"
    summary.write_bytes(summary.read_bytes().replace(b'"uid"', b'"uie"'))
    (root / "xmen").mkdir()
    (root / "xmen" / "params.yml").write_text("lr: 0.6\nseed: 0\n_status: registered\n_name: xmen\n")
    (root / "xmen-bad").mkdir()
    (root / "xmen-bad" / "params.yml").write_bytes(b"{a: [unclosed\n")
    return root


def _api_rows(http: TestClient, **params: object) -> dict[str, dict[str, object]]:
    payload = http.get("/api/runs", params=params).json()
    return {row[0]: dict(zip(payload["columns"], row, strict=True)) for row in payload["rows"]}


def test_the_web_view_lists_the_runs_statuses_and_values_of_the_catalog(mixed_root: Path) -> None:
    """The web view, ``unitrack.runs`` and ``unitrack view`` show the same runs, status words and values (the web
    view had its own listing: no xmen folder, no damaged file or reason, its own lost rule, epoch times)."""
    import subprocess
    import sys
    from datetime import datetime

    import unitrack

    frame = unitrack.runs(mixed_root)
    source = Source(mixed_root)
    try:
        with TestClient(create_app(source), base_url="http://127.0.0.1") as http:
            listed = _api_rows(http)
            assert sorted(listed) == sorted(frame.index)
            for uid, expected in frame.to_dict("index").items():
                row = listed[uid]
                for column, value in expected.items():
                    got = row[column]
                    if not isinstance(value, (list, dict)) and pd.isna(value):  # None, NaN, NaT
                        assert got is None, (uid, column, got)
                    elif isinstance(value, datetime):
                        assert (
                            datetime.fromisoformat(str(got))
                            == pd.Timestamp(value).to_pydatetime().astimezone()
                        ), column
                    else:
                        assert got == value, (uid, column, got, value)
            by_name = {r["name"]: r for r in listed.values()}
            assert {n: r["status"] for n, r in by_name.items()} == {
                "a": "finished",
                "b": "finished",
                "c": "finished",
                "failed": "error",
                "gone": "lost",
                "bad": "damaged",
                "xmen": "registered",
                "xmen-bad": "damaged",
            }
            assert by_name["failed"]["error"] == "ZeroDivisionError: division by zero"
            assert by_name["bad"]["error"] == (
                f"{mixed_root / 'bad' / 'trial.json'}: its content does not match the sha256 on its first line"
            )
            assert str(by_name["xmen-bad"]["error"]).startswith(f"{mixed_root / 'xmen-bad' / 'params.yml'}: ")
            assert (
                by_name["a"]["notes"] == ["first note", "second"] and by_name["a"]["parameters.opt.m"] == 0.9
            )
            # The same filter and status grammar as view: the same runs, the same errors for mistakes.
            assert sorted(r["name"] for r in _api_rows(http, filter="lr<0.25").values()) == ["a", "b", "c"]
            assert sorted(r["name"] for r in _api_rows(http, status="lost,damaged").values()) == [
                "bad",
                "gone",
                "xmen-bad",
            ]
            typo = http.get("/api/runs", params={"filter": "lrr<1"})
            assert typo.status_code == 400 and "Did you mean 'lr'" in typo.json()["message"]
            assert (
                "Did you mean 'error'" in http.get("/api/runs", params={"status": "eror"}).json()["message"]
            )
            # A damaged run's page names its file and reason.
            bad = http.get(f"/api/runs/{by_name['bad']['uid']}").json()
            assert bad["status"] == "damaged" and bad["damage"] == {
                "file": str(mixed_root / "bad" / "trial.json"),
                "reason": "its content does not match the sha256 on its first line",
            }
            xmen_bad = http.get(f"/api/runs/{by_name['xmen-bad']['uid']}").json()
            assert xmen_bad["damage"]["file"] == str(mixed_root / "xmen-bad" / "params.yml")
            assert http.get(f"/api/runs/{by_name['gone']['uid']}").json()["history"][-1]["status"] == "lost"
    finally:
        source.close()
    view = subprocess.run(
        [sys.executable, "-m", "unitrack", "view", str(mixed_root), "--json", "-c", "name,status,error"],
        capture_output=True,
        text=True,
        check=True,
    )
    in_view = {r["name"]: (r["status"], r["error"]) for r in map(json.loads, view.stdout.splitlines())}
    assert in_view == {r["name"]: (r["status"], r["error"]) for r in by_name.values()}


def test_groups_have_the_statistics_of_view_group_by(mixed_root: Path) -> None:
    """The web view's groups (all but seed, or chosen parameters) give the mean, std and count that ``unitrack
    view --group-by`` gives for the same runs (the std of a one-run group is none, not 0)."""
    import unitrack
    from unitrack.persistence.catalog import aggregate

    frame = unitrack.runs(mixed_root, filters=["lr<0.35"])
    source = Source(mixed_root)
    try:
        with TestClient(create_app(source), base_url="http://127.0.0.1") as http:
            uids = list(frame.index)
            for group_by, over in (("*-seed", ["seed"]), ("lr", ["seed", "opt.m"])):
                got = http.get(
                    "/api/groups", params={"uid": uids, "group_by": group_by, "metric": ["loss", "acc"]}
                ).json()
                expected = aggregate(frame, over)
                assert got["keys"] == ["lr"]
                assert [row[0] for row in got["rows"]] == [f"lr={lr}" for lr in expected["parameters.lr"]]
                for row, (_, want) in zip(got["rows"], expected.iterrows(), strict=True):
                    assert row[1] == want["n"]
                    for cell, metric in zip(row[2:], ("loss", "acc"), strict=True):
                        mean, std = want[f"metrics.{metric}"], want[f"metrics.{metric}.std"]
                        assert cell["mean"] == (None if mean != mean else pytest.approx(mean))
                        assert cell["std"] == (None if std != std else pytest.approx(std))
    finally:
        source.close()


def test_the_page_files_are_cached_at_urls_naming_their_content(client: TestClient) -> None:
    """plotly.js (4.8 MB) and the page's own files are served at URLs naming their content, cached for a year, so
    a repeat visit fetches none of them; the page itself is revalidated (a new unitrack or plotly is a new URL)."""
    import hashlib

    from unitrack.ui.app import COMPILE_HINT, plotly_js_path

    page = client.get("/")
    assert page.headers["cache-control"] == "no-cache"
    [plotly_url] = [u for u in _urls(page.text) if "plotly-" in u]
    [script_url] = [u for u in _urls(page.text) if u.startswith("/static/app.") and u.endswith(".js")]
    wheel = plotly_js_path().read_bytes()
    version = wheel[:300].decode().split("plotly.js v", 1)[1].split()[0]
    assert plotly_url.startswith(f"/static/plotly-{version}.")
    plotly = client.get(plotly_url)
    assert plotly.status_code == 200 and plotly.content == COMPILE_HINT + wheel
    assert plotly.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plotly.headers["etag"] == f'"{hashlib.sha256(plotly.content).hexdigest()}"'
    again = client.get(plotly_url, headers={"if-none-match": plotly.headers["etag"]})
    assert again.status_code == 304 and not again.content
    script = client.get(script_url)
    assert script.headers["cache-control"].endswith("immutable") and "use strict" in script.text
    assert hashlib.sha256(script.content).hexdigest()[:12] in script_url
    moved = client.get("/static/plotly.min.js", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == plotly_url
    assert client.get("/static/nope.js").status_code == 404


def test_a_poll_of_an_unchanged_table_gets_304(client: TestClient, root: Path) -> None:
    first = client.get("/api/runs")
    tag = first.headers["etag"]
    assert client.get("/api/runs", headers={"if-none-match": tag}).status_code == 304
    with get_protocol(f"hdf5://{root}") as db:
        db.strict = False
        db.new_trial(Trial(name="new", parameters={"lr": 0.5, "seed": 9}))
    answers = []

    def changed() -> bool:  # once the listing's reuse window (CATALOG_TTL_S) has passed
        answers.append(client.get("/api/runs", headers={"if-none-match": tag}))
        return answers[-1].status_code != 304

    wait_until(changed, what="the new run in /api/runs")
    assert answers[-1].status_code == 200 and answers[-1].json()["count"] == 4
    assert answers[-1].headers["etag"] != tag


def _urls(html: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_web_view_lists_a_folder_of_cox_stores(tmp_path: Path) -> None:
    """A cox out-dir (stores written by cox 0.2 itself): the web view lists each store as ``unitrack view`` does,
    a damaged one with its file and reason, and reading it writes nothing into the folder."""
    import shutil

    import unitrack

    out = tmp_path / "out"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "cox" / "out", out)
    (out / "slope-3" / "store.h5").write_bytes(b"\0" * 64)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    source = Source(out)
    try:
        with TestClient(create_app(source), base_url="http://127.0.0.1") as http:
            listed = _api_rows(http)
            assert set(listed) == set(unitrack.runs(out).index) == {"slope-1", "slope-3"}
            assert (
                listed["slope-1"]["status"] == "unknown" and listed["slope-1"]["metrics.result.mx^2"] == 4.0
            )
            assert sorted(_api_rows(http, status="unknown")) == ["slope-1"]
            page = http.get("/api/runs/slope-1").json()
            assert page["folder"] == str(out / "slope-1") and page["parameters"]["slope"] == 1.0
            bad = http.get("/api/runs/slope-3").json()
            assert bad["status"] == "damaged" and bad["damage"]["file"] == str(out / "slope-3" / "store.h5")
            series = http.get("/api/series", params={"uid": ["slope-1"], "metric": "result.mx^2"})
            assert series.status_code == 200 and series.json()["series"] == []
            assert http.get("/api/figure", params={"uid": ["slope-1"]}).status_code == 200
    finally:
        source.close()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
