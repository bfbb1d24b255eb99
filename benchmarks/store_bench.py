"""Print the store layer's speed beside its targets and beside a raw limit.

The raw limit writes or reads the same numbers as packed binary in one file (no schema, no CRC, no HDF5),
which is what the hardware allows. Run from the repository root: ``python benchmarks/store_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from unitrack.store import Store  # noqa: E402
from unitrack.store.readers import CollectionReader  # noqa: E402

ROW = struct.Struct("<4d")


def line(label: str, value: str, target: str, raw: str) -> None:
    print(f"{label:<44} {value:>16}   target {target:<14} raw limit {raw}")


def bench_append(root: str, steps: int) -> None:
    with Store(root, "throughput") as store:
        table = store.add_table("metrics", {"loss": float, "acc": float, "lr": float, "grad": float})
        t0 = time.perf_counter()
        for i in range(steps):
            table.append_row({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "lr": 0.1, "grad": 0.5})
        elapsed = time.perf_counter() - t0
    rate = 4 * steps / elapsed
    path = os.path.join(root, "raw.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    t0 = time.perf_counter()
    for i in range(steps):
        os.write(fd, ROW.pack(1.0 / (i + 1), i * 1e-6, 0.1, 0.5))
    raw = time.perf_counter() - t0
    os.close(fd)
    line(
        f"append_row, 4 floats/row, {steps} rows",
        f"{rate:,.0f} scalars/s",
        ">= 250,000/s",
        f"{4 * steps / raw:,.0f} scalars/s ({elapsed / steps * 1e6:.1f} vs {raw / steps * 1e6:.1f} us/row)",
    )


def bench_many(root: str, n_stores: int, n_rows: int) -> None:
    folder = os.path.join(root, "many")
    os.makedirs(folder)
    t0 = time.perf_counter()
    for k in range(n_stores):
        with Store(folder, f"run-{k:05d}") as store:
            store.add_table("metadata", {"lr": float, "seed": int, "name": str}).append_row(
                {"lr": 10.0 ** -(k % 5), "seed": k, "name": f"run {k}"}
            )
            metrics = store.add_table("metrics", {"step": int, "loss": float, "acc": float, "lr": float})
            for i in range(n_rows):
                metrics.append_row({"step": i, "loss": 1.0 / (i + 1), "acc": i / n_rows, "lr": 0.1})
    create = time.perf_counter() - t0

    raw_path = os.path.join(root, "many_raw.bin")
    t0 = time.perf_counter()
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for k in range(n_stores):
        os.write(fd, ROW.pack(10.0 ** -(k % 5), k, 0, 0))
        for i in range(n_rows):
            os.write(fd, ROW.pack(i, 1.0 / (i + 1), i / n_rows, 0.1))
    os.close(fd)
    raw_create = time.perf_counter() - t0
    line(
        f"create {n_stores} stores x (1 + {n_rows} rows)",
        f"{create:.2f} s",
        "<= 10 s",
        f"{raw_create:.2f} s",
    )

    t0 = time.perf_counter()
    reader = CollectionReader(folder)
    joined = reader.df("metrics").merge(reader.df("metadata"), on="exp_id", suffixes=("", "_meta"))
    read = time.perf_counter() - t0
    assert len(joined) == n_stores * n_rows, len(joined)
    t0 = time.perf_counter()
    with open(raw_path, "rb") as fh:
        arr = np.frombuffer(fh.read(), dtype="<f8").reshape(-1, 4)
    _ = arr.sum()
    raw_read = time.perf_counter() - t0
    line(
        "CollectionReader metrics joined with metadata",
        f"{read:.3f} s",
        "<= 1 s",
        f"{raw_read:.3f} s",
    )


def bench_state(root: str, megabytes: int) -> None:
    try:
        import torch
    except ImportError:
        print("torch not installed: skipping the PYTORCH_STATE figure")
        return
    model = torch.nn.Linear(1024, megabytes * 256)  # 1024 * 256 * 4 bytes = 1 MiB per unit
    with Store(root, "state") as store:
        table = store.add_table("ckpt", {"model": Store.PYTORCH_STATE})
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            table.append_row({"model": model})
            best = min(best, time.perf_counter() - t0)
    # The raw limit is the faster of torch.save to a path and to an open file (the store uses the latter).
    plain = float("inf")
    for i in range(5):
        t0 = time.perf_counter()
        torch.save(model.state_dict(), os.path.join(root, f"plain{i}.pt"))
        plain = min(plain, time.perf_counter() - t0)
        t0 = time.perf_counter()
        with open(os.path.join(root, f"plain_fh{i}.pt"), "wb") as fh:
            torch.save(model.state_dict(), fh)
        plain = min(plain, time.perf_counter() - t0)
    line(
        f"{megabytes} MB state_dict as PYTORCH_STATE",
        f"{best * 1e3:.1f} ms ({best / plain:.2f}x)",
        "<= 1.5x save",
        f"torch.save {plain * 1e3:.1f} ms",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--state-mb", type=int, default=10)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="store_bench_")
    try:
        bench_append(root, args.steps)
        bench_many(root, args.stores, args.rows)
        bench_state(root, args.state_mb)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
