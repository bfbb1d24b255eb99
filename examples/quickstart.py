"""Quick start: a small sweep logged through unitrack, then queried back.

Minimises f(x) = (x - 2.03)**2 + 3 by fixed-size steps (the cox walkthrough's problem) for a grid of step
sizes, logging every run as a trial of one group, then asks the backend which runs converged.

Runs on the embedded default backend (hdf5://runs: one cox store per trial under ./runs) unless UNITRACK_URI
names another one; `CollectionReader("runs").df("metrics")` then reads every run into one DataFrame.
"""

from __future__ import annotations

import unitrack


def f(x: float) -> float:
    return (x - 2.03) ** 2 + 3


def minimise(client: unitrack.TrackClient, step: float, tol: float = 1e-6, x: float = 0.0) -> float:
    for i in range(1000):
        x = x + step if f(x + step) < f(x - step) else x - step
        client.log_metrics(step=i, x=x, f=f(x))
        if abs(f(x + step) - f(x - step)) < tol:
            break
    return x


def main() -> None:
    client = unitrack.TrackClient()  # $UNITRACK_URI, else the embedded default under ./runs
    client.set_project(name="quickstart")
    client.set_group(name="step-sweep")
    for step in (0.001, 0.01, 0.1, 1.0):
        client.new_trial(name=f"step={step}", parameters={"step": step, "tol": 1e-6})
        with client:  # running -> completed (or exception, with the traceback recorded)
            final = minimise(client, step)
            client.log_metadata(final_x=final)

    trials = client.protocol.fetch_trials({"project_id": "quickstart", "parameters.step": {"$lte": 0.1}})
    print(f"{'trial':<12} {'status':<10} {'points':>6} {'final f(x)':>12}")
    for trial in trials:
        f_series = trial.metrics["f"]
        print(f"{trial.name:<12} {str(trial.status):<10} {len(f_series):>6} {f_series.latest:>12.6f}")
    client.close()


if __name__ == "__main__":
    main()
