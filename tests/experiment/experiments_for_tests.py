"""Experiment classes used by the tests (module level, so their source can be read and launched)."""

from __future__ import annotations

from unitrack.experiment import Experiment


class AnExperiment(Experiment):
    """Doc strings should be used to document the purpose of the experiment"""

    # experiment parameters are defined as class attributes with an @p tag in there comment
    a: str = "Hello"  # @p a parameter
    b: str = "World!"  # @p another parameter

    # experiment execution code is defined in the experiments run method
    def run(self):
        print(f"{self.a} {self.b}")
        self.message({"said": f"{self.a} {self.b}"})
        return f"{self.a} {self.b}"


class Typed(Experiment):
    """Every kind of parameter."""

    i: int = 3  # @p an int
    f: float = 0.5  # @p a float
    s: str = "x"  # @p a string
    flag: bool = False  # @p a flag
    items: list = [1, 2]  # @p a list
    opts: dict = {"k": 1}  # @p a dict
    maybe: int | None = None  # @p an optional int
    free = "anything"  # @p no annotation: not checked
    not_a_param: int = 7  # an ordinary comment
    _private: int = 1  # @p private names are never parameters

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed: int = 42  # @p random seed, set in __init__

    def run(self):
        return self.i


class Child(Typed):
    """A subclass."""

    f = 0.25  # a new default keeps the help
    extra: str = "e"  # @p only in the child

    @property
    def s(self):  # a property replaces the inherited parameter
        return "property"


class Failing(Experiment):
    """Raises."""

    def run(self):
        raise RuntimeError("boom")


class Interrupted(Experiment):
    """Ctrl-C."""

    def run(self):
        raise KeyboardInterrupt


class NoRun(Experiment):
    """Has no run."""

    x: int = 1  # @p x


class Keep(Experiment):
    """Has the parameter of tests/experiment/test_lifecycle.py's script, to continue its runs from Python."""

    a: int = 1  # @p a parameter
