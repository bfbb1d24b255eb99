"""Filters over experiments (xmen's ``param_match`` grammar, SEED_NOTES A12.4) compiled to safe predicates.

Each filter, spaces removed, is split on ``<= == >= != < >``:

- ``regex``: keep runs with at least one key matching ``regex`` at its start (those keys are shown); patterns run
  on RE2 in linear time (:func:`unitrack.persistence.patterns.compile_pattern`);
- ``regex op value``: every key matching regex must satisfy ``value_of_key op value``;
- ``value1 op1 regex op2 value2``: every matching key must satisfy ``value1 op1 v op2 value2``.

Values compare as numbers when both sides are numbers, else as strings; nothing is ever evaluated (xmen ran
``eval``, S5). All filters must hold.

Example:
    >>> keep = compile_filters(["lr<0.1", "0<=depth<4"])
    >>> keep.matches({"lr": 0.01, "depth": 2}), keep.matches({"lr": 0.5, "depth": 2})
    (True, False)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unitrack.errors import InvalidQueryError, RegisterSyntaxError
from unitrack.persistence.patterns import UserPattern, compile_pattern

__all__ = ["Filter", "FilterSet", "compile_filter", "compile_filters"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    "==": operator.eq,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_SPLIT = re.compile(r"(<=|==|>=|!=|<|>)")


def _number(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text))
    except ValueError:
        return None


def _compare(left: Any, op: str, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return _OPS[op](a, b)
    return _OPS[op](str(left), str(right))


@dataclass(frozen=True)
class Filter:
    """One compiled filter: a key regex and zero, one or two comparisons."""

    text: str
    pattern: UserPattern
    left: tuple[str, str] | None = None  # (value, op): value op key
    right: tuple[str, str] | None = None  # (op, value): key op value

    def keys(self, row: Mapping[str, Any]) -> list[str]:
        """The keys of ``row`` this filter is about."""
        return [k for k in row if self.pattern.match(str(k))]

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes."""
        keys = self.keys(row)
        if not keys:
            return False
        for key in keys:
            value = row[key]
            if self.left is not None and not _compare(self.left[0], self.left[1], value):
                return False
            if self.right is not None and not _compare(value, self.right[0], self.right[1]):
                return False
        return True


def compile_filter(text: str) -> Filter:
    """Compile one filter.

    Raises:
        RegisterSyntaxError: (a ConfigError) naming the position of the problem.
    """
    squeezed = re.sub(r"\s+", "", text)
    parts = _SPLIT.split(squeezed)
    if len(parts) not in (1, 3, 5):
        raise RegisterSyntaxError(
            text, len(squeezed), "expected regex, regex op value or value op regex op value"
        )
    positions = [0]
    for part in parts:
        positions.append(positions[-1] + len(part))
    for index in range(0, len(parts), 2):
        if not parts[index]:
            raise RegisterSyntaxError(text, positions[index], "missing a name or value next to the operator")
    regex_index = 0 if len(parts) < 5 else 2
    try:
        pattern = compile_pattern(parts[regex_index])
    except InvalidQueryError as exc:
        raise RegisterSyntaxError(text, positions[regex_index], f"bad regex: {exc.fields['reason']}") from exc
    if len(parts) == 1:
        return Filter(text, pattern)
    if len(parts) == 3:
        return Filter(text, pattern, right=(parts[1], parts[2]))
    return Filter(text, pattern, left=(parts[0], parts[1]), right=(parts[3], parts[4]))


@dataclass(frozen=True)
class FilterSet:
    """Filters that must all hold."""

    filters: tuple[Filter, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes every filter."""
        return all(f.matches(row) for f in self.filters)

    def keys(self, row: Mapping[str, Any]) -> list[str]:
        """The keys the filters are about (shown as columns)."""
        return [k for f in self.filters for k in f.keys(row)]


def compile_filters(texts: Sequence[str]) -> FilterSet:
    """Compile every filter (AND)."""
    return FilterSet(tuple(compile_filter(t) for t in texts))
