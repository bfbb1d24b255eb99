"""The filter grammar every listing of runs shares: ``unitrack view -f``, ``GlobalExperimentManager.find
(param_match=...)``, ``unitrack run --filter`` and the web view.

Each filter, spaces removed, is split on ``<= == >= != < >`` (xmen's ``param_match``, SEED_NOTES A12.4):

- ``regex``: keep runs having a value for at least one key the regex names (those keys are shown);
- ``regex op value``: every key the regex names must satisfy ``key op value``;
- ``value1 op1 regex op2 value2``: every key the regex names must satisfy ``value1 op1 key op2 value2``.

**Keys** are a run's fields (``name``, ``status``, ``group``, ``error``... and xmen's ``_name``, ``_status``,
``_purpose``) and its parameters and metrics, dotted as in queries (``parameters.lr``, ``parameters.opt.m``,
``metrics.loss``) or bare (``lr``, ``loss``) where the bare name is not taken: a field wins over a parameter, a
parameter over a metric (``parameters.name`` is a parameter called ``name``). A regex names the
keys it matches *entirely* (``a`` names ``a``, never ``age`` or ``alpha``); only when it matches no key entirely
does it name the parameters and metrics it matches at the start (xmen's ``re.match``: ``l`` names ``lr``). A
display column of a command (``age``) is never a key. A regex that names no key of the runs listed is an error
naming the closest keys: a typo is not an empty result.

**Values** compare as numbers when both sides are numbers, else as text; status words are read as every status
input is (``status==exception`` is ``status==error``, an unknown word is an error); a list (notes) matches
``==`` when one of its items does. Nothing is ever evaluated (xmen ran ``eval``, S5). All filters must hold.

Example:
    >>> keep = compile_filters(["lr<0.1", "0<=depth<4"])
    >>> keep.matches({"lr": 0.01, "depth": 2}), keep.matches({"lr": 0.5, "depth": 2})
    (True, False)
    >>> space = KeySpace(["name", "status", "parameters.a", "parameters.alpha", "metrics.loss"])
    >>> compile_filters(["a==Bye"]).bind(space).columns, space.resolve("loss", "column")
    (['parameters.a'], 'metrics.loss')
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unitrack.errors import ConfigError, InvalidQueryError, RegisterSyntaxError, UnknownKeyError
from unitrack.persistence.lifecycle import parse_status_words
from unitrack.persistence.patterns import UserPattern, compile_pattern

__all__ = [
    "FIELDS",
    "BoundFilters",
    "Filter",
    "FilterSet",
    "KeySpace",
    "compile_filter",
    "compile_filters",
]

#: The fields of a run every listing has (the columns of :func:`unitrack.runs` before parameters and metrics).
FIELDS: tuple[str, ...] = (
    "uid",
    "name",
    "status",
    "project",
    "group",
    "description",
    "created",
    "started",
    "ended",
    "last_seen",
    "host",
    "pid",
    "error",
    "notes",
    "tags",
    "version",
    "revision",
)
#: xmen's names for fields (params.yml specials and GlobalExperimentManager columns).
_XMEN_FIELDS: dict[str, str] = {
    "_name": "name",
    "_status": "status",
    "_purpose": "description",
    "purpose": "description",
    "_created": "created",
    "_notes": "notes",
    "_version": "version",
    "_host": "host",
}
_PARAMETERS, _METRICS = "parameters.", "metrics."

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    "==": operator.eq,
    ">=": operator.ge,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_SPLIT = re.compile(r"(<=|==|>=|!=|<|>)")
#: Longest filter accepted (a filter is typed by a person; a longer one is a mistake or an attack).
MAX_FILTER_CHARS = 1000


def _compile_pattern(text: str, position: int, whole: str) -> UserPattern:
    """Compile a filter's regex for linear-time matching (:mod:`unitrack.persistence.patterns`, seam 6).

    Raises:
        RegisterSyntaxError: naming the filter and the position of its regex, chained from the pattern's
            InvalidQueryError (invalid, over-long, look-around or back-references).
    """
    try:
        return compile_pattern(text)
    except InvalidQueryError as exc:
        raise RegisterSyntaxError(whole, position, f"bad regex: {exc.fields['reason']}") from exc


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
    if isinstance(left, (list, tuple)) and not isinstance(right, (list, tuple)):
        if op == "!=":
            return all(_compare(item, "!=", right) for item in left)
        return any(_compare(item, op, right) for item in left)
    if isinstance(right, (list, tuple)):
        return _compare(right, {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op), left)
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return _OPS[op](a, b)
    return _OPS[op](str(left), str(right))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == []


@dataclass(frozen=True)
class Filter:
    """One compiled filter: a key regex and zero, one or two comparisons."""

    text: str
    pattern: UserPattern
    left: tuple[str, str] | None = None  # (value, op): value op key
    right: tuple[str, str] | None = None  # (op, value): key op value

    def keys(self, row: Mapping[str, Any]) -> list[str]:
        """The keys of ``row`` this filter names (see the module docstring)."""
        return KeySpace(row, fields=()).names(self)

    def matches(self, row: Mapping[str, Any], keys: Sequence[str] | None = None) -> bool:
        """Whether ``row`` passes: it has a value for one of ``keys`` (default: the keys of ``row`` the filter
        names) and every such value satisfies the comparisons."""
        present = [k for k in (self.keys(row) if keys is None else keys) if not _missing(row.get(k))]
        if not present:
            return False
        for key in present:
            value = row[key]
            if self.left is not None and not _compare(self.left[0], self.left[1], value):
                return False
            if self.right is not None and not _compare(value, self.right[0], self.right[1]):
                return False
        return True

    def for_status(self) -> Filter:
        """This filter with its values read as status words (for the ``status`` field).

        Raises:
            ConfigError: naming an unknown status and the closest known ones.
        """

        def word(value: str) -> str:
            return parse_status_words([value])[0] if _number(value) is None else value

        left = None if self.left is None else (word(self.left[0]), self.left[1])
        right = None if self.right is None else (self.right[0], word(self.right[1]))
        return Filter(self.text, self.pattern, left, right)


def compile_filter(text: str) -> Filter:
    """Compile one filter.

    Raises:
        RegisterSyntaxError: (a ConfigError) naming the position of the problem.
    """
    if not isinstance(text, str):
        raise ConfigError(f"A filter is text such as 'lr<0.1', not {text!r}.")
    if len(text) > MAX_FILTER_CHARS:
        raise RegisterSyntaxError(text, MAX_FILTER_CHARS, f"longer than {MAX_FILTER_CHARS} characters")
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
    pattern = _compile_pattern(parts[regex_index], positions[regex_index], text)
    if len(parts) == 1:
        return Filter(text, pattern)
    if len(parts) == 3:
        return Filter(text, pattern, right=(parts[1], parts[2]))
    return Filter(text, pattern, left=(parts[0], parts[1]), right=(parts[3], parts[4]))


class KeySpace:
    """The names filters, columns and sort keys may use for the runs listed, each mapped to its column.

    Args:
        columns: the columns of the runs listed (fields, ``parameters.<key>``, ``metrics.<name>``; any other
            name is taken as it is).
        fields: which of the columns are fields (named only entirely, never by a prefix).
    """

    def __init__(self, columns: Iterable[str], fields: Collection[str] = FIELDS) -> None:
        self.columns: list[str] = list(dict.fromkeys(columns))
        self.fields = frozenset(fields)
        self.aliases: dict[str, str] = {c: c for c in self.columns}
        present = set(self.columns)
        if self.fields:
            for alias, field in _XMEN_FIELDS.items():
                if field in present:
                    self.aliases.setdefault(alias, field)
        for prefix in (_PARAMETERS, _METRICS):  # a bare name is the parameter's when both exist
            for column in self.columns:
                if column.startswith(prefix):
                    self.aliases.setdefault(column[len(prefix) :], column)
        self._named: dict[str, list[str]] = {}

    def is_field(self, alias: str) -> bool:
        """Whether ``alias`` names a field (not a parameter or a metric)."""
        column = self.aliases.get(alias, alias)
        return column in self.fields

    def names(self, flt: Filter) -> list[str]:
        """The columns ``flt`` names (empty when none)."""
        found = self._named.get(flt.pattern.pattern)
        if found is None:
            exact = [c for a, c in self.aliases.items() if flt.pattern.fullmatch(a)]
            if not exact:
                exact = [c for a, c in self.aliases.items() if not self.is_field(a) and flt.pattern.match(a)]
            found = self._named[flt.pattern.pattern] = list(dict.fromkeys(exact))
        return found

    def closest(self, name: str, n: int = 3, extra: Collection[str] = ()) -> list[str]:
        """The known names closest to ``name`` (xmen's ``_status`` spellings only for a name starting with ``_``)."""
        names = [a for a in self.aliases if name.startswith("_") or not (a.startswith("_") or a == "purpose")]
        return difflib.get_close_matches(name, [*names, *extra], n=n, cutoff=0.5)

    def known(self) -> list[str]:
        """The names to list in an error: parameters and metrics (bare, or dotted when a field or a parameter
        takes the bare name), then the fields."""
        out = []
        for column in self.columns:
            if column in self.fields:
                continue
            bare = column.split(".", 1)[1] if column.startswith((_PARAMETERS, _METRICS)) else column
            out.append(bare if self.aliases.get(bare) == column else column)
        return out + [c for c in self.columns if c in self.fields]

    def resolve(self, name: str, what: str, extra: Collection[str] = ()) -> str:
        """The column ``name`` stands for (a column, a bare parameter or metric name, an xmen field name).

        Args:
            name: what the user typed.
            what: ``'column'``, ``'sort key'``... for the error message.
            extra: names the caller accepts as they are (a display column such as ``age``).

        Raises:
            UnknownKeyError: (a ConfigError) naming the closest known names.
        """
        if name in extra:
            return name
        column = self.aliases.get(name)
        if column is not None:
            return column
        raise UnknownKeyError(what, name, self.closest(name, extra=extra), [*self.known(), *extra])


@dataclass(frozen=True)
class BoundFilters:
    """Filters bound to the columns of one listing: each filter with the columns it names."""

    bound: tuple[tuple[Filter, tuple[str, ...]], ...]

    @property
    def columns(self) -> list[str]:
        """The columns the filters name, in order (shown by a listing)."""
        return list(dict.fromkeys(c for _, cols in self.bound for c in cols))

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` (a mapping from column to value) passes every filter."""
        return all(f.matches(row, cols) for f, cols in self.bound)


@dataclass(frozen=True)
class FilterSet:
    """Filters that must all hold."""

    filters: tuple[Filter, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes every filter (keys named within ``row`` itself)."""
        return all(f.matches(row) for f in self.filters)

    def keys(self, row: Mapping[str, Any]) -> list[str]:
        """The keys of ``row`` the filters name (shown as columns)."""
        return list(dict.fromkeys(k for f in self.filters for k in f.keys(row)))

    def bind(self, space: KeySpace, *, strict: bool = True) -> BoundFilters:
        """Name each filter's columns among those of a listing.

        Args:
            space: the listing's columns.
            strict: raise for a filter that names no column (leave it matching nothing otherwise).

        Raises:
            UnknownKeyError: for a filter naming no column (with ``strict``), naming the closest keys.
            ConfigError: for an unknown status word compared with the status field.
        """
        bound = []
        for flt in self.filters:
            columns = space.names(flt)
            if not columns and strict:
                raise _unknown(flt, space)
            if "status" in columns:
                if len(columns) > 1:
                    bound.append((flt, tuple(c for c in columns if c != "status")))
                flt, columns = flt.for_status(), ["status"]
            bound.append((flt, tuple(columns)))
        return BoundFilters(tuple(bound))


def _unknown(flt: Filter, space: KeySpace) -> UnknownKeyError:
    regex = flt.pattern.pattern
    hint = ""
    if "=" in regex and flt.right is None:
        hint = " '=' is not an operator: compare with '==' (e.g. 'lr==0.1')."
        regex = regex.split("=", 1)[0]
    return UnknownKeyError("filter", flt.text, space.closest(regex), space.known(), hint)


def compile_filters(texts: Sequence[str] | str) -> FilterSet:
    """Compile every filter (all must hold).

    Raises:
        RegisterSyntaxError: (a ConfigError) naming the filter and the position of the problem.
    """
    if isinstance(texts, str):
        texts = [texts]
    return FilterSet(tuple(compile_filter(t) for t in texts))
