"""``unitrack.plot``: the web view's chart in a notebook cell (the same figure module)."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

import unitrack
from unitrack.errors import ConfigError
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Trial
from unitrack.ui.data import Source


@pytest.fixture
def root(tmp_path: Path) -> Path:
    with get_protocol(f"hdf5://{tmp_path}") as db:
        db.strict = False
        for lr in (0.1, 0.2):
            for seed in range(2):
                t = db.new_trial(Trial(name=f"lr{lr}-s{seed}", parameters={"lr": lr, "seed": seed}))
                for step in range(3000):
                    db.log_trial_metrics(t, step=step, loss=lr * step + seed)
    return tmp_path


def test_plot_a_catalog_frame_grouped_like_the_web_view(root: Path) -> None:
    with Source(root) as source:
        frame = source.runs(["lr>0.15"])
    fig = unitrack.plot(frame, "loss", group_by="lr", source=root, max_points=500)
    assert isinstance(fig, go.Figure)
    [mean] = [t for t in fig.data if t.name]
    assert mean.name == "lr=0.2 (n=2)" and len(mean.x) <= 1000
    assert mean.y[-1] == pytest.approx(0.2 * 2999 + 0.5)


def test_plot_uids_or_a_root_and_refuse_without_a_source(root: Path) -> None:
    with Source(root) as source:
        uids = list(source.runs().index[:2])
    fig = unitrack.plot(uids, "loss", source=str(root), legend="{name}")
    assert len(fig.data) == 2 and all(len(t.x) <= 2000 and t.x[-1] == 2999 for t in fig.data)
    assert len(unitrack.plot(str(root), "loss").data) == 4
    with pytest.raises(ConfigError, match="source="):
        unitrack.plot(uids, "loss")
    with pytest.raises(ConfigError, match="no run"):
        unitrack.plot(["nope"], "loss", source=root)
