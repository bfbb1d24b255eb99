"""cox's store layer: a Store of tables per experiment, serialized objects, readers and a TensorBoard view.

This package knows nothing of trials; ``unitrack.persistence`` builds on it.

Example:
    >>> import tempfile
    >>> from unitrack.store import Store
    >>> store = Store(tempfile.mkdtemp(), "exp1")
    Logging in: .../exp1
    >>> _ = store.add_table("metadata", {"step_size": float, "out_dir": str})
    >>> store["metadata"].append_row({"step_size": 0.01, "out_dir": "/tmp/"})
    >>> store["metadata"].nrows
    1
    >>> store.close()
"""

from __future__ import annotations

from unitrack.store.schema import OBJECT, PICKLE, PYTORCH_STATE, ColumnKind, schema_from_dict
from unitrack.store.store import Mode, Store, repair_journal
from unitrack.store.table import Table

__all__ = [
    "OBJECT",
    "PICKLE",
    "PYTORCH_STATE",
    "ColumnKind",
    "Mode",
    "Store",
    "Table",
    "repair_journal",
    "schema_from_dict",
]
