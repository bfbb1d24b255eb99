"""System metrics sampler figures: its cost, and that logging through the same trial is as fast with it on.

- cost: the process's CPU time per reading written to an ``hdf5://`` trial (psutil host + process figures, NVML
  when a driver is present), measured over many readings at a short interval while the main thread sleeps; the
  overhead at the default 10 s interval is that cost / 10 s (target: < 0.5 % of one core). ``--direct S`` also
  runs the sampler at 10 s for S seconds and prints the CPU time actually used;
- throughput: ``TrackClient.log_metrics`` (4 scalars per call) on ``hdf5://`` with the sampler off, at 10 s and
  at 0.1 s (target: unchanged within noise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unitrack.persistence.system import SystemReader  # noqa: E402
from unitrack.persistence.track import TrackClient  # noqa: E402


def _client(folder: str, system_metrics: float | bool) -> TrackClient:
    client = TrackClient(f"hdf5://{folder}/runs", system_metrics=system_metrics)
    client.set_project(name="bench")
    client.new_trial(name="run", parameters={"x": 1})
    return client


def cost(samples: int) -> float:
    reader = SystemReader()
    t0 = time.process_time()
    for _ in range(samples):
        reader.read()
    read_ms = 1000 * (time.process_time() - t0) / samples
    with tempfile.TemporaryDirectory() as folder:
        client = _client(folder, 0.05)
        with client:
            sampler = client.logger._sampler
            assert sampler is not None
            sampler_samples_0, cpu0, wall0 = sampler.samples, time.process_time(), time.perf_counter()
            while sampler.samples - sampler_samples_0 < samples:
                time.sleep(0.05)  # the main thread idles: the process's CPU time is the sampler's
            used = time.process_time() - cpu0
            written = sampler.samples - sampler_samples_0
            wall = time.perf_counter() - wall0
    per_sample_ms = 1000 * used / written
    print(f"sampler cost ({written} readings written to hdf5:// in {wall:.1f} s)")
    print(f"  one reading (psutil{', NVML' if SystemReader().gpu_names else ''}):  {read_ms:8.3f} ms CPU")
    print(f"  reading + write + wake-up:  {per_sample_ms:8.3f} ms CPU")
    overhead = per_sample_ms / 10_000 * 100
    print(f"  overhead at a 10 s interval: {overhead:.4f} % of one core   target < 0.5 %")
    return per_sample_ms


def direct(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        client = _client(folder, 10.0)
        cpu0 = time.process_time()
        with client:
            time.sleep(seconds)
        used = time.process_time() - cpu0
    print(f"direct: the sampler at 10 s for {seconds:.0f} s used {1000 * used:.1f} ms CPU "
          f"({100 * used / seconds:.4f} % of one core, start and stop included)")  # fmt: skip


def throughput(calls: int, repeats: int) -> None:
    print(f"logging throughput, TrackClient.log_metrics with 4 scalars, {calls:,} calls, best of {repeats}")
    for label, interval in (
        ("sampler off", False),
        ("sampler every 10 s", 10.0),
        ("sampler every 0.1 s", 0.1),
    ):
        rates = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as folder:
                client = _client(folder, interval)
                with client:
                    log = client.logger.log_metrics
                    t0 = time.perf_counter()
                    for i in range(calls):
                        log(step=i, loss=0.1 * i, acc=1.0, lr=2.0, grad=3.0)
                    rates.append(calls / (time.perf_counter() - t0))
        print(f"  {label:20s} {max(rates):10,.0f} calls/s  (median {statistics.median(rates):,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--direct", type=float, default=0.0, help="also sample at 10 s for this many seconds")
    args = parser.parse_args()
    cost(args.samples)
    if args.direct:
        direct(args.direct)
    throughput(args.calls, args.repeats)


if __name__ == "__main__":
    main()
