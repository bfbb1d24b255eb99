"""Every error unitrack raises, in one tree.

Users only ever need to catch these; errors from PyTables, filelock, sockets, YAML or psycopg are translated at
the boundary and chained (``raise StorageError(...) from exc``).

::

    UnitrackError
    ├── ConfigError (ValueError)          bad argument, URI, spec string, query, params.yml
    │     ├── InvalidURIError
    │     ├── UnknownSchemeError
    │     ├── InvalidSpecError
    │     ├── UnknownTriggerError (NotImplementedError)   Monitor trigger that is not step ... supereon
    │     ├── NotCheckpointableError (TypeError)          an object without state_dict() given to checkpoint
    │     ├── InvalidQueryError
    │     ├── InvalidParameterError (TypeError)   an experiment override of the wrong type or an unknown name
    │     ├── IncompatibleYmlException            YAML text or file that cannot be read as a mapping
    │     │     └── UnsafeYAMLError                 YAML with python/object tags (nothing in it is run)
    │     ├── InvalidExperimentRoot       a folder that is not an ExperimentManager root (xmen's name)
    │     ├── RegisterSyntaxError         a register string ({lr: 0.1 | 0.01}) or view filter, with a position
    │     ├── UnknownKeyError             a filter, column or sort key that names nothing (closest ones named)
    │     └── ExperimentNotFoundError     no managed experiment matches a name or pattern
    ├── SchemaError (ValueError)          a row or value that does not fit the table's schema
    │     └── InvalidNameError            a name with '/', '..', NUL, ... (checked before any file is touched)
    ├── NotFoundError (LookupError)       project, group, trial, table, stored object
    │     ├── ItemNotFound                fetch_and_update_* found nothing to update (track's name)
    │     ├── TrialDoesNotExist           set_trial() named a trial the backend does not hold (track's name)
    │     ├── CheckpointNotFoundError (ValueError)  no Monitor checkpoint (at the asked step)
    │     └── TableNotFoundError (KeyError)  store['missing']
    ├── AlreadyExistsError (ValueError)   e.g. Store(..., new=True) on an existing folder
    ├── StorageError                      disk full, lock timeout, corrupt or foreign file
    │     ├── ConcurrentWrite             a lock was not acquired in time (track's name)
    │     ├── CorruptStoreError           a file's bytes are not what was written
    │     ├── ForeignStoreError           a store.h5 whose layout cannot be read without running its code
    │     ├── StoreLockedError            a second writer on one store
    │     └── ReadOnlyStoreError          a write on a store opened with mode='r'
    ├── RemoteError                       the server or the connection to it
    │     ├── AuthenticationError
    │     │     └── PermissionDeniedError   logged in, but the role or ownership forbids the call
    │     ├── FrameError
    │     ├── RPCCallFailure                track's name for a failed remote call
    │     ├── ConnectionLostError
    │     ├── ServerBusyError               no room for another connection now (the client retries)
    │     └── ProtocolMismatchError         TLS against plaintext, or another wire protocol version
    └── MissingDependencyError (ImportError)

Each class builds its message from the data it is given and keeps that data as attributes, so callers (and the
server, which sends errors as ``(kind, message, fields)``) can use it. :func:`error_from_wire` rebuilds an error
from those three parts.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "CheckpointNotFoundError",
    "ConcurrentWrite",
    "ConfigError",
    "ExperimentStateError",
    "ConnectionLostError",
    "CorruptStoreError",
    "ForeignStoreError",
    "FrameError",
    "IncompatibleYmlException",
    "ExperimentNotFoundError",
    "InvalidExperimentRoot",
    "InvalidNameError",
    "InvalidParameterError",
    "InvalidQueryError",
    "InvalidSpecError",
    "InvalidURIError",
    "ItemNotFound",
    "MissingDependencyError",
    "NotCheckpointableError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "PermissionDeniedError",
    "ProtocolMismatchError",
    "RegisterSyntaxError",
    "RemoteError",
    "RPCCallFailure",
    "SchemaError",
    "ServerBusyError",
    "StorageError",
    "StoreLockedError",
    "TableNotFoundError",
    "TrialDoesNotExist",
    "UnitrackError",
    "UnknownSchemeError",
    "UnknownTriggerError",
    "UnknownKeyError",
    "UnsafeYAMLError",
    "error_from_wire",
]


class UnitrackError(Exception):
    """Base class of every error unitrack raises.

    Args:
        message: What was wrong, with the value, and what to do.
        **fields: Data describing the error, kept as attributes (plain, JSON-able values).
    """

    #: Registry of every subclass by name, used to rebuild errors received from a server.
    _kinds: ClassVar[dict[str, type[UnitrackError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        UnitrackError._kinds[cls.__name__] = cls

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message

    @property
    def kind(self) -> str:
        """The class name, as sent over the wire."""
        return type(self).__name__


UnitrackError._kinds["UnitrackError"] = UnitrackError


def error_from_wire(kind: str, message: str, fields: dict[str, Any] | None = None) -> UnitrackError:
    """Rebuild the error a server reported as ``(kind, message, fields)``.

    An unknown kind becomes a plain :class:`RemoteError`, so a newer server never crashes an older client.

    Example:
        >>> err = error_from_wire("NotFoundError", "no trial 'x'", {"what": "trial"})
        >>> type(err).__name__, err.what
        ('NotFoundError', 'trial')
    """
    cls = UnitrackError._kinds.get(kind)
    if cls is None:
        cls = RemoteError
        message = f"{kind}: {message}"
    err = cls.__new__(cls)
    UnitrackError.__init__(err, message, **(fields or {}))
    return err


# --------------------------------------------------------------------------------------------------- config
class ConfigError(UnitrackError, ValueError):
    """A bad argument, URI, spec string, query or configuration file."""


class InvalidURIError(ConfigError):
    """A URI that does not follow ``scheme://[user[:password]@]host[:port][/path][?options]``."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"Invalid URI {uri!r}: {reason}", uri=uri, reason=reason)


