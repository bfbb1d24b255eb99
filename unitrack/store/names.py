"""Validation of names that become paths or HDF5 nodes: experiment ids, table and column names, object ids.

Every check here runs before any filesystem call, so a bad name never creates, opens or deletes anything.
"""

from __future__ import annotations

import re

from unitrack.errors import InvalidNameError

__all__ = ["MAX_NAME_CHARS", "validate_hdf5_name", "validate_name", "validate_object_id"]

MAX_NAME_CHARS = 255

_OBJECT_ID = re.compile(r"[A-Za-z0-9._-]+")
_PYTABLES_RESERVED = re.compile(r"_[cfgv]_")


def validate_name(what: str, name: object) -> str:
    """Check that ``name`` can safely be a folder, file or HDF5 node name, and return it.

    Args:
        what: What the name is for, used in the error message (``'exp_id'``, ``'table'``, ``'column'``).
        name: The name to check.

    Returns:
        The name, unchanged.

    Raises:
        InvalidNameError: The name is not a string, is empty, longer than 255 characters, or contains
            ``/``, ``\\``, NUL or ``..``; or an ``exp_id`` (a folder) starts with ``.``.

    Example:
        >>> validate_name("table", "train")
        'train'
    """
    if not isinstance(name, str):
        raise InvalidNameError(what, name, f"a name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidNameError(what, name, "the name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidNameError(what, name, f"the name has {len(name)} characters; at most {MAX_NAME_CHARS}")
    for bad, label in (("/", "'/'"), ("\\", "'\\\\'"), ("\x00", "a NUL character"), ("..", "'..'")):
        if bad in name:
            raise InvalidNameError(what, name, f"the name contains {label}")
    if name == ".":
        raise InvalidNameError(what, name, "'.' is the current folder")
    if what == "exp_id" and name.startswith("."):
        # A hidden store folder is skipped by CollectionReader and every listing (#12 item 12).
        raise InvalidNameError(
            what, name, "the name starts with '.' (a hidden folder, skipped by every reader)"
        )
    return name


def validate_object_id(uid: object) -> str:
    """Check an object id read from a table cell before it is joined into a path (SEED_NOTES S2).

    Args:
        uid: The id, as stored in a PICKLE or PYTORCH_STATE cell.

    Returns:
        The id, unchanged.

    Raises:
        InvalidNameError: The id is not made only of ``[A-Za-z0-9._-]``, or contains ``..``.
    """
    if not isinstance(uid, str) or not _OBJECT_ID.fullmatch(uid) or ".." in uid or len(uid) > MAX_NAME_CHARS:
        raise InvalidNameError("object id", uid, "object ids are made of [A-Za-z0-9._-] without '..'")
    return uid


def validate_hdf5_name(what: str, name: str) -> str:
    """Check that a (valid) table or column name can also be written to ``store.h5``.

    A table is an HDF5 group, and PyTables reserves node names starting with ``_c_``, ``_f_``, ``_g_`` and
    ``_v_``. Any column name can be written: a column whose name pandas' layout cannot hold as a column of its
    own (``_c``, whose attribute would be ``_c_kind``; ``_v_x``; ``index``) is stored in a values block, as
    pandas stores such columns, and reads back under its name (#12 item 13).

    Raises:
        InvalidNameError: A table name PyTables reserves.
    """
    if what != "column" and _PYTABLES_RESERVED.match(name):
        raise InvalidNameError(
            what, name, "names starting with _c_, _f_, _g_ or _v_ are reserved by HDF5 (PyTables)"
        )
    return name
