"""``unitrack ui`` in a real headless Chromium, on a sweep of real runs: what a person sees on the page.

Every check reads the rendered page (the table's cells, the chart's drawn traces), never the API alone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.ui.conftest import XSS_NAME, Page, Served, start_ui, stop, worker
from tests.ui.run_worker import loss
from unitrack.persistence.registry import get_protocol

pytestmark = pytest.mark.timeout(180)


def stored(root: Path, metric: str = "loss") -> dict[str, Any]:
    """name -> full trial, read straight from the backend (what the page must show)."""
    with get_protocol(f"hdf5://{root}") as db:
        return {t.name: t for t in db.fetch_trials(None)}


def names_in_table(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#runs tbody td[data-column=name]", "cells => cells.map(c => c.textContent)"
    )


def chart_traces(page: Any, selector: str = "#chart-0") -> list[dict[str, Any]]:
    """The traces plotly drew in a chart: name, meta, x, y (from the graph div the page renders into)."""
    return page.evaluate(
        """sel => (document.querySelector(sel).data || []).map(t => ({
            name: t.name, meta: t.meta || {}, x: Array.from(t.x), y: Array.from(t.y)}))""",
        selector,
    )


def open_ui(page: Page, served: Served, expected_rows: int) -> Any:
    tab = page.page
    tab.goto(served.url)
    tab.wait_for_function("n => document.querySelectorAll('#runs tbody tr').length === n", arg=expected_rows)
    tab.wait_for_selector("#chart-0 .main-svg")
    return tab


def test_table_lists_every_run_with_its_status(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    assert sorted(names_in_table(tab)) == sorted(stored(ui.root))
    status = dict(
        tab.eval_on_selector_all(
            "#runs tbody tr",
            "rows => rows.map(r => [r.querySelector('td[data-column=name]').textContent, "
            "r.querySelector('td[data-column=status]').textContent])",
        )
    )
    assert status["boom"] == "error" and status["lr0.1-s0"] == "finished"
    assert not page.errors, page.errors


def test_a_filter_and_a_sort(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    tab.fill("#filter", "lr<0.05")
    tab.press("#filter", "Enter")
    tab.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 3")
    assert sorted(names_in_table(tab)) == ["lr0.01-s0", "lr0.01-s1", "lr0.01-s2"]
    trials = stored(ui.root)
    by_loss = sorted(names_in_table(tab), key=lambda n: trials[n].metrics["loss"].latest)
    tab.click("#runs th[data-column='metrics.loss']")
    assert names_in_table(tab) == by_loss
    tab.click("#runs th[data-column='metrics.loss']")
    assert names_in_table(tab) == by_loss[::-1]
    tab.fill("#filter", "lr<<")
    tab.press("#filter", "Enter")
    tab.wait_for_function("() => document.getElementById('notice').textContent.includes('lr<<')")


def test_three_selected_runs_draw_three_lines_ending_at_the_stored_values(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    chosen = ["lr0.1-s0", "lr0.01-s2", "boom"]
    for name in chosen:
        tab.locator("#runs tbody tr", has_text=name).locator("input.select").check()
    tab.wait_for_function("() => (document.getElementById('chart-0').data || []).length === 3")
    tab.wait_for_function("() => document.querySelectorAll('#chart-0 .scatterlayer .trace').length === 3")
    trials = stored(ui.root)
    drawn = {t["meta"]["uid"]: t for t in chart_traces(tab)}
    assert set(drawn) == {trials[n].uid for n in chosen}
    for name in chosen:
        loss = trials[name].metrics["loss"]
        trace = drawn[trials[name].uid]
        assert trace["y"][-1] == loss.values[-1] and trace["x"][-1] == loss.steps[-1]
        assert trace["y"] == list(loss.values)  # under 2,000 points: every point, exactly
    legend = tab.eval_on_selector_all("#chart-0 .legendtext", "t => t.map(x => x.textContent)")
    assert sorted(legend) == sorted(chosen)
    # The parameter diff of the selection names what differs.
    tab.wait_for_selector("#diff-wrap:not([hidden])")
    differing = tab.eval_on_selector_all("#diff tr.differs td:first-child", "c => c.map(x => x.textContent)")
    assert set(differing) == {"lr", "seed"}


def test_group_by_all_but_seed_draws_the_mean_with_a_band(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    tab.select_option("#group-by", ["*-seed"])
    tab.wait_for_function(
        "() => (document.getElementById('chart-0').data || []).some(t => t.meta && t.meta.role === 'band')"
    )
    traces = chart_traces(tab)
    trials = stored(ui.root)
    frame = pd.DataFrame(
        [
            {"lr": t.parameters["lr"], "step": s, "loss": v}
            for t in trials.values()
            for s, v in zip(t.metrics["loss"].steps, t.metrics["loss"].values, strict=True)
        ]
    )
    for lr in (0.1, 0.01):
        expected = frame[frame.lr == lr].groupby("step")["loss"].agg(["mean", "std", "count"])
        [mean] = [t for t in traces if t["meta"].get("role") == "mean" and t["meta"]["group"] == f"lr={lr}"]
        assert mean["name"] == f"lr={lr} (n=3)"
        assert mean["x"] == expected.index.tolist()
        assert mean["y"] == pytest.approx(expected["mean"].tolist(), rel=1e-12, abs=1e-12)
        at = traces.index(mean)
        upper, lower = traces[at - 2]["y"], traces[at - 1]["y"]
        assert traces[at - 1]["meta"]["role"] == "band"
        assert upper == pytest.approx((expected["mean"] + expected["std"]).tolist(), rel=1e-9)
        assert lower == pytest.approx((expected["mean"] - expected["std"]).tolist(), rel=1e-9)
    # The groups table: mean ± std of the latest values, with the count.
    tab.wait_for_selector("#groups-wrap:not([hidden])")
    rows = tab.eval_on_selector_all(
        "#groups tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    latest = pd.DataFrame(
        [{"lr": t.parameters["lr"], "loss": t.metrics["loss"].latest} for t in trials.values()]
    )
    for lr in (0.1, 0.01):
        row = next(r for r in rows if r[0] == f"lr={lr}")
        assert row[1] == "3"
        mean, std = latest[latest.lr == lr]["loss"].agg(["mean", "std"])
        assert row[2] == f"{float(f'{mean:.6g}'):g} ± {float(f'{std:.6g}'):g}"


def test_failed_run_page_shows_its_traceback(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    tab.click("#runs a:text-is('boom')")
    tab.wait_for_selector("#run-error-wrap:not([hidden])")
    text = tab.text_content("#run-error")
    assert "ZeroDivisionError: division by zero" in text and "Traceback" in text
    assert tab.text_content("#run-status") == "error"
    tab.wait_for_selector("#run-chart-0 .main-svg")
    charted = tab.eval_on_selector_all("#run-charts .chart", "d => d.map(x => x.dataset.metric)")
    assert sorted(charted) == ["acc", "loss"]
    params = tab.eval_on_selector_all("#run-parameters th", "c => c.map(x => x.textContent)")
    assert sorted(params) == ["depth", "lr", "seed"]


def test_a_run_named_like_html_shows_as_text(page: Page, ui: Served) -> None:
    tab = open_ui(page, ui, 8)
    assert XSS_NAME in names_in_table(tab)
    assert tab.eval_on_selector_all("#runs img", "imgs => imgs.length") == 0
    legend = tab.eval_on_selector_all("#chart-0 .legendtext", "t => t.map(x => x.textContent)")
    assert XSS_NAME in legend
    tab.click(f"#runs a:text-is('{XSS_NAME}')")
    tab.wait_for_function("name => document.getElementById('run-name').textContent === name", arg=XSS_NAME)
    assert tab.eval_on_selector_all("img", "imgs => imgs.length") == 0
    assert page.dialogs == []


@pytest.fixture
def live_root(tmp_path: Path) -> Path:
    return tmp_path / "live"


def test_a_running_runs_new_points_appear_and_a_killed_run_turns_lost(page: Page, live_root: Path) -> None:
    live_root.mkdir()
    run = worker(live_root, "live", 0.1, 0, 5, "live", stdin=__import__("subprocess").PIPE)
    served = start_ui(live_root)
    try:
        assert run.stdout is not None and run.stdin is not None
        assert run.stdout.readline().startswith("ready ")
        tab = open_ui(page, served, 1)
        tab.wait_for_function(
            "() => document.querySelector('#runs td[data-column=status]').textContent === 'running'"
        )
        tab.wait_for_function("() => document.getElementById('chart-0').data[0].x.length === 5")
        for step in (5, 6):
            run.stdin.write("go\n")
            run.stdin.flush()
            assert run.stdout.readline().strip() == f"ack {step}"
            acknowledged = time.monotonic()
            # The promise: a new point is on the chart within 5 s of being logged.
            tab.wait_for_function(
                "step => { const t = document.getElementById('chart-0').data[0]; return t.x[t.x.length - 1] === step; }",
                arg=step,
                timeout=5_000,
            )
            assert time.monotonic() - acknowledged < 5.5
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        tab.wait_for_function(
            "() => document.querySelector('#runs td[data-column=status]').textContent === 'lost'",
            timeout=60_000,
        )
        cls = tab.get_attribute("#runs td[data-column=status] span", "class")
        assert "st-lost" in cls
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
        for stream in (run.stdin, run.stdout, run.stderr):
            if stream is not None:
                stream.close()
        stop(served)


def test_zooming_refetches_the_exact_points_of_the_range(page: Page, tmp_path: Path) -> None:
    from unitrack.persistence.structure import MetricPoint, Trial

    with get_protocol(f"hdf5://{tmp_path}") as db:
        db.strict = False
        trial = db.new_trial(Trial(name="long", parameters={"lr": 0.1}))
        assert trial is not None
        db.log_trial_metric_points(
            trial, [MetricPoint("loss", s, (s * 7919) % 1000 / 1000) for s in range(20_000)]
        )
    served = start_ui(tmp_path)
    try:
        tab = open_ui(page, served, 1)
        [whole] = chart_traces(tab)
        assert len(whole["x"]) <= 2000 and whole["x"][-1] == 19_999  # downsampled at the backend
        tab.evaluate("() => Plotly.relayout('chart-0', {'xaxis.range[0]': 5000, 'xaxis.range[1]': 5300})")
        tab.wait_for_function("() => document.getElementById('chart-0').data[0].x[0] === 5000")
        [zoomed] = chart_traces(tab)
        assert zoomed["x"] == list(range(5000, 5301))  # every point of the range, exactly
        assert zoomed["y"] == [(s * 7919) % 1000 / 1000 for s in range(5000, 5301)]
        tab.evaluate("() => Plotly.relayout('chart-0', {'xaxis.autorange': true})")
        tab.wait_for_function("() => document.getElementById('chart-0').data[0].x[0] === 0")
        assert chart_traces(tab)[0]["x"][-1] == 19_999
    finally:
        stop(served)


def test_a_table_longer_than_its_first_rows_lists_every_run_once_the_chart_is_drawn(
    page: Page, tmp_path: Path
) -> None:
    """The first rows show at once and the others once the first chart is drawn: all of them, once each."""
    from unitrack.persistence.structure import Trial

    with get_protocol(f"hdf5://{tmp_path}") as db:
        db.strict = False
        for i in range(650):  # more than the first rows and a chunk
            trial = db.new_trial(Trial(name=f"r{i:03d}", parameters={"i": i}))
            assert trial is not None
            db.log_trial_metrics(trial, step=0, loss=i / 650)
    served = start_ui(tmp_path)
    try:
        tab = open_ui(page, served, 650)
        assert sorted(names_in_table(tab)) == [f"r{i:03d}" for i in range(650)]
        assert not page.errors, page.errors
    finally:
        stop(served)


def test_a_damaged_run_shows_its_file_and_reason_and_breaks_nothing(page: Page, tmp_path: Path) -> None:
    """A run whose trial.json fails its checksum, and an xmen folder whose params.yml cannot be read, are listed
    as ``damaged`` with the file and the reason; the other runs' rows and chart are drawn as usual."""
    root = tmp_path / "damaged"
    root.mkdir()
    procs = [worker(root, name, lr, 0, 30, "ok") for name, lr in (("good", 0.1), ("bad", 0.2))]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    summary = root / "bad" / "trial.json"
    summary.write_bytes(summary.read_bytes().replace(b'"uid"', b'"uie"'))
    (root / "xmen-bad").mkdir()
    (root / "xmen-bad" / "params.yml").write_bytes(b"{lr: [unclosed\n")
    served = start_ui(root)
    try:
        tab = open_ui(page, served, 3)
        rows = dict(
            tab.eval_on_selector_all(
                "#runs tbody tr",
                "rows => rows.map(r => [r.querySelector('td[data-column=name]').textContent, "
                "[r.querySelector('td[data-column=status]').textContent, "
                "r.querySelector('td[data-column=error]').textContent]])",
            )
        )
        reason = "its content does not match the sha256 on its first line"
        assert rows["good"] == ["finished", ""]
        assert rows["bad"] == ["damaged", f"{summary}: {reason}"]
        assert rows["xmen-bad"][0] == "damaged" and rows["xmen-bad"][1].startswith(
            f"{root / 'xmen-bad' / 'params.yml'}: "
        )
        good = stored_uid(root, "good")
        [line] = [t for t in chart_traces(tab) if t["meta"].get("uid") == good]
        assert line["y"][-1] == loss(0.1, 0, 29) and line["x"][-1] == 29
        tab.click("#runs a:text-is('bad')")
        tab.wait_for_selector("#run-damage-wrap:not([hidden])")
        assert tab.text_content("#run-status") == "damaged"
        assert tab.text_content("#run-damage-file") == str(summary)
        assert tab.text_content("#run-damage-reason") == reason
        tab.go_back()
        tab.click("#runs a:text-is('xmen-bad')")
        tab.wait_for_function(
            "f => document.getElementById('run-damage-file').textContent === f",
            arg=str(root / "xmen-bad" / "params.yml"),
        )
        assert not page.errors, page.errors
    finally:
        stop(served)


