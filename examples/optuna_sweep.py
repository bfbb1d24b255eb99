"""An adaptive sweep: Optuna proposes parameters, each proposal runs as a unitrack Experiment, its result goes back.

Optuna's ask/tell interface drives ``examples/quadratic.py``'s ``Quadratic`` experiment: every proposal is
registered to ``{root}/trial-<n>`` (its ``params.yml`` and its trial, in the group of the root folder), run, and
the smallest ``f`` it reached is told to the study. The root is then an ordinary sweep::

    python examples/optuna_sweep.py --root runs/adaptive --trials 12
    unitrack view runs/adaptive --sort f

Each experiment's trial also carries the Optuna trial number as a tag (``tags.optuna_trial``), and the group's
metadata the study's best trial.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))  # quadratic.py sits beside this file

from quadratic import Quadratic  # noqa: E402 - after the path above

from unitrack.experiment.link import experiment_group  # noqa: E402

SPACE = {
    "x0": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "step": optuna.distributions.FloatDistribution(1e-3, 0.5, log=True),
}


def sweep(root: Path, trials: int, seed: int = 0) -> optuna.Study:
    """Run ``trials`` proposals of a TPE sampler as Quadratic experiments under ``root``; return the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    for _ in range(trials):
        trial = study.ask(SPACE)  # Optuna proposes
        ex = Quadratic(
            root, f"trial-{trial.number}", purpose="optuna ask/tell", iterations=200, **trial.params
        )
        ex.backend.add_trial_tags(ex.trial_uid, optuna_trial=trial.number)
        try:
            ex()  # runs it: status running -> finished, every message a metric point
        except Exception:  # noqa: BLE001 - a failed proposal is told as failed; its trial keeps the traceback
            study.tell(
                trial, state=optuna.trial.TrialState.FAIL
            )  # the experiment's trial holds the traceback
            continue
        study.tell(trial, ex.messages["f"])  # the smallest f it reached
    best = study.best_trial
    group = experiment_group(ex.backend, root)
    ex.backend.set_group_metadata(
        group, optuna={"best": {"number": best.number, "value": best.value, "params": best.params}}
    )
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/adaptive", help="the sweep's root folder")
    parser.add_argument("--trials", type=int, default=12, help="how many proposals to run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    study = sweep(Path(args.root).resolve(), args.trials, args.seed)
    best = study.best_trial
    print(f"best: trial-{best.number} f={best.value:.6f} {best.params}")


if __name__ == "__main__":
    main()
