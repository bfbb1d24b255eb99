"""``unitrack report``: the runs table and their charts in one self-contained HTML file.

The file holds its data (JSON in a ``<script type="application/json">`` element, every ``<`` escaped), the
plotly.js of the installed ``plotly`` wheel and the web view's own script, inline: it opens offline, from a
mail or a paper's supplement, in any browser. A Content-Security-Policy in the page allows exactly those
scripts (by hash) and nothing from the network.

Example:
    >>> import tempfile, pathlib
    >>> from unitrack.persistence.registry import get_protocol
    >>> from unitrack.persistence.structure import Trial
    >>> root = tempfile.mkdtemp()
    >>> with get_protocol(f"hdf5://{root}") as db:
    ...     db.strict = False
    ...     t = db.new_trial(Trial(name="a", parameters={"lr": 0.1}))
    ...     db.log_trial_metrics(t, step=1, loss=0.5)
    >>> out = pathlib.Path(root) / "report.html"
    >>> write_report(root, out).stat().st_size > 1_000_000  # plotly.js is inline
    True
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unitrack.ui import data, figures
from unitrack.ui.data import Source

__all__ = ["MAX_LINES", "build_report", "write_report"]

#: Points per series in a report (enough for a page-wide chart, small enough to mail).
REPORT_POINTS = 1000
#: Lines per chart at most (ungrouped); more runs are summarized by --group-by.
MAX_LINES = 100


def _script_safe(code: str) -> str:
    """JavaScript that cannot end its ``<script>`` element early."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def _sha256(code: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode() + "'"


def build_report(
    source: Source,
    filters: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    *,
    points: int = REPORT_POINTS,
    status: str | None = None,
) -> str:
    """The report's HTML text.

    Args:
        source: Where the runs are read.
        filters: ``view -f`` filters choosing the runs.
        status: Keep runs with one of these status words (``"finished,error"``), as ``view --status``.
        metrics: The metrics charted (default: every metric, at most 12).
        group_by: Parameters to group runs by (``*-seed`` for all but seeds): a mean line and band per group.
        points: Points per series.
    """
    from unitrack.ui.app import plotly_js_path, static_text

    rows, columns = source.rows(filters, status)
    payload = data.table(rows, columns)
    params = data.parameter_keys(columns)
    all_metrics = data.metric_keys(columns)
    varying = data.varying(rows, params)
    payload.update(parameters=params, metrics=all_metrics, varying=varying, source=source.label)
    chosen = list(metrics) if metrics else all_metrics[:12]
    runs = {str(r["uid"]): r for r in rows}
    charted = list(runs)[: MAX_LINES if not group_by else len(runs)]
    figs: dict[str, Any] = {}
    for metric in chosen:
        found = source.series(charted, [metric], max_points=points)
        figs[metric] = figures.line_figure(
            found, {u: runs[u] for u in charted}, metric, group_by=list(group_by or []) or None, binary=True
        )
    sweep_metric = chosen[0] if chosen else ""
    sweep = {
        "parcoords": figures.parcoords_figure(rows, sweep_metric, varying),
        "scatter": figures.scatter_figure(rows, varying[0] if varying else "", sweep_metric),
    }
    report = {
        "runs": payload,
        "figures": figs,
        "groups": figures.group_table(rows, list(group_by or []) or None, chosen) if group_by else None,
        "sweep": sweep,
        "settings": {
            "filters": list(filters),
            "status": status,
            "metrics": chosen,
            "group_by": list(group_by or []),
            "charted": charted,
        },
    }
    embedded = json.dumps(report, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    plotly_js = _script_safe(plotly_js_path().read_text(encoding="utf-8"))
    app_js = _script_safe(static_text("app.js"))
    css = static_text("app.css").replace("</", "<\\/")
    page = static_text("index.html")
    body = page[page.index("<body>") + len("<body>") : page.index("</body>")]
    csp = (
        f"default-src 'none'; script-src {_sha256(plotly_js)} {_sha256(app_js)}; "
        "style-src 'unsafe-inline'; img-src data: blob:; base-uri 'none'; form-action 'none'"
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        "<title>unitrack report</title>\n"
        f"<style>\n{css}\n</style>\n</head>\n<body>{body}"
        f'<script type="application/json" id="unitrack-data">{embedded}</script>\n'
        f"<script>{plotly_js}</script>\n<script>{app_js}</script>\n</body>\n</html>\n"
    )


def write_report(
    target: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    filters: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
    *,
    points: int = REPORT_POINTS,
    status: str | None = None,
) -> Path:
    """Write the report of the runs at ``target`` (a root folder or a backend URI) to ``output``.

    Returns:
        The file written (atomically: a reader never sees half a report).
    """
    with Source(target) as source:
        text = build_report(source, filters, metrics, group_by, points=points, status=status)
    path = Path(output)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
