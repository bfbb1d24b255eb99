"""Speed of the web view on the default backend (``hdf5://``): what ``unitrack ui`` costs on a big sweep.

Prints, for a root of RUNS runs of POINTS points each (written through the Protocol, like real runs):

- ``/api/runs`` for every run (the run table; target <= 200 ms for 1,000 runs);
- the series API for 100 runs downsampled to 2,000 points per line (target <= 300 ms for 100,000 points each);
- page load to a drawn chart in headless Chromium (target <= 1.5 s for 1,000 runs);
- the server's memory (RSS) before and after serving those requests: it never loads every series.

Usage: ``python benchmarks/ui_bench.py [--runs 1000] [--points 100000] [--root DIR] [--keep]``. Building the
root costs about 2 s per 100,000-point run (10 MB on disk each); ``--root`` reuses one built before.
Each figure is the median of ``--repeat`` requests, after one warm-up request.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def build_runs(root: Path, first: int, last: int, points: int) -> None:
    """Runs ``first..last-1``: parameters lr and seed, one metric ``loss`` of ``points`` points."""
    import math

    from unitrack.persistence.registry import get_protocol
    from unitrack.persistence.structure import MetricPoint, Trial

    with get_protocol(f"hdf5://{root}") as db:
        db.strict = False
        for index in range(first, last):
            lr, seed = (0.1, 0.01, 0.001)[index % 3], index // 3
            trial = db.new_trial(
                Trial(name=f"run{index:05d}", parameters={"lr": lr, "seed": seed, "depth": 4})
            )
            assert trial is not None
            db.log_trial_start(trial)
            for start in range(0, points, 20_000):
                stop = min(points, start + 20_000)
                db.log_trial_metric_points(
                    trial,
                    [
                        MetricPoint("loss", s, math.exp(-lr * s / 1000) + 0.01 * math.sin(s + seed))
                        for s in range(start, stop)
                    ],
                )
            db.log_trial_finish(trial, None, None, None)
            db.commit()


def build(root: Path, runs: int, points: int, jobs: int) -> None:
    done = (
        sum(1 for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")) if root.exists() else 0
    )
    if done >= runs:
        return
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    edges = [done + (runs - done) * i // jobs for i in range(jobs + 1)]
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        futures = [
            pool.submit(build_runs, root, a, b, points) for a, b in zip(edges, edges[1:], strict=False)
        ]
        for future in futures:
            future.result()
    print(f"built {runs - done} runs x {points} points in {time.perf_counter() - started:.0f} s", flush=True)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:  # noqa: S310 - a loopback URL we started
        body = response.read()
    return (time.perf_counter() - started) * 1000, body


def median_ms(url: str, repeat: int, pause_s: float = 0.0) -> tuple[float, bytes]:
    _, body = timed_get(url)  # warm-up: file caches, imports
    times = []
    for _ in range(repeat):
        time.sleep(pause_s)
        ms, body = timed_get(url)
        times.append(ms)
    return statistics.median(times), body


def page_load_ms(url: str, repeat: int) -> float:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        for attempt in range(repeat + 1):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#chart-0 .main-svg .scatterlayer .trace", timeout=120_000)
            elapsed = (time.perf_counter() - started) * 1000
            page.close()
            if attempt:
                times.append(elapsed)
        browser.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--charted", type=int, default=100, help="runs in the series request")
    parser.add_argument("--per-line", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="processes building the root")
    parser.add_argument("--root", type=Path, default=None, help="build (or reuse) the runs here")
    parser.add_argument("--keep", action="store_true", help="keep a temporary root")
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="ui-bench-"))
    build(root, args.runs, args.points, args.jobs)
    unitrack = str(Path(sys.executable).with_name("unitrack"))
    server = subprocess.Popen([unitrack, "ui", str(root), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" at ", 1)[1].split()[0]
        idle = rss_mb(server.pid)
        # Spaced past the catalog's reuse window (CATALOG_TTL_S), so every request builds the catalog anew.
        runs_ms, body = median_ms(url + "api/runs", args.repeat, pause_s=1.2)
        table = json.loads(body)
        uids = [row[0] for row in table["rows"]][: args.charted]
        query = "&".join(f"uid={u}" for u in uids)
        series_ms, body = median_ms(
            f"{url}api/series?metric=loss&points={args.per_line}&{query}", args.repeat
        )
        series = json.loads(body)["series"]
        total = sum(s["total"] for s in series)
        drawn = sum(len(s["steps"]) for s in series)
        typed_ms, _ = median_ms(
            f"{url}api/series?metric=loss&points={args.per_line}&encoding=typed&{query}", args.repeat
        )
        figure_ms, body = median_ms(
            f"{url}api/figure?metric=loss&points={args.per_line}&{query}", args.repeat
        )
        page_ms = page_load_ms(url, max(1, args.repeat // 2)) if os.path.exists(CHROMIUM) else float("nan")
        busy, peak = rss_mb(server.pid), hwm_mb(server.pid)
        on_disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e9
        print(f"root: {table['count']} runs x {args.points} points ({on_disk:.1f} GB on disk), hdf5://")
        print(f"/api/runs ({table['count']} runs): {runs_ms:.0f} ms  [target <= 200 ms for 1,000 runs]")
        print(
            f"/api/series ({len(series)} runs x {total // max(len(series), 1)} points -> {drawn // max(len(series), 1)}"
            f" per line): {series_ms:.0f} ms  [target <= 300 ms for 100 x 100,000 -> 2,000]"
        )
        print(f"/api/series, the same with encoding=typed (base64 float64 arrays): {typed_ms:.0f} ms")
        print(f"/api/figure (the same lines as a plotly figure): {figure_ms:.0f} ms")
        print(
            f"page load to a drawn chart ({table['count']} runs, 10 lines): {page_ms:.0f} ms  [target <= 1.5 s]"
        )
        print(
            f"server memory: {idle:.0f} MB idle, {busy:.0f} MB after serving, {peak:.0f} MB peak "
            f"(every series of every run would be {table['count'] * args.points * 24 / 1e6:.0f} MB)"
        )
    finally:
        server.terminate()
        server.wait()
        if args.root is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
