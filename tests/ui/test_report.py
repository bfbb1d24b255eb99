"""``unitrack report``: one HTML file that opens with no network and shows the charts ``unitrack ui`` shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.ui.conftest import XSS_NAME, Page, Served, unitrack_command
from tests.ui.test_browser import chart_traces, names_in_table, open_ui


def _report(root: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*unitrack_command(), "report", str(root), "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _offline(page: Page, path: Path) -> list[str]:
    """Open a file with every network request refused; return the requests that were tried."""
    tab = page.page
    tried: list[str] = []

    def refuse(route: object) -> None:
        request = route.request  # type: ignore[attr-defined]
        if request.url.startswith("file://"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            tried.append(request.url)
            route.abort()  # type: ignore[attr-defined]

    tab.context.route("**/*", refuse)
    tab.context.set_offline(True)
    tab.goto(path.as_uri())
    return tried


def test_report_opens_offline_and_shows_the_charts_of_the_ui(page: Page, ui: Served, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = _report(ui.root, out, "--metrics", "loss", "--metrics", "acc")
    assert done.returncode == 0, done.stderr
    assert f"report written to {out}" in done.stdout
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]+(src|href)=", html)  # nothing to fetch
    assert XSS_NAME not in html  # the name is in the data only, with '<' escaped
    # What the web view draws for the same runs (no selection: the first runs of the table, all 8 here).
    tab = open_ui(page, ui, 8)
    ui_loss = {t["meta"]["uid"]: (t["x"], t["y"]) for t in chart_traces(tab)}
    assert len(ui_loss) == 8
    tried = _offline(page, out)
    tab.wait_for_selector("#chart-0 .main-svg")
    tab.wait_for_selector("#chart-1 .main-svg")
    assert tried == []
    assert len(names_in_table(tab)) == 8 and XSS_NAME in names_in_table(tab)
    charted = tab.eval_on_selector_all(".chart[data-metric]", "d => d.map(x => x.dataset.metric)")
    assert charted[:2] == ["loss", "acc"]
    report_loss = {t["meta"]["uid"]: (t["x"], t["y"]) for t in chart_traces(tab)}
    assert report_loss == ui_loss
    assert page.dialogs == [] and not [e for e in page.errors if "Content Security Policy" in e]
    # Sorting still works offline.
    tab.click("#runs th[data-column=name]")
    ascending = names_in_table(tab)
    assert ascending[0] == XSS_NAME and ascending[1] == "boom"
    tab.click("#runs th[data-column=name]")
    assert names_in_table(tab) == ascending[::-1]


def test_report_with_group_by_and_filter(page: Page, ui: Served, tmp_path: Path) -> None:
    out = tmp_path / "grouped.html"
    done = _report(ui.root, out, "-f", "depth==2", "-f", "lr<0.2", "--metrics", "loss", "--group-by", "lr")
    assert done.returncode == 0, done.stderr
    _offline(page, out)
    tab = page.page
    tab.wait_for_selector("#chart-0 .main-svg")
    assert len(names_in_table(tab)) == 6
    means = [t for t in chart_traces(tab) if t["meta"].get("role") == "mean"]
    assert sorted(t["name"] for t in means) == ["lr=0.01 (n=3)", "lr=0.1 (n=3)"]
    rows = tab.eval_on_selector_all("#groups tr td:first-child", "c => c.map(x => x.textContent)")
    assert sorted(rows) == ["lr=0.01", "lr=0.1"]


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    done = _report(tmp_path / "nope", tmp_path / "r.html")
    assert done.returncode == 2
    assert "neither a folder nor a backend URI" in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_ui_of_a_missing_folder_or_a_refused_address_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*unitrack_command(), "ui", str(tmp_path / "nope"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "neither a folder nor a backend URI" in done.stderr
    refused = subprocess.run(
        [*unitrack_command(), "ui", str(tmp_path), "--host", "0.0.0.0", "--users", str(tmp_path / "u.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "has no users" in refused.stderr and "--insecure" in refused.stderr
