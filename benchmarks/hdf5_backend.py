"""hdf5:// backend figures (the embedded default), printed beside the store's own append_row.

- logging: one trial, 4 scalars per step, one ``log_trial_metrics`` per step (target: the store's ``append_row``
  target, >= 250,000 scalars/s; a call writes 4 long-form rows where ``append_row`` writes one wide row, so
  the raw ``append_row`` figure printed beside it is a reference, not the bar);
- sweep: 1,000 trials x (parameters + 100 steps of 4 metrics) created through the backend, then
  ``CollectionReader(root).df('metrics')`` joined with ``.df('metadata')`` (targets <= 10 s and <= 1 s);
- query: ``fetch_trials({'parameters.lr': {'$lt': 0.01}})`` over those 1,000 trials, and a filter on status;
- lifecycle: 1,000 trials registered (xmen's ``registered`` status: a summary each, no store), then each set
  running and completed without a metric (the running status creates its store).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unitrack.persistence.backends.hdf5 import HDF5Protocol  # noqa: E402
from unitrack.persistence.structure import CustomStatus, Status, Trial  # noqa: E402
from unitrack.store import Store  # noqa: E402
from unitrack.store.contents import is_store_dir  # noqa: E402


def logging_speed(steps: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        with Store(folder, "raw") as store:
            table = store.add_table("t", {"a": float, "b": float, "c": float, "d": float})
            t0 = time.perf_counter()
            for i in range(steps):
                table.append_row({"a": 0.1 * i, "b": 1.0, "c": 2.0, "d": 3.0})
            raw = 4 * steps / (time.perf_counter() - t0)
        with HDF5Protocol(f"hdf5://{folder}", strict=False) as db:
            trial = db.new_trial(Trial(name="run"))
            assert trial is not None
            uid = trial.uid
            t0 = time.perf_counter()
            for i in range(steps):
                db.log_trial_metrics(uid, step=i, loss=0.1 * i, acc=1.0, lr=2.0, grad=3.0)
            backend = 4 * steps / (time.perf_counter() - t0)
    print(f"logging, 4 scalars per call, {steps:,} calls")
    print(f"  store append_row (one row of 4 floats): {raw:12,.0f} scalars/s")
    print(
        f"  hdf5:// log_trial_metrics (long form): {backend:12,.0f} scalars/s   target >= 250,000 (the append_row target)"
    )


def sweep(trials: int, steps: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        with HDF5Protocol(f"hdf5://{folder}", strict=False) as db:
            for k in range(trials):
                t = db.new_trial(Trial(name=f"run{k}", parameters={"lr": 10 ** -(1 + k % 4), "seed": k}))
                assert t is not None
                for i in range(steps):
                    db.log_trial_metrics(t, step=i, loss=1.0 / (i + 1), acc=0.5, lr=0.1, grad=1.0)
        created = time.perf_counter() - t0
        from unitrack.store.readers import CollectionReader

        t0 = time.perf_counter()
        reader = CollectionReader(folder)
        df = reader.df("metrics").merge(reader.df("metadata"), on="exp_id")
        reader.close()
        read = time.perf_counter() - t0
        assert len(df) == trials * steps * 4
        with HDF5Protocol(f"hdf5://{folder}") as db:
            db.fetch_trials({"name": "none"})  # first scan reads every summary once
            t0 = time.perf_counter()
            found = db.fetch_trials({"parameters.lr": {"$lt": 0.01}})
            query = time.perf_counter() - t0
            t0 = time.perf_counter()
            none = db.fetch_trials({"status": "running"})
            scan = time.perf_counter() - t0
        assert len(found) == trials // 2 and not none
    print(f"sweep: {trials:,} trials x (parameters + {steps} steps x 4 metrics)")
    print(f"  created through the backend:        {created:8.2f} s    target <= 10 s")
    print(f"  CollectionReader metrics+metadata:  {read:8.3f} s    target <= 1 s ({len(df):,} rows)")
    print(f"  fetch_trials(lr < 0.01), {len(found)} trials with their metrics: {query:8.3f} s")
    print(f"  fetch_trials(status == running), none match:   {scan:8.3f} s  (summaries only)")


def lifecycle(trials: int) -> None:
    registered = CustomStatus("registered", 1)
    with tempfile.TemporaryDirectory() as folder:
        with HDF5Protocol(f"hdf5://{folder}", strict=False) as db:
            t0 = time.perf_counter()
            uids = []
            for k in range(trials):
                t = db.new_trial(Trial(name=f"run{k}", parameters={"seed": k}, status=registered))
                assert t is not None
                uids.append(t.uid)
            register = time.perf_counter() - t0
            early = sum(is_store_dir(str(Path(folder) / f"run{k}")) for k in range(trials))
            t0 = time.perf_counter()
            for uid in uids:
                db.set_trial_status(uid, Status.Running)
                db.set_trial_status(uid, Status.Completed)
            db.commit()
            run = time.perf_counter() - t0
        stores = sum(is_store_dir(str(Path(folder) / f"run{k}")) for k in range(trials))
    print(f"lifecycle: {trials:,} trials")
    print(f"  registered ({early:,} stores):                          {register:8.2f} s")
    print(f"  running -> completed, no metrics ({stores:,} stores):  {run:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=1_000)
    args = parser.parse_args()
    logging_speed(args.steps)
    sweep(args.trials, 100)
    lifecycle(args.trials)


if __name__ == "__main__":
    main()
