"""Column kinds, schemas and the lossless conversion of values into a column.

A schema maps column names to a type: ``int``, ``float``, ``str``, ``bool`` (or their numpy equivalents) or one of
the serialized kinds ``OBJECT``, ``PICKLE`` and ``PYTORCH_STATE``. Values are converted only when no information
is lost: ``3`` fits a float column, ``np.float32(0.5)`` and a 0-d tensor fit too, but ``'False'`` never becomes
``True`` and ``3.5`` never becomes ``3``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from unitrack.errors import SchemaError
from unitrack.store.names import validate_name

__all__ = [
    "OBJECT",
    "PICKLE",
    "PYTORCH_STATE",
    "ColumnKind",
    "Converter",
    "kind_of",
    "make_converter",
    "parse_schema",
    "schema_from_dict",
]

#: Python serialization (dill + base64) stored inline in the table.
OBJECT = "__object__"
#: Python serialization stored in ``.table_objects/<id>``; the cell holds the id.
PICKLE = "__pickle__"
#: ``torch.save`` of a ``state_dict()`` stored in ``.table_objects/<id>``; the cell holds the id.
PYTORCH_STATE = "__pytorch_state__"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class ColumnKind(enum.Enum):
    """How a column is stored. The value is the name written into the journal and the HDF5 attributes."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STR = "str"
    OBJECT = OBJECT
    PICKLE = PICKLE
    PYTORCH_STATE = PYTORCH_STATE

    @property
    def is_serialized(self) -> bool:
        """Whether values are Python objects stored as text (OBJECT) or as files (PICKLE, PYTORCH_STATE)."""
        return self in (ColumnKind.OBJECT, ColumnKind.PICKLE, ColumnKind.PYTORCH_STATE)

    @property
    def schema_type(self) -> type | str:
        """The type or constant a user writes in a schema for this kind."""
        return _SCHEMA_TYPES[self]


_SCHEMA_TYPES: dict[ColumnKind, type | str] = {
    ColumnKind.FLOAT: float,
    ColumnKind.INT: int,
    ColumnKind.BOOL: bool,
    ColumnKind.STR: str,
    ColumnKind.OBJECT: OBJECT,
    ColumnKind.PICKLE: PICKLE,
    ColumnKind.PYTORCH_STATE: PYTORCH_STATE,
}


def kind_of(spec: object, *, table: str = "?", column: str = "?") -> ColumnKind:
    """Return the column kind for a schema entry such as ``float``, ``np.int32`` or ``Store.PICKLE``.

    Args:
        spec: The type or constant from the schema.
        table: Table name, for the error message.
        column: Column name, for the error message.

    Returns:
        The kind.

    Raises:
        SchemaError: ``spec`` is not a supported column type.

    Example:
        >>> kind_of(float).value, kind_of(PICKLE).value
        ('float', '__pickle__')
    """
    if isinstance(spec, str):
        for kind in ColumnKind:
            if spec == kind.value:
                return kind
    elif isinstance(spec, type):
        if issubclass(spec, (bool, np.bool_)):
            return ColumnKind.BOOL
        if issubclass(spec, (int, np.integer)):
            return ColumnKind.INT
        if issubclass(spec, (float, np.floating)):
            return ColumnKind.FLOAT
        if issubclass(spec, str):
            return ColumnKind.STR
    raise SchemaError(
        f"Table {table!r} column {column!r} has unsupported type {spec!r}; use int, float, str, bool, "
        f"or Store.OBJECT / Store.PICKLE / Store.PYTORCH_STATE.",
        table=table,
        column=column,
    )


