"""Print the Monitor's per-step overhead.

A 5-deep nested loop of 1,000,000 innermost steps, with a Logger at @1000s (to a null stream) and a messenger at
@100s (to a dummy sink), compared with the same loop without a Monitor, in the same run. Target: <= 2 µs per step.

Run from the repository root: ``python benchmarks/monitor_bench.py``.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unitrack.monitor import Monitor  # noqa: E402

SHAPE = (2, 2, 2, 5, 25_000)  # 1,000,000 innermost steps
STEPS = 1
for n in SHAPE:
    STEPS *= n
TARGET_US = 2.0


class DummySink:
    def __init__(self) -> None:
        self.count = 0

    def message(self, values, keep="latest", leader=None):
        self.count += 1


def plain() -> float:
    loss = 0.0
    start = time.perf_counter()
    for _ in range(SHAPE[0]):
        for _ in range(SHAPE[1]):
            for _ in range(SHAPE[2]):
                for _ in range(SHAPE[3]):
                    for _ in range(SHAPE[4]):
                        loss += 1.0
    return time.perf_counter() - start


def monitored() -> tuple[float, Monitor, DummySink]:
    sink = DummySink()
    m = Monitor(log="^loss$@1000s", msg="^loss$->^sink$@100s", stream=io.StringIO())
    loss = 0.0
    start = time.perf_counter()
    for _ in m(range(SHAPE[0])):
        for _ in m(range(SHAPE[1])):
            for _ in m(range(SHAPE[2])):
                for _ in m(range(SHAPE[3])):
                    for _ in m(range(SHAPE[4])):
                        loss += 1.0
    return time.perf_counter() - start, m, sink


def main() -> None:
    repeats = 3
    base = min(plain() for _ in range(repeats))
    runs = [monitored() for _ in range(repeats)]
    best, m, sink = min(runs, key=lambda r: r[0])
    assert m.step == STEPS and sink.count == STEPS // 100 * 2  # summary + values per due step
    base_us = base / STEPS * 1e6
    mon_us = best / STEPS * 1e6
    overhead = mon_us - base_us
    print(f"loop shape {SHAPE}: {STEPS:,} innermost steps, best of {repeats}")
    print(f"without Monitor: {base_us:.3f} µs/step ({base:.2f} s)")
    print(f"with Monitor (Logger @1000s, messenger @100s): {mon_us:.3f} µs/step ({best:.2f} s)")
    print(
        f"overhead: {overhead:.3f} µs/step; target <= {TARGET_US:.1f} µs: "
        f"{'met' if overhead <= TARGET_US else 'MISSED'} (margin {TARGET_US - overhead:+.3f} µs)"
    )


if __name__ == "__main__":
    main()
