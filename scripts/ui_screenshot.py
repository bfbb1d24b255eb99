"""Make the README's screenshot of ``unitrack ui``: a small sweep, the web view, headless Chromium.

Usage: ``python scripts/ui_screenshot.py [docs/ui.png]``. Needs Debian's ``chromium`` (``/usr/bin/chromium``,
or ``$UNITRACK_CHROMIUM``) and the ``playwright`` package of the test extra; nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = os.environ.get("UNITRACK_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def make_sweep(root: Path) -> None:
    """Nine runs of lr x seed (300 steps of a noisy loss and an accuracy), and one that diverged and failed."""
    import unitrack

    for lr in (0.3, 0.1, 0.03):
        for seed in range(3):
            rng = random.Random(seed * 7 + int(lr * 100))  # noqa: S311 - made-up training noise
            client = unitrack.TrackClient(f"hdf5://{root}")
            client.new_trial(
                name=f"resnet-lr{lr}-seed{seed}", parameters={"lr": lr, "seed": seed, "depth": 18}
            )
            with client:
                for step in range(300):
                    loss = 2.3 * math.exp(-lr * step / 40) + 0.15 + rng.gauss(0, 0.04)
                    client.log_metrics(step=step, loss=loss, accuracy=min(0.99, 1 - loss / 2.6))
    client = unitrack.TrackClient(f"hdf5://{root}")
    client.new_trial(name="resnet-lr1.0-seed0", parameters={"lr": 1.0, "seed": 0, "depth": 18})
    try:
        with client:
            for step in range(40):
                client.log_metrics(step=step, loss=2.3 + step * 0.03, accuracy=0.1)
            raise FloatingPointError("loss is nan at step 40")
    except FloatingPointError:
        pass


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        make_sweep(root)
        unitrack = str(Path(sys.executable).with_name("unitrack"))
        server = subprocess.Popen(  # noqa: S603 - our own console script
            [unitrack, "ui", str(root), "--port", "0"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split(" at ", 1)[1].split()[0]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
                page.goto(url)
                page.wait_for_selector("#chart-0 .main-svg")
                page.check(".metric-choice[value=accuracy]")
                page.select_option("#group-by", ["*-seed"])
                page.wait_for_function(
                    "() => ['chart-0', 'chart-1'].every(id => { const d = document.getElementById(id);"
                    " return d && (d.data || []).some(t => t.meta && t.meta.role === 'band'); })"
                )
                page.wait_for_timeout(500)
                page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1360, "height": 900})
                browser.close()
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {out}")  # noqa: T201 - a script reports what it wrote


if __name__ == "__main__":
    main()
