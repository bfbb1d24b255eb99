"""Experiment classes for the xmen compatibility tests (module level, so their source can be read)."""

from __future__ import annotations

from unitrack.experiment import Experiment


class WithHeight(Experiment):
    """Declares h."""

    h: int = 3  # @p a height


class HeightProperty(Experiment):
    """Computes h instead."""

    @property
    def h(self):
        return 5


class Mixed(HeightProperty, WithHeight):
    """h comes from the property, first in the MRO: not a parameter."""


class Base(Experiment):
    """A base."""

    a: str = "x"  # @p an a
    b: int = 256  # @p batch size


class Retyped(Base):
    """a is a float here; b's default in force is 32."""

    a: float = 0.5
    b = 32


class InitDefault(Base):
    """b set in __init__."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.b = 32

    def run(self):
        return self.b


if __name__ == "__main__":
    Retyped().main()