class UnknownSchemeError(ConfigError):
    """A URI whose scheme has no registered backend. There is never a fallback."""

    def __init__(self, scheme: str, uri: str, known: list[str]) -> None:
        super().__init__(
            f"no backend for scheme {scheme!r} in {uri!r}; known: {', '.join(sorted(known))}",
            scheme=scheme,
            uri=uri,
            known=sorted(known),
        )


class InvalidSpecError(ConfigError):
    """A malformed Monitor spec string such as ``'loss@'``; the message points at the bad character."""

    def __init__(self, spec: str, position: int, reason: str) -> None:
        pointer = " " * (position + len("  ")) + "^"
        super().__init__(
            f"Invalid spec {spec!r} at position {position}: {reason}\n  {spec}\n{pointer}",
            spec=spec,
            position=position,
            reason=reason,
        )


class UnknownTriggerError(ConfigError, NotImplementedError):
    """A Monitor trigger name that is none of step, epoch, era, eon, supereon (or s, e, er, eo, se).

    Also a ``NotImplementedError``, which the original ``Monitor.inc`` raised.
    """

    def __init__(self, trigger: object, choices: str) -> None:
        super().__init__(f"Unknown trigger {trigger!r}; use one of {choices}.", trigger=str(trigger))


class NotCheckpointableError(ConfigError, TypeError):
    """An object without ``state_dict()`` was given to checkpoint."""

    def __init__(self, name: str, value: object) -> None:
        super().__init__(
            f"Cannot checkpoint {name!r} ({type(value).__name__}): it has no state_dict(). "
            "Checkpoint torch modules, optimizers or other objects with state_dict()/load_state_dict().",
            name=name,
            type=type(value).__name__,
        )


class InvalidQueryError(ConfigError):
    """A query (``fetch_trials``) or filter with an unknown operator, field or shape."""

    def __init__(self, query: str, reason: str) -> None:
        super().__init__(f"Invalid query {query}: {reason}", query=query, reason=reason)


class InvalidParameterError(ConfigError, TypeError):
    """An experiment parameter override with an unknown name or a value of the wrong type."""

    def __init__(self, name: str, reason: str, expected: str | None = None, value: object = None) -> None:
        super().__init__(
            f"Parameter {name!r} {reason}",
            parameter=name,
            expected=expected,
            value=repr(value),
        )


class ExperimentStateError(ConfigError):
    """An Experiment operation its status does not allow (e.g. changing the parameters of a registered one, or
    running one that was never registered). Also a ``ValueError``, as xmen raised."""


class IncompatibleYmlException(ConfigError):
    """YAML (a string or a params.yml/defaults.yml file) that cannot be read as expected (xmen's name)."""


