"""Functional experiments used by the tests (module level, so launchers can import them)."""

from __future__ import annotations

import os

from unitrack.experiment.functional import Root, autodoc


@autodoc
def hello(
    root: Root,  # the experiment
    a: str = "Hello",  # @p the first
    # argument
    b: int = 3,  # the second argument
    c=None,
):
    """Say hello."""
    with open(os.path.join(root.directory, "out.txt"), "w") as f:
        f.write(a * b)
    root.message({"length": len(a) * b})
    return a * b


def plain(root: Root, x: float = 1.5):  # @p a float
    return x * 2


def shared_line(root: Root, x=3, y: tuple = (1, 2)):  # @p y is
    return x, y
