"""Queries over projects, groups and trials: one implementation shared by every in-process backend.

A query is a dict (or an ordered list of ``(key, condition)`` pairs); every condition must hold. A key is a
dotted path: the first part is a field of the object (``parameters``, ``metadata``, ``status``, ``uid``...), the
rest are keys into its dicts (``parameters.opt.lr``); ``metrics.<name>`` is the metric's latest value. A
condition is a value (equality) or a dict of operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists
$regex``. A ``$regex`` pattern runs on RE2, in time linear in the text (:mod:`unitrack.persistence.patterns`).
Numbers compare numerically (``1 == 1.0``), but a bool never equals a number; strings compare lexically;
ordering between a number and a string is simply false. Statuses compare with their lower-case
names (``{'status': 'running'}``) or the enum itself.

Backends that can push a query down (SQL) use :func:`normalize_query` to read its parts.

Example:
    >>> from unitrack.persistence.structure import Trial
    >>> t = Trial(name="a", parameters={"lr": 0.01, "opt": {"name": "sgd"}})
    >>> execute_query(t, {"parameters.lr": {"$lt": 0.1}, "parameters.opt.name": {"$in": ["sgd", "adam"]}})
    True
    >>> execute_query(t, [("parameters.lr", {"$gte": 1})])
    False
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unitrack.errors import InvalidQueryError
from unitrack.persistence.patterns import compile_pattern
from unitrack.persistence.structure import CustomStatus, Metric, Status

__all__ = ["OPERATORS", "Condition", "Query", "compile_query", "execute_query", "normalize_query"]

OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex"})
Query = Mapping[str, Any] | Sequence[tuple[str, Any]] | None

_ALIASES = {"_uid": "uid", "_hash": "hash", "id": "uid"}
_MISSING = object()


@dataclass(frozen=True)
class Condition:
    """One checked part of a query: ``path`` (first item a field), an operator and its operand."""

    path: tuple[str, ...]
    op: str
    operand: Any


def _show(query: Any) -> str:
    try:
        return json.dumps(query, default=str)
    except (TypeError, ValueError):
        return repr(query)


def normalize_query(query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> tuple[Condition, ...]:
    """Check a query and return its conditions in order.

    Raises:
        InvalidQueryError: for a malformed key, an unknown operator or a bad operand.
    """
    if query is None:
        return ()
    if isinstance(query, Mapping):
        items = list(query.items())
    elif isinstance(query, (list, tuple)):
        items = []
        for pair in query:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InvalidQueryError(_show(query), f"{pair!r} is not a (key, condition) pair")
            items.append((pair[0], pair[1]))
    else:
        raise InvalidQueryError(_show(query), "a query is a dict or a list of (key, condition) pairs")
    conditions: list[Condition] = []
    for key, cond in items:
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise InvalidQueryError(_show(query), f"key {key!r} is not a dotted path such as 'parameters.lr'")
        parts = key.split(".")
        path = (_ALIASES.get(parts[0], parts[0]), *parts[1:])
        if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            for op, operand in cond.items():
                if op not in OPERATORS:
                    raise InvalidQueryError(
                        _show(query),
                        f"unknown operator {op!r} for {key!r}; known: {', '.join(sorted(OPERATORS))}",
                    )
                conditions.append(Condition(path, op, _check_operand(query, key, op, operand)))
        else:
            conditions.append(Condition(path, "$eq", cond))
    return tuple(conditions)


def _check_operand(query: Any, key: str, op: str, operand: Any) -> Any:
    if op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple, set, frozenset)):
            raise InvalidQueryError(_show(query), f"{op} for {key!r} needs a list, not {operand!r}")
        return tuple(operand)
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidQueryError(_show(query), f"$exists for {key!r} needs true or false, not {operand!r}")
    if op == "$regex":
        if not isinstance(operand, str):
            raise InvalidQueryError(
                _show(query), f"$regex for {key!r} needs a pattern string, not {operand!r}"
            )
        try:
            compile_pattern(operand)
        except InvalidQueryError as exc:
            raise InvalidQueryError(_show(query), f"$regex for {key!r}: {exc.fields['reason']}") from exc
    return operand


def _resolve(obj: Any, path: tuple[str, ...]) -> Any:
    head = path[0]
    if isinstance(obj, Mapping):
        value = obj.get(head, _MISSING)
    else:
        value = getattr(obj, head, _MISSING)
        if value is _MISSING:
            fields = getattr(obj, "query_fields", None) or getattr(type(obj), "__dataclass_fields__", {})
            known = sorted({name.lstrip("_") for name in fields} | {"uid"})
            raise InvalidQueryError(
                repr(".".join(path)), f"there is no field {head!r}; known: {', '.join(known)}"
            )
    for part in path[1:]:
        if isinstance(value, Metric):
            value = value.latest
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    if isinstance(value, Metric):
        value = value.latest
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _equal(value: Any, operand: Any) -> bool:
    if isinstance(value, (Status, CustomStatus)):
        if isinstance(operand, str):
            return str(value) == operand.lower()
        if _is_number(operand):
            return bool(value.value == operand)
        return bool(value == operand)
    if isinstance(value, bool) or isinstance(operand, bool):
        return isinstance(value, bool) and isinstance(operand, bool) and value == operand
    if _is_number(value) and _is_number(operand):
        return bool(value == operand)
    if isinstance(value, (list, tuple, set, frozenset)) and not isinstance(operand, (list, tuple)):
        return any(_equal(v, operand) for v in value)
    if isinstance(value, (list, tuple)) and isinstance(operand, (list, tuple)):
        return len(value) == len(operand) and all(_equal(a, b) for a, b in zip(value, operand, strict=True))
    return type(value) is type(operand) and bool(value == operand)


def _order(value: Any, operand: Any, op: str) -> bool:
    if isinstance(value, (Status, CustomStatus)):
        value = value.value if _is_number(operand) else str(value)
    if _is_number(value) and _is_number(operand):
        pass
    elif isinstance(value, str) and isinstance(operand, str):
        pass
    else:
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    return bool(value <= operand)


def _test(value: Any, cond: Condition) -> bool:
    op, operand = cond.op, cond.operand
    if op == "$exists":
        return bool((value is not _MISSING) == operand)
    if value is _MISSING:
        value = None
    if op == "$eq":
        return _equal(value, operand)
    if op == "$ne":
        return not _equal(value, operand)
    if op == "$in":
        return any(_equal(value, choice) for choice in operand)
    if op == "$nin":
        return not any(_equal(value, choice) for choice in operand)
    if op == "$regex":
        text = str(value) if isinstance(value, (Status, CustomStatus)) else value
        return isinstance(text, str) and compile_pattern(operand).search(text)
    return _order(value, operand, op)


def compile_query(
    query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None,
) -> Callable[[Any], bool]:
    """Check a query once and return a predicate over projects, groups, trials (or plain dicts).

    Raises:
        InvalidQueryError: for a malformed query (checked here, before any object is read).
    """
    conditions = normalize_query(query)

    def predicate(obj: Any) -> bool:
        return all(_test(_resolve(obj, c.path), c) for c in conditions)

    return predicate


def execute_query(obj: Any, query: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> bool:
    """Return True when ``obj`` matches ``query`` (track's ``execute_query``; ``None`` matches everything)."""
    return compile_query(query)(obj)
