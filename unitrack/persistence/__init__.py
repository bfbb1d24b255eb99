"""track's persistence layer: the data model, the Protocol, queries and backends chosen by URI.

``get_protocol(uri)`` returns a backend; ``register(scheme, factory)`` adds one. The ``make_*`` factories of
track are kept for code written against it.

Example:
    >>> from unitrack.persistence import get_protocol
    >>> get_protocol("ephemeral://").fetch_projects(None)
    []
"""

from __future__ import annotations

from typing import Any

from unitrack.errors import ConfigError
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.registry import get_protocol, known_schemes, register, resolve_uri

__all__ = [
    "Protocol",
    "get_protocol",
    "known_schemes",
    "make_cockroach_protocol",
    "make_comet_ml",
    "make_ephemeral_protocol",
    "make_local",
    "make_mongodb_protocol",
    "make_pickled_protocol",
    "make_socket_protocol",
    "register",
    "resolve_uri",
]


def make_local(uri: str, strict: bool = True, eager: bool = True) -> Protocol:
    """The JSON file backend (``file://PATH.json``)."""
    return get_protocol(uri, strict=strict, eager=eager)


def make_ephemeral_protocol(uri: str = "ephemeral://") -> Protocol:
    """The in-memory backend."""
    return get_protocol(uri)


def make_pickled_protocol(uri: str) -> Protocol:
    """The pickled-file backend (compatibility only)."""
    return get_protocol(uri)


def make_socket_protocol(uri: str) -> Protocol:
    """A client of ``unitrack serve`` (``socket://user@host:port``)."""
    return get_protocol(uri)


def make_cockroach_protocol(uri: str) -> Protocol:
    """The SQL backend for CockroachDB (``cockroachdb://`` or ``cockroach://``)."""
    return get_protocol(uri)


def _not_provided(name: str, instead: str) -> ConfigError:
    return ConfigError(f"The {name} backend of track is not provided by unitrack; use {instead} instead.")


def make_mongodb_protocol(uri: str) -> Protocol:
    """Not provided: MongoDB. Raises ConfigError pointing to ``postgresql://``."""
    raise _not_provided("MongoDB", "postgresql://")


def make_comet_ml(uri: str, *args: Any) -> Protocol:
    """The Comet forwarding backend (``cometml:WORKSPACE/PROJECT`` as track wrote it, or ``cometml://...``)."""
    return get_protocol(uri)