def parse_schema(table: str, schema: Mapping[str, object]) -> dict[str, ColumnKind]:
    """Validate a user schema and return the kind of every column, in the schema's order.

    Args:
        table: The table's name (already validated).
        schema: ``{column: type}``.

    Returns:
        ``{column: ColumnKind}``.

    Raises:
        SchemaError: A type is unsupported, or the schema is not a mapping.
        InvalidNameError: A column name is not a safe name.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(
            f"The schema of table {table!r} must be a dict of column: type, not {type(schema).__name__}.",
            table=table,
        )
    kinds: dict[str, ColumnKind] = {}
    for column, spec in schema.items():
        validate_name("column", column)
        kinds[column] = kind_of(spec, table=table, column=column)
    return kinds


def schema_from_dict(d: Mapping[str, Any], alternative: str = OBJECT) -> dict[str, type | str]:
    """Infer a schema from an example row.

    Python and numpy ``int``, ``float``, ``str`` and ``bool`` values give those types; every other value gives
    ``alternative``.

    Args:
        d: An example row ``{column: value}``.
        alternative: OBJECT, PICKLE or PYTORCH_STATE, for columns holding other Python objects.

    Returns:
        The schema ``{column: type}``.

    Raises:
        SchemaError: ``alternative`` is not one of the serialized kinds.

    Example:
        >>> schema_from_dict({"a": 1, "b": 0.5, "c": [1]})
        {'a': <class 'int'>, 'b': <class 'float'>, 'c': '__object__'}
    """
    if alternative not in (OBJECT, PICKLE, PYTORCH_STATE):
        raise SchemaError(
            f"alternative must be Store.OBJECT, Store.PICKLE or Store.PYTORCH_STATE, not {alternative!r}.",
            alternative=str(alternative),
        )
    schema: dict[str, type | str] = {}
    for column, value in d.items():
        if isinstance(value, (bool, np.bool_)):
            schema[column] = bool
        elif isinstance(value, (int, np.integer)):
            schema[column] = int
        elif isinstance(value, (float, np.floating)):
            schema[column] = float
        elif isinstance(value, str):
            schema[column] = str
        else:
            schema[column] = alternative
    return schema


# ----------------------------------------------------------------------------------------- conversions
#: A converter takes a value and returns what is stored, or raises SchemaError.
Converter = Callable[[Any], Any]


def _reject(table: str, column: str, kind: ColumnKind, value: Any, why: str) -> SchemaError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return SchemaError(
        f"Table {table!r} column {column!r} ({kind.value}) cannot hold {shown} ({type(value).__name__}): {why}.",
        table=table,
        column=column,
        column_kind=kind.value,
        value=shown,
    )


def _scalar(value: Any) -> Any:
    """Unwrap numpy scalars, 0-d arrays and 0-d tensors into Python values; return anything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def make_converter(table: str, column: str, kind: ColumnKind) -> Converter:
    """Build the function that converts a value for one column without losing information.

    Args:
        table: Table name, for error messages.
        column: Column name, for error messages.
        kind: The column's kind. Serialized kinds accept any value unchanged.

    Returns:
        A converter; it raises SchemaError naming the column and the value when the conversion would lose data.
    """
    if kind is ColumnKind.FLOAT:

        def to_float(value: Any) -> float:
            if type(value) is float:
                return value
            raw = _scalar(value)
            if isinstance(raw, float):
                return raw
            if isinstance(raw, int):  # includes bool
                converted = float(raw)
                if math.isfinite(converted) and int(converted) == raw:
                    return converted
                raise _reject(table, column, kind, value, "the integer has no exact float64 value")
            raise _reject(table, column, kind, value, "pass a real number")

        return to_float
    if kind is ColumnKind.INT:

        def to_int(value: Any) -> int:
            if type(value) is int:
                if _INT64_MIN <= value <= _INT64_MAX:
                    return value
                raise _reject(table, column, kind, value, "the integer does not fit in int64")
            raw = _scalar(value)
            if isinstance(raw, float):
                if not (math.isfinite(raw) and raw.is_integer()):
                    raise _reject(table, column, kind, value, "the float is not a whole number")
                raw = int(raw)
            if isinstance(raw, int):
                if _INT64_MIN <= raw <= _INT64_MAX:
                    return int(raw)
                raise _reject(table, column, kind, value, "the integer does not fit in int64")
            raise _reject(table, column, kind, value, "pass an integer")

        return to_int
    if kind is ColumnKind.BOOL:

        def to_bool(value: Any) -> bool:
            raw = _scalar(value)
            if isinstance(raw, bool):
                return raw
            raise _reject(table, column, kind, value, "pass True or False")

        return to_bool
    if kind is ColumnKind.STR:

        def to_str(value: Any) -> str:
            if type(value) is str and value.isascii():  # ASCII always encodes: no need to try
                return value
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise _reject(table, column, kind, value, "the text is not valid Unicode") from exc
                return str(value)
            raise _reject(table, column, kind, value, "pass a str")

        return to_str

    def keep(value: Any) -> Any:
        return value

    return keep
