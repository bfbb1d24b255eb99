"""Fixtures of the web view's tests: a sweep of real runs, ``unitrack ui`` serving it, one headless Chromium.

The browser is Debian's ``chromium`` (installed by ``.ci/run``) driven by Playwright; Playwright's own browser
download is never used. Under ``CI=true`` a missing browser fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("UNITRACK_CHROMIUM", "/usr/bin/chromium")
#: How this machine's Chromium must start (no network, no GPU, no sandbox as root).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WORKER = Path(__file__).with_name("run_worker.py")
XSS_NAME = "<img src=x onerror=alert(1)>"
#: The fixture sweep: (name, lr, seed, steps, mode).
SWEEP = [
    *((f"lr{lr}-s{seed}", lr, seed, 40, "ok") for lr in (0.1, 0.01) for seed in (0, 1, 2)),
    ("boom", 0.5, 0, 10, "fail"),
    (XSS_NAME, 0.3, 0, 20, "ok"),
]


def unitrack_command() -> list[str]:
    """The installed ``unitrack`` console script of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("unitrack"))]


def worker(
    root: Path, name: str, lr: float, seed: int, steps: int, mode: str, **kw: Any
) -> subprocess.Popen[str]:
    """Start one run of the sweep as its own process."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(root), name, str(lr), str(seed), str(steps), mode],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@pytest.fixture(scope="session")
def sweep_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root of eight finished runs, logged by real processes at once: six of lr x seed, one that raised
    ZeroDivisionError, and one whose name is an HTML tag."""
    root = tmp_path_factory.mktemp("sweep")
    procs = [worker(root, *run) for run in SWEEP]
    for proc, run in zip(procs, SWEEP, strict=True):
        out, err = proc.communicate(timeout=120)
        expected = 1 if run[4] == "fail" else 0
        assert proc.returncode == expected, f"{run[0]} exited {proc.returncode}: {err}"
    return root


@dataclass
class Served:
    """A running ``unitrack ui``."""

    url: str
    root: Path
    process: subprocess.Popen[str]


def start_ui(root: Path, *extra: str) -> Served:
    """Start ``unitrack ui ROOT --port 0`` and return once it printed where it listens."""
    proc = subprocess.Popen(
        [*unitrack_command(), "ui", str(root), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"unitrack ui printed nothing within 60 s: {proc.stderr.read() if proc.stderr else ''}")
    assert " at http://" in line, line
    return Served(line.split(" at ", 1)[1].split()[0], root, proc)


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
    for stream in (served.process.stdout, served.process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="session")
def ui(sweep_root: Path) -> Iterator[Served]:
    served = start_ui(sweep_root)
    yield served
    stop(served)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole session."""
    if not os.path.exists(CHROMIUM):
        message = f"no browser at {CHROMIUM}: apt-get install -y chromium (or set UNITRACK_CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every browser a fresh, empty profile folder of its own.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Page:
    """A browser page plus what it reported: console errors, failed requests and dialogs (alerts)."""

    page: Any
    errors: list[str]
    dialogs: list[str]


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    seen = Page(tab, [], [])
    tab.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: seen.errors.append(str(e)))

    def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    yield seen
    context.close()
