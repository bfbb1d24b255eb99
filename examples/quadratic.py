"""Minimise (x - 2.03)^2 + 3 by uniform steps: the cox walkthrough's problem as a unitrack Experiment.

Run it from its own command line, then query the results through the embedded default backend (the root's
folder of cox stores), or read them as cox tables::

    python examples/quadratic.py --update "{step: 0.1}" --execute /tmp/root/exp1
    python -c "from unitrack import get_protocol; \\
        print(get_protocol('hdf5:///tmp/root').fetch_trials({'parameters.step': 0.1}))"
    python -c "from unitrack.store.readers import CollectionReader; print(CollectionReader('/tmp/root').df('metrics'))"

With ``UNITRACK_URI`` set (``file://``, ``postgresql://``, ``socket://``...) the same command logs there instead.

Each iteration leaves the messages ``x`` and ``f`` (kept: the latest ``x`` and the smallest ``f``); every
value is also a point of the trial's metric series.
"""

from __future__ import annotations

from unitrack import Experiment


def f(x: float) -> float:
    """The function to minimise."""
    return (x - 2.03) ** 2 + 3


class Quadratic(Experiment):
    """Find the minimum of (x - 2.03)^2 + 3 with fixed-size steps."""

    x0: float = 0.0  # @p where the search starts
    step: float = 0.01  # @p size of each step
    tol: float = 0.0001  # @p stop when both directions differ by less than this
    iterations: int = 1000  # @p the most steps taken

    def run(self) -> float:
        x = self.x0
        for i in range(self.iterations):
            # Take a uniform step in the direction of decrease
            x = x + self.step if f(x + self.step) < f(x - self.step) else x - self.step
            self.message({"x": x}, step=i)
            self.message({"f": f(x)}, keep="min", step=i)
            # If the difference between the directions is less than the tolerance, stop
            if abs(f(x + self.step) - f(x - self.step)) < self.tol:
                break
        return x


if __name__ == "__main__":
    Quadratic().main()
