"""Throughput of ``Experiment.message`` with four scalars, on the default backend (or ``$UNITRACK_URI``).

Every call is durable in the backend when it returns (one atomic write: the metric points and the kept
values together), so this measures the backend's write path plus unitrack's per-message work.
xmen rewrote params.yml on every message: about 130 messages/s.

    python benchmarks/experiment_bench.py [N]     (5 rounds of N messages, 50,000 by default)
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unitrack.experiment import Experiment  # noqa: E402
from unitrack.persistence.registry import resolve_uri  # noqa: E402


class Bench(Experiment):
    """A benchmark experiment."""

    lr: float = 0.1  # @p a parameter


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rounds = 5
    rates = []
    with tempfile.TemporaryDirectory() as root:
        ex = Bench(root, "bench")
        with ex:
            ex.message({"loss": 1.0, "acc": 0.0, "lr": 0.1, "epoch": 0})  # the trial's store is created here
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for r in range(rounds):
                t0 = time.perf_counter()
                for i in range(r * n + 1, (r + 1) * n + 1):
                    ex.message({"loss": 1.0 / (i + 1), "acc": i / n, "lr": 0.1, "epoch": i // 100})
                rates.append(n / (time.perf_counter() - t0))
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
            t0 = time.perf_counter()
        closing = time.perf_counter() - t0
        print(f"backend: {resolve_uri(None, root)}")
    rates.sort()
    print(
        f"{rounds} rounds of {n} messages of 4 scalars: median {rates[rounds // 2]:,.0f} messages/s "
        f"(best {rates[-1]:,.0f}, worst {rates[0]:,.0f}); target >= 50,000"
    )
    print(
        f"peak RSS grew {grown:.1f} MB over {rounds * n:,} messages; exit (store.h5 written) {closing:.2f} s"
    )


if __name__ == "__main__":
    main()
