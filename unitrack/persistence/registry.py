"""Backends by URI scheme: ``get_protocol(uri)`` and ``register(scheme, factory)``.

Backends are registered by dotted path and imported only when their scheme is used, so ``import unitrack``
never loads psycopg or PyTables. An unknown scheme is an error (track silently fell back to a file), and a
backend whose optional package is missing names the extra to install.

Example:
    >>> get_protocol("ephemeral://").__class__.__name__
    'EphemeralProtocol'
    >>> get_protocol("hfd5://runs")
    Traceback (most recent call last):
    ...
    unitrack.errors.UnknownSchemeError: no backend for scheme 'hfd5' in 'hfd5://runs'; known: ...
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any

from unitrack.errors import ConfigError, MissingDependencyError, UnknownSchemeError
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.uri import ParsedURI, as_uri

__all__ = [
    "Backend",
    "default_uri",
    "get_protocol",
    "known_schemes",
    "register",
    "resolve_uri",
]

logger = logging.getLogger(__name__)

Factory = Callable[..., Protocol]

#: Environment variable naming the backend URI when none is passed.
URI_ENV = "UNITRACK_URI"
#: Entry-point group through which plug-ins add backends.
ENTRY_POINT_GROUP = "unitrack.backends"


@dataclass(frozen=True)
class Backend:
    """A backend known by dotted path (``'module:Class'``), imported on first use."""

    target: str | Factory
    aliases: tuple[str, ...] = ()
    extra: str | None = None
    description: str = ""
    #: False for a backend that only forwards to an outside service (Comet): it has its own tests, since the
    #: contract suite would create hundreds of outside experiments.
    in_contract_suite: bool = True

    def load(self, scheme: str) -> Factory:
        """Import and return the factory.

        Raises:
            MissingDependencyError: when an optional package the backend needs is missing.
        """
        if callable(self.target):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            if missing and not missing.startswith("unitrack") and self.extra:
                raise MissingDependencyError(f"{scheme}://", self.extra, missing) from exc
            raise
        factory: Factory = getattr(module, attr)
        return factory


_KNOWN: dict[str, Backend] = {
    "hdf5": Backend(
        "unitrack.persistence.backends.hdf5:HDF5Protocol",
        aliases=("cox",),
        description="a folder of cox stores, one per trial (the embedded default)",
    ),
    "ephemeral": Backend(
        "unitrack.persistence.backends.ephemeral:EphemeralProtocol", description="in memory, for tests"
    ),
    "file": Backend(
        "unitrack.persistence.backends.file:FileProtocol", description="one JSON database with file locks"
    ),
    "pickled": Backend(
        "unitrack.persistence.backends.pickled:PickledProtocol", description="track compatibility only"
    ),
    "postgresql": Backend(
        "unitrack.persistence.backends.sql:SQLProtocol",
        aliases=("postgres", "cockroachdb", "cockroach"),
        extra="postgres",
        description="PostgreSQL or CockroachDB: many machines, one database",
    ),
    "socket": Backend(
        "unitrack.persistence.client:SocketProtocol", description="client of a 'unitrack serve' server"
    ),
    "cometml": Backend(
        "unitrack.persistence.backends.comet:CometMLProtocol",
        aliases=("comet",),
        extra="comet",
        description="forwards trials to Comet (comet.com); ?offline_directory= for offline archives",
        in_contract_suite=False,
    ),
}
#: Schemes of track's backends that unitrack does not provide, with what to use instead.
_NOT_PROVIDED: dict[str, str] = {
    "mongodb": (
        "track's MongoDB backend is not provided: unitrack has no MongoDB server to test it against, and its "
        "documents held the same data as the SQL backend. Use postgresql://user:pass@host:port/db for many "
        "machines sharing one database, or unitrack serve in front of any backend."
    ),
}
_ALIASES: dict[str, str] = {}
_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _KNOWN and ep.name not in _ALIASES:
            _KNOWN[ep.name] = Backend(
                ep.value, description=f"plug-in from {ep.dist.name if ep.dist else '?'}"
            )


def _canonical(scheme: str) -> str:
    return _ALIASES.get(scheme, scheme)


def known_schemes() -> Mapping[str, Backend]:
    """A read-only view of every registered scheme (aliases included) and its backend."""
    _load_entry_points()
    table: dict[str, Backend] = dict(_KNOWN)
    for alias, scheme in _ALIASES.items():
        table[alias] = _KNOWN[scheme]
    return MappingProxyType(table)


def register(scheme: str, factory: Factory | str | Backend, *, replace: bool = False) -> None:
    """Add a backend for ``scheme``: a callable ``factory(uri)`` returning a Protocol, or ``'module:Class'``.

    Raises:
        ConfigError: when the scheme exists and ``replace`` is False, or the scheme name is malformed.

    Example:
        >>> from unitrack.persistence.backends.ephemeral import EphemeralProtocol
        >>> register("scratch", EphemeralProtocol)
        >>> get_protocol("scratch://").__class__.__name__
        'EphemeralProtocol'
    """
    _load_entry_points()
    if not isinstance(scheme, str) or not scheme.isascii() or not scheme[:1].isalpha():
        raise ConfigError(f"Invalid scheme {scheme!r}: a scheme starts with a letter, e.g. 'sqlite'.")
    scheme = scheme.lower()
    exists = scheme in _KNOWN or scheme in _ALIASES
    if exists and not replace:
        raise ConfigError(f"Scheme {scheme!r} is already registered; pass replace=True to override it.")
    backend = factory if isinstance(factory, Backend) else Backend(factory)
    _ALIASES.pop(scheme, None)
    _KNOWN[scheme] = backend
    for alias in backend.aliases:
        _ALIASES[alias] = scheme


def _add_builtin_aliases() -> None:
    for scheme, backend in _KNOWN.items():
        for alias in backend.aliases:
            _ALIASES[alias] = scheme


_add_builtin_aliases()


def default_uri(root: str | os.PathLike[str] | None = None) -> str:
    """The backend used when none is given: ``hdf5://{root}`` (``./runs`` without a root)."""
    return f"hdf5://{os.fspath(root) if root is not None else 'runs'}"


def resolve_uri(uri: str | ParsedURI | None = None, root: str | os.PathLike[str] | None = None) -> str:
    """Return the URI to use: the explicit one, then ``$UNITRACK_URI``, then :func:`default_uri`."""
    if uri is not None:
        return uri.to_uri() if isinstance(uri, ParsedURI) else uri
    from_env = os.environ.get(URI_ENV)
    if from_env:
        return from_env
    return default_uri(root)


def get_protocol(uri: str | ParsedURI | None = None, **options: Any) -> Protocol:
    """Build the backend for ``uri`` (default: :func:`resolve_uri`); ``options`` go to its constructor.

    Raises:
        InvalidURIError: for a malformed URI.
        UnknownSchemeError: for a scheme no backend is registered for (listing the known ones).
        MissingDependencyError: when the backend needs an optional package that is not installed.
    """
    _load_entry_points()
    text = resolve_uri(uri)
    parsed = as_uri(text)
    scheme = _canonical(parsed.scheme)
    backend = _KNOWN.get(scheme)
    if backend is None:
        if scheme in _NOT_PROVIDED:
            raise ConfigError(f"{parsed.redacted()}: {_NOT_PROVIDED[scheme]}", uri=parsed.redacted())
        raise UnknownSchemeError(parsed.scheme, parsed.redacted(), list(known_schemes()))
    factory = backend.load(parsed.scheme)
    protocol = factory(parsed, **options)
    logger.debug("opened %s backend at %s", scheme, parsed)
    return protocol