def stored_uid(root: Path, name: str) -> str:
    with get_protocol(f"hdf5://{root}") as db:
        db.strict = False
        [trial] = [t for t in db.find_trial_summaries(None) if t.name == name]
        return trial.uid


def test_a_first_view_asks_each_answer_once_and_a_repeat_visit_fetches_no_file(
    page: Page, ui: Served
) -> None:
    """The table and the first chart are asked for once each, with the page (not one after the other, and not
    again by the script); a second visit takes plotly.js and the page's files from the browser's cache."""
    tab = page.page
    asked: list[tuple[str, str | None]] = []
    tab.on("request", lambda r: asked.append((r.url, r.headers.get("if-none-match"))))
    open_ui(page, ui, 8)
    api = sorted(url.split("/api/", 1)[1] for url, tag in asked if "/api/" in url and tag is None)
    assert [a for a in api if not a.startswith("sweep")] == [
        "figure?x=step&smooth=0&log=0&band=std&points=2000&limit=10",
        "runs",
    ]
    files = {url.rsplit("/", 1)[1] for url, _ in asked if "/static/" in url}
    assert any(f.startswith("plotly-") for f in files) and len(files) == 3
    open_ui(page, ui, 8)
    fetched = tab.evaluate(
        """() => performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/static/'))
            .map(e => [e.name.split('/').pop(), e.transferSize])"""
    )
    assert len(fetched) == 3 and all(size == 0 for _, size in fetched), fetched  # 0 bytes: from the cache
    assert not page.errors, page.errors
