"""One training run of the UI tests' fixture sweep, as a real process: ``python run_worker.py ROOT NAME LR SEED
STEPS MODE`` logs ``loss`` and ``acc`` through ``TrackClient`` to ``hdf5://ROOT``.

MODE is ``ok`` (finish), ``fail`` (raise ZeroDivisionError after the steps) or ``live`` (keep logging, one step
each time a line arrives on stdin, printing ``ack STEP`` after each, until killed).
"""

from __future__ import annotations

import sys

import unitrack


def loss(lr: float, seed: int, step: int) -> float:
    """The value a run logs (the tests compute it again)."""
    return round(1.0 / (1.0 + lr * step) + 0.01 * seed, 10)


def main() -> None:
    root, name, lr, seed, steps, mode = sys.argv[1:7]
    # A live run writes its summary (the catalog's latest values) at every write, not once a second: it
    # pauses between steps, waiting for the test.
    options = "?summary_interval_s=0" if mode == "live" else ""
    client = unitrack.TrackClient(f"hdf5://{root}{options}")
    client.new_trial(name=name, parameters={"lr": float(lr), "seed": int(seed), "depth": 2})
    with client:
        for step in range(int(steps)):
            client.log_metrics(
                step=step, loss=loss(float(lr), int(seed), step), acc=step / max(int(steps), 1)
            )
        if mode == "fail":
            print(1 / 0)
        if mode == "live":
            step = int(steps)
            print(f"ready {client.trial.uid}", flush=True)
            for _line in sys.stdin:
                client.log_metrics(step=step, loss=loss(float(lr), int(seed), step))
                print(f"ack {step}", flush=True)
                step += 1


if __name__ == "__main__":
    main()
