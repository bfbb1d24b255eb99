"""Monitor spec strings such as ``'a|b@2s'``, parsed once into :class:`Every`.

Grammar (one spec)::

    spec     := pattern [ "->" target ] [ "@" modulo trigger ]
    modulo   := digit+                      (at least 1)
    trigger  := step | s | epoch | e | era | er | eon | eo | supereon | se

``pattern`` and ``target`` are Python regular expressions matched (``re.match``) against variable names; either
may be empty (``'@10s'`` selects no variable, e.g. for a Timer). The *last* ``@`` starts the frequency, so a
pattern may contain ``@`` when a frequency follows. The *first* ``->`` separates the variables to send from the
experiments to send them to (``XmenMessenger``). A spec without ``@`` has no frequency: it is a manual hook, fired
by ``Monitor.to_hooks``.

Example:
    >>> spec = parse_spec("a|b@2s")
    >>> spec
    Every(pattern='a|b', modulo=2, trigger=<Trigger.STEP: 'step'>, target=None)
    >>> str(spec)
    'a|b@2step'
    >>> str(parse_spec("loss->ex@10e"))
    'loss->ex@10epoch'
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from unitrack.errors import InvalidSpecError, UnknownTriggerError

__all__ = ["Every", "Spec", "Trigger", "UnknownTriggerError", "parse_spec", "parse_specs"]

_DIGITS = re.compile(r"[0-9]+")


class Trigger(str, enum.Enum):
    """The five loop levels a Monitor counts, innermost first.

    Members compare equal to their full names (``Trigger.STEP == 'step'``), as the original strings did.
    """

    STEP = "step"
    EPOCH = "epoch"
    ERA = "era"
    EON = "eon"
    SUPEREON = "supereon"

    @property
    def level(self) -> int:
        """The nesting level: 0 for step (innermost) up to 4 for supereon."""
        return _LEVELS[self]

    @property
    def abbreviation(self) -> str:
        """The short name used in spec strings and summaries (``s``, ``e``, ``er``, ``eo``, ``se``)."""
        return _ABBREVIATIONS[self]

    @classmethod
    def parse(cls, text: str | Trigger) -> Trigger:
        """Return the trigger named by a full name or abbreviation.

        Raises:
            UnknownTriggerError: ``text`` names no trigger.
        """
        if isinstance(text, Trigger):
            return text
        found = _BY_NAME.get(text) if isinstance(text, str) else None
        if found is None:
            raise UnknownTriggerError(text, cls.choices())
        return found

    @classmethod
    def choices(cls) -> str:
        """Return the accepted spellings, for error messages."""
        return ", ".join(f"{t.value}|{t.abbreviation}" for t in cls)

    def __str__(self) -> str:
        return self.value


_ABBREVIATIONS = {
    Trigger.STEP: "s",
    Trigger.EPOCH: "e",
    Trigger.ERA: "er",
    Trigger.EON: "eo",
    Trigger.SUPEREON: "se",
}
_LEVELS = {t: i for i, t in enumerate(Trigger)}
_BY_NAME: dict[str, Trigger] = {t.value: t for t in Trigger} | {a: t for t, a in _ABBREVIATIONS.items()}
#: Triggers by level, innermost first.
TRIGGERS: tuple[Trigger, ...] = tuple(Trigger)


@dataclass(frozen=True)
class Every:
    """A parsed spec: which variables (``pattern``), how often (``modulo`` of ``trigger``), and to whom (``target``).

    ``modulo`` and ``trigger`` are both None for a manual hook. Built by :func:`parse_spec`; building one directly
    validates it the same way.

    Raises:
        InvalidSpecError: a regex does not compile, modulo < 1, or only one of modulo/trigger is given.
    """

    pattern: str
    modulo: int | None = None
    trigger: Trigger | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        text = str(self)
        if (self.modulo is None) != (self.trigger is None):
            raise InvalidSpecError(text, len(text), "give both a modulo and a trigger, or neither")
        if self.modulo is not None and (isinstance(self.modulo, bool) or self.modulo < 1):
            raise InvalidSpecError(text, text.rfind("@") + 1, f"modulo must be at least 1, got {self.modulo}")
        if self.trigger is not None and not isinstance(self.trigger, Trigger):
            object.__setattr__(self, "trigger", Trigger.parse(self.trigger))
        if "->" in self.pattern:
            raise InvalidSpecError(text, self.pattern.index("->"), "a pattern cannot contain '->'")
        if self.modulo is None and "@" in text:
            raise InvalidSpecError(text, text.index("@"), "a manual spec (no frequency) cannot contain '@'")
        _compile(text, self.pattern, 0)
        if self.target is not None:
            _compile(text, self.target, len(self.pattern) + 2)

    @property
    def is_manual(self) -> bool:
        """True when the spec has no frequency: the hook runs only through ``Monitor.to_hooks``."""
        return self.modulo is None

    def __str__(self) -> str:
        text = self.pattern if self.target is None else f"{self.pattern}->{self.target}"
        if self.modulo is not None and self.trigger is not None:
            text += f"@{self.modulo}{Trigger(self.trigger).value}"
        return text


def _compile(spec: str, regex: str, offset: int) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as exc:
        position = offset + (exc.pos if exc.pos is not None else 0)
        raise InvalidSpecError(spec, position, f"invalid regular expression {regex!r}: {exc.msg}") from exc
    except (RecursionError, OverflowError, MemoryError) as exc:
        # Pathological patterns (deep nesting, huge repeat counts) fail in the compiler rather than with re.error.
        raise InvalidSpecError(
            spec, offset, f"regular expression {regex!r} cannot be compiled: {exc}"
        ) from exc


def parse_spec(spec: str | Every) -> Every:
    """Parse one spec string such as ``'a|b@2s'`` or ``'y.*->ex.*@10e'``.

    Args:
        spec: The text, or an already parsed :class:`Every` (returned as is).

    Returns:
        The parsed spec.

    Raises:
        InvalidSpecError: The text does not follow the grammar; the message names the spec and points at the
            first bad character.

    Example:
        >>> parse_spec("@3e")
        Every(pattern='', modulo=3, trigger=<Trigger.EPOCH: 'epoch'>, target=None)
        >>> parse_spec("loss").is_manual
        True
    """
    if isinstance(spec, Every):
        return spec
    if not isinstance(spec, str):
        raise InvalidSpecError(repr(spec), 0, f"a spec must be a string, not {type(spec).__name__}")
    head, at, frequency = spec.rpartition("@")
    if not at:
        head = spec
    modulo: int | None = None
    trigger: Trigger | None = None
    if at:
        start = len(head) + 1
        digits = _DIGITS.match(frequency)
        if digits is None:
            raise InvalidSpecError(
                spec, start, f"expected a number after '@' (as in '{head}@10s'), found {frequency[:1]!r}"
            )
        modulo = int(digits.group())
        name = frequency[digits.end() :]
        if not name:
            raise InvalidSpecError(
                spec, len(spec), f"expected a trigger after '@{digits.group()}': one of {Trigger.choices()}"
            )
        found = _BY_NAME.get(name)
        if found is None:
            raise InvalidSpecError(
                spec, start + digits.end(), f"unknown trigger {name!r}; expected one of {Trigger.choices()}"
            )
        trigger = found
        if modulo < 1:
            raise InvalidSpecError(spec, start, f"modulo must be at least 1, got {digits.group()}")
    pattern, arrow, target = head.partition("->")
    return _build(spec, pattern, modulo, trigger, target if arrow else None)


def _build(spec: str, pattern: str, modulo: int | None, trigger: Trigger | None, target: str | None) -> Every:
    # Compile here too, so that positions refer to the text the user wrote (which may spell the trigger short).
    _compile(spec, pattern, 0)
    if target is not None:
        _compile(spec, target, len(pattern) + 2)
    return Every(pattern=pattern, modulo=modulo, trigger=trigger, target=target)


class Spec(Every):
    """xmen's ``Spec``: ``Spec('loss|acc@10s')`` parses a spec string into an :class:`Every`.

    It keeps xmen's attribute names too: ``regex`` (the variable pattern), ``modulo`` and ``trigger`` (the full
    trigger name; ``Trigger`` members compare equal to it).

    Raises:
        InvalidSpecError: as :func:`parse_spec`.

    Example:
        >>> s = Spec("^xx|yy@100s")
        >>> s.regex, s.modulo, s.trigger == "step", str(s)
        ('^xx|yy', 100, True, '^xx|yy@100step')
    """

    def __init__(self, spec: str | Every) -> None:
        parsed = parse_spec(spec)
        for name in ("pattern", "modulo", "trigger", "target"):
            object.__setattr__(self, name, getattr(parsed, name))

    @property
    def regex(self) -> str:
        """The variable pattern (xmen's name for :attr:`pattern`)."""
        return self.pattern


def parse_specs(specs: str | Every | Iterable[str | Every] | None) -> list[Every]:
    """Parse a spec, or a list or tuple of them, as the Monitor's keyword arguments accept.

    Args:
        specs: None (no spec), one spec, or an iterable of specs.

    Returns:
        The parsed specs, in order.

    Raises:
        InvalidSpecError: One of the specs is malformed.

    Example:
        >>> [str(s) for s in parse_specs(("a@2s", "b@1e"))]
        ['a@2step', 'b@1epoch']
    """
    if specs is None:
        return []
    if isinstance(specs, (str, Every)):
        return [parse_spec(specs)]
    return [parse_spec(s) for s in specs]