class UnsafeYAMLError(IncompatibleYmlException):
    """YAML that is not plain data (e.g. ``!!python/object`` tags); nothing in it was run."""

    def __init__(self, source: str, reason: str) -> None:
        shown = source if len(source) <= 80 else source[:77] + "..."
        super().__init__(
            f"{shown!r} is not safe YAML: {reason}. Use plain mappings, lists, strings and numbers only.",
            source=source,
            reason=reason,
        )


class InvalidExperimentRoot(ConfigError):
    """A folder that is not an initialised ExperimentManager root (``experiment.yml``, ``defaults.yml``, ...)."""

    def __init__(self, root: str, missing: list[str]) -> None:
        super().__init__(
            f"{root} is not an experiment root: missing {', '.join(missing)}. "
            "Create one with `unitrack register --root ROOT --experiment module:Class` (or --defaults/--script).",
            root=root,
            missing=missing,
        )


class RegisterSyntaxError(ConfigError):
    """A register string or a view filter that cannot be read; the message points at the position."""

    def __init__(self, text: str, position: int, reason: str) -> None:
        shown = text if len(text) <= 200 else text[:197] + "..."
        super().__init__(
            f"Invalid {shown!r} at position {position}: {reason}",
            text=text,
            position=position,
            reason=reason,
        )


class UnknownKeyError(ConfigError):
    """A filter, column or sort key that names no parameter, metric or field of the runs listed."""

    def __init__(self, what: str, key: str, closest: list[str], known: list[str], hint: str = "") -> None:
        close = f" Did you mean {', '.join(repr(c) for c in closest)}?" if closest else ""
        shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
        super().__init__(
            f"No parameter, metric or field matches the {what} {key!r}.{close}{hint} Known: {shown or '(none)'}.",
            what=what,
            key=key,
            closest=closest,
            known=known,
        )


class ExperimentNotFoundError(ConfigError):
    """No managed experiment matches a name or pattern."""

    def __init__(self, root: str, pattern: str) -> None:
        super().__init__(
            f"No experiment in {root} matches {pattern!r}. See `unitrack view {root}`.",
            root=root,
            pattern=pattern,
        )


# --------------------------------------------------------------------------------------------------- schema
class SchemaError(UnitrackError, ValueError):
    """A row or value that does not fit a table's schema or the data model."""


class InvalidNameError(SchemaError):
    """A name that could escape its folder or break a file format: ``/``, ``..``, NUL, too long, empty."""

    def __init__(self, what: str, name: object, reason: str) -> None:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:77] + "...")
        super().__init__(
            f"Invalid {what} name {shown}: {reason}. Use letters, digits and '._-=,:+ ' only.",
            what=what,
            name=name if isinstance(name, str) else repr(name),
            reason=reason,
        )


# --------------------------------------------------------------------------------------------------- lookup
class NotFoundError(UnitrackError, LookupError):
    """A project, group, trial, table or stored object that does not exist."""


class ItemNotFound(NotFoundError):
    """``fetch_and_update_*`` found nothing matching its query (track's ``ItemNotFound``)."""

    def __init__(self, what: str, query: str) -> None:
        super().__init__(f"No {what} matches {query}; nothing was updated.", what=what, query=query)


class TrialDoesNotExist(NotFoundError):
    """``TrackClient.set_trial`` named a trial the backend does not hold (track's ``TrialDoesNotExist``)."""

    def __init__(self, uid: str) -> None:
        super().__init__(
            f"Trial {uid!r} does not exist in this backend. Check the uid (hash_revision, e.g. from "
            "ORION_TRIAL_ID or UNITRACK_TRIAL_ID) and the backend URI, or create it with new_trial().",
            uid=uid,
        )


class CheckpointNotFoundError(NotFoundError, ValueError):
    """No Monitor checkpoint (or none at the asked step) for a module; ``ValueError`` as the seed promised."""

    def __init__(self, name: str, folder: str, step: int | None, available: list[int]) -> None:
        wanted = "checkpoint" if step is None else f"checkpoint at step {step}"
        shown = ", ".join(map(str, available[-10:])) or "none"
        super().__init__(
            f"No {wanted} for {name!r} in {folder}; steps available: {shown}. "
            "Check the directory and step, or pass attempt=True to skip missing checkpoints.",
            name=name,
            folder=folder,
            step=step,
            available=available,
        )


class AlreadyExistsError(UnitrackError, ValueError):
    """Something that must be new already exists, e.g. ``Store(..., new=True)`` on an existing folder."""


# --------------------------------------------------------------------------------------------------- storage
class StorageError(UnitrackError):
    """Disk full, lock timeout, a corrupt or foreign file: the storage could not do what was asked."""


