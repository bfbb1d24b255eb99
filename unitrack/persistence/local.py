"""Seed module path ``track.persistence.local``: the JSON file backend and the query helpers.

track's lock helpers (``LockFileRemover``, ``MultiLock``, ``lock_guard``) are not reproduced: the file backend
locks internally and never deletes a lock file.
"""

from __future__ import annotations

from typing import Any

from unitrack.errors import ConcurrentWrite
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.query import execute_query

__all__ = [
    "ConcurrentWrite",
    "FileProtocol",
    "execute_query",
    "query_gt",
    "query_in",
    "query_lte",
    "query_ne",
]


def _key(attrs: Any) -> str:
    return attrs if isinstance(attrs, str) else ".".join(attrs)


def query_in(obj: Any, attrs: Any, choices: Any) -> bool:
    """True when the value at ``attrs`` (a dotted path or list of parts) is one of ``choices``."""
    return execute_query(obj, {_key(attrs): {"$in": list(choices)}})


def query_ne(obj: Any, attrs: Any, val: Any) -> bool:
    """True when the value at ``attrs`` differs from ``val``."""
    return execute_query(obj, {_key(attrs): {"$ne": val}})


def query_lte(obj: Any, attrs: Any, val: Any) -> bool:
    """True when the value at ``attrs`` is at most ``val``."""
    return execute_query(obj, {_key(attrs): {"$lte": val}})


def query_gt(obj: Any, attrs: Any, val: Any) -> bool:
    """True when the value at ``attrs`` is greater than ``val``."""
    return execute_query(obj, {_key(attrs): {"$gt": val}})
