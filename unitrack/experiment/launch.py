"""Run an experiment's command line by reference: ``python -m unitrack.experiment.launch module:Name [FLAGS]``.

``Name`` is an :class:`~unitrack.experiment.Experiment` subclass or a functional experiment (a function whose
first argument is a ``Root``). The target may also be a Python file defining one Experiment subclass
(``path/to/exp.py``), or one of several named (``path/to/exp.py:Name``). This is what ``script.sh`` written by
``to_root`` or ``unitrack register --experiment`` and launchers written by ``get_run_script`` call, instead of
generated Python.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Sequence

from unitrack.errors import ConfigError
from unitrack.experiment.experiment import Experiment
from unitrack.experiment.functional import functional_experiment

__all__ = ["load_experiment", "main"]

_TARGET = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)")


def load_experiment(target: str) -> type[Experiment]:
    """Import ``module:Name`` and return the experiment class (a function is wrapped).

    Raises:
        ConfigError: (a ValueError) for a malformed target or a name that is neither an Experiment subclass nor a
            function.
    """
    match = _TARGET.fullmatch(target)
    if match is None:
        raise ConfigError(
            f"{target!r} is not 'module:Name' with Python identifiers (e.g. mypackage.exps:Train)."
        )
    obj = getattr(importlib.import_module(match["module"]), match["name"])
    if inspect.isclass(obj) and issubclass(obj, Experiment):
        return obj
    if inspect.isfunction(obj):
        return functional_experiment(obj)
    raise ConfigError(f"{target} is neither an Experiment subclass nor a function; name one of those.")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: the first argument names the experiment, the rest are its flags."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(
            "usage: python -m unitrack.experiment.launch module:Name|file.py[:Name] [FLAGS ...]\n"
        )
        return
    target = args[0]
    if target.endswith(".py") or re.fullmatch(r".+\.py:[A-Za-z_]\w*", target):
        from unitrack.experiment.manager import load_experiment_class

        load_experiment_class(target)().main(args[1:])
        return
    load_experiment(target)().main(args[1:])


if __name__ == "__main__":
    main()