class ConcurrentWrite(StorageError):
    """A lock was not acquired in time because another process holds it (track's ``ConcurrentWrite``)."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__(
            f"Lock on {path} not acquired within {timeout_s:g} s; another process holds it. "
            "Retry, or raise lock_timeout_s.",
            path=path,
            timeout_s=timeout_s,
        )


class CorruptStoreError(StorageError):
    """The bytes of a file are not what unitrack wrote there. Nothing from it is returned."""

    def __init__(
        self,
        path: str,
        offset: int,
        reason: str = "checksum mismatch",
        advice: str | None = None,
        *,
        others_affected: bool = False,
    ) -> None:
        advice = advice or "Restore it from a backup or remove it"
        # A file holding many runs (a file:// or pickled:// database) affects them all; a run's own file does not.
        scope = "every run stored in it is affected" if others_affected else "other runs are not affected"
        super().__init__(
            f"{path} is corrupt at byte {offset}: {reason}. {advice}; {scope}.",
            path=path,
            offset=offset,
            reason=reason,
        )


class ForeignStoreError(StorageError):
    """A ``store.h5`` written by another tool holds a node that cannot be read without unpickling it."""

    def __init__(self, path: str, node: str, reason: str) -> None:
        super().__init__(
            f"{path}: node /{node} cannot be read safely: {reason}. unitrack reads pandas 'table' format "
            "(what cox writes) without running any code from the file; convert this node to that format with "
            "the tool that wrote it (pandas.DataFrame.to_hdf(..., format='table')).",
            path=path,
            node=node,
            reason=reason,
        )


# --------------------------------------------------------------------------------------------------- remote
class RemoteError(UnitrackError):
    """The server reported an error, or the connection to it failed."""


class AuthenticationError(RemoteError):
    """Unknown user or wrong password (deliberately the same message for both), or a missing permission."""


class PermissionDeniedError(AuthenticationError):
    """A logged-in user whose role (reader, writer, admin) or trial ownership forbids the call."""


class FrameError(RemoteError):
    """A wire frame that is too large, truncated or not valid data."""


class RPCCallFailure(RemoteError):
    """track's name for a failed remote call; ``trace`` is kept as an attribute (servers never send theirs)."""

    def __init__(self, message: str, trace: str | None = None) -> None:
        super().__init__(message, trace=trace)


class ConnectionLostError(RemoteError):
    """The connection to the server was lost and could not be re-established in time."""


class ServerBusyError(RemoteError):
    """The server has no room for another connection now; clients retry it (it heals by itself)."""


class ProtocolMismatchError(RemoteError):
    """Client and server cannot talk: one uses TLS and the other not, or their wire protocol versions differ.
    Retrying cannot help; the message names the fix."""


# --------------------------------------------------------------------------------------------------- deps
class MissingDependencyError(UnitrackError, ImportError):
    """An optional package is needed for what was asked; the message names the extra to install."""

    def __init__(self, feature: str, extra: str, package: str | None = None) -> None:
        super().__init__(
            f"{feature} needs: pip install 'unitrack[{extra}]'"
            + (f" (missing package {package!r})" if package else ""),
            feature=feature,
            extra=extra,
            package=package,
        )


# --------------------------------------------------------------------------------------------------- store
# Subclasses used by ``unitrack.store``; they sit here so that every error lives in one tree.
class TableNotFoundError(NotFoundError, KeyError):
    """``store['missing']`` or ``get_table('missing')``: no table of that name in the store."""

    def __init__(self, table: str, store: str, known: list[str]) -> None:
        super().__init__(
            f"Store {store} has no table {table!r}; tables: {', '.join(sorted(known)) or '(none)'}. "
            "Create it with add_table(name, schema) first.",
            table=table,
            store=store,
            known=sorted(known),
        )


class StoreLockedError(StorageError):
    """A second writer tried to open a store that another Store object or process is writing."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(
            f"Store {path} is already open for writing by {holder}. Close that Store first, "
            "or open this one with mode='r'.",
            path=path,
            holder=holder,
        )


class ReadOnlyStoreError(StorageError):
    """A write was attempted on a store opened with ``mode='r'``."""

    def __init__(self, path: str, action: str) -> None:
        super().__init__(
            f"Cannot {action}: store {path} was opened read-only (mode='r'). Open it with mode='a' to write.",
            path=path,
            action=action,
        )
