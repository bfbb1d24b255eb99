"""``unitrack serve``: an asyncio server exposing one backend's storage primitives to ``socket://`` clients.

What it guarantees (against track's ``SocketServer``, SEED_NOTES S12/S13):

- Only the primitives in :data:`~unitrack.persistence.protocol.PRIMITIVES` can be called, through a table
  derived from their annotations in :class:`Protocol`, with typed, validated arguments; a name from the wire only
  selects a key of that table. ``commit`` takes no arguments over the wire (no client-chosen path), and commits
  only the trials the calling connection wrote.
- Frames are size-limited before allocation (16 KiB before login, 8 MiB after) and decoded as JSON only, in time
  linear in their size (:mod:`unitrack.persistence.wire`). Replies of any size travel in parts.
- Every connection logs in once (scrypt-hashed users file, :mod:`unitrack.persistence.users`), with roles and
  trial ownership. Failed logins slow down further attempts of the same user from the same source only.
- Connections that have not logged in have a deadline (10 s) and a cap of their own (64; a new one replaces the
  oldest waiting), so idle or half-sent sockets cannot keep logged-in clients out (256 of them at most).
- Transport security is TLS (>= 1.2) from the ``ssl`` module; a self-signed certificate can be generated and its
  fingerprint pinned by clients. Binding a non-loopback address without TLS needs ``insecure=True``.
- The event loop only moves bytes and answers pings: decoding large frames, checking, calling the backend and
  encoding replies run on worker threads (4), so no request stops the others.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import dataclasses
import datetime
import gc
import hashlib
import inspect
import ipaddress
import logging
import math
import os
import signal
import socket
import ssl
import sys
import threading
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unitrack.errors import (
    AuthenticationError,
    ConfigError,
    FrameError,
    PermissionDeniedError,
    ProtocolMismatchError,
    RemoteError,
    SchemaError,
    ServerBusyError,
    UnitrackError,
)
from unitrack.persistence.protocol import PRIMITIVES, Protocol
from unitrack.persistence.query import Query, normalize_query
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest, request_from_json, series_to_json
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.users import UserStore
from unitrack.persistence.wire import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_LOGIN_FRAME_BYTES,
    PROTOCOL_VERSION,
    Batch,
    Call,
    ErrorReply,
    Login,
    Message,
    Ping,
    Pong,
    Reply,
    decode_payload,
    encode_frame,
    encode_frames,
    encode_pieces,
    is_loopback,
    read_frame,
    write_frame,
)

__all__ = [
    "SocketServer",
    "ServerThread",
    "certificate_fingerprint",
    "check_bind_address",
    "generate_self_signed",
    "server_ssl_context",
    "start_track_server",
]

logger = logging.getLogger(__name__)

OWNER_TAG = "owner"
_MAX_UID = 256


# ------------------------------------------------------------------------------------------- argument types
def _decode(what: str, cls: type[Any]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, dict):
            raise SchemaError(f"argument {what!r} must be an object, not {type(value).__name__}")
        try:
            obj = from_json(value)
        except UnitrackError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SchemaError(f"argument {what!r} is malformed: {type(exc).__name__}") from None
        if not isinstance(obj, cls):
            raise SchemaError(f"argument {what!r} must be a {cls.__name__}, not {type(obj).__name__}")
        return obj

    return decode


def _uid(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_UID:
        raise SchemaError(f"argument 'uid' must be a non-empty string of at most {_MAX_UID} characters")
    return value


def _query(value: Any) -> Query:
    if value is not None and not isinstance(value, (dict, list)):
        raise SchemaError(f"argument 'query' must be an object, a list of pairs or null, not {value!r}")
    normalize_query(value)  # raises InvalidQueryError
    return value


def _scalar(what: str, kind: type[Any]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is str and ok and len(value) > _MAX_TEXT:
            ok = False
        if not ok:
            raise SchemaError(f"argument {what!r} must be {_KIND_NAMES[kind]}, not {str(value)[:64]!r}")
        return value

    return decode


def _sequence(what: str, element: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, list) or len(value) > _MAX_ITEMS:
            raise SchemaError(f"argument {what!r} must be a list of at most {_MAX_ITEMS} items")
        return [element(v) for v in value]

    return decode


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else inner(value)


_MAX_TEXT = 4096
_MAX_ITEMS = 100_000
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_WIRE_CLASSES = (Project, TrialGroup, Trial, TrialUpdate, GroupUpdate)
#: Argument types with a codec of their own (checked; raising SchemaError for anything malformed).
_DECODERS: Mapping[Any, Callable[[Any], Any]] = {SeriesRequest: request_from_json}


def _decoder_for(name: str, hint: Any) -> Callable[[Any], Any]:
    """How an argument annotated ``hint`` is read off the wire (a new primitive's arguments need no table)."""
    if hint == Query:
        return _query
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            return _optional(_decoder_for(name, rest[0]))
    if hint is str and name == "uid":
        return _uid
    if hint in (bool, int, float, str):
        return _scalar(name, hint)
    if hint in _WIRE_CLASSES:
        return _decode(name, hint)
    if hint in _DECODERS:
        return _DECODERS[hint]
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Collection) and args:
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise RuntimeError(f"primitive argument {name!r}: {hint} has no wire decoder")
        return _sequence(name, _decoder_for(name, args[0]))
    raise RuntimeError(
        f"primitive argument {name!r}: {hint} has no wire decoder; add one to server._decoder_for"
    )


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    """One typed argument of a primitive."""

    name: str
    decode: Callable[[Any], Any]
    default: Any = _NO_DEFAULT


def _signature(method: str, owner: type[Protocol] = Protocol) -> tuple[Param, ...]:
    """The wire signature of a primitive, from its annotations in ``owner``. ``**kwargs`` (``commit``) takes
    nothing from the wire: no client-chosen path ever reaches a backend."""
    function = getattr(owner, method)
    hints = typing.get_type_hints(function)
    params = []
    for param in inspect.signature(function).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = _NO_DEFAULT if param.default is param.empty else param.default
        params.append(Param(param.name, _decoder_for(param.name, hints[param.name]), default))
    return tuple(params)


#: The wire signature of every primitive, derived from the abstract methods of :class:`Protocol` (so a new
#: primitive is served as soon as it is declared there). ``commit`` takes nothing from the client.
SIGNATURES: Mapping[str, tuple[Param, ...]] = {name: _signature(name) for name in sorted(PRIMITIVES)}

#: The primitives that change nothing; every other primitive is a write.
_WRITES = frozenset(
    name
    for name in PRIMITIVES
    if name.startswith(("insert_", "update_", "find_and_update_")) or name == "commit"
)
_READS = PRIMITIVES - _WRITES
#: The primitives each role may call; a writer's trial updates are further limited to its own trials.
ROLE_METHODS: Mapping[str, frozenset[str]] = {
    "reader": _READS,
    "writer": _READS
    | {
        "insert_project",
        "insert_group",
        "insert_trial",
        "insert_trials",
        "update_trial",
        "find_and_update_trial",
        "commit",
    },
    "admin": PRIMITIVES,
}


def bind_arguments(method: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``method`` against the table and decode its arguments.

    Raises:
        SchemaError: for an unknown method, too many, unknown, repeated or missing arguments, or a bad value.
    """
    params = SIGNATURES.get(method)
    if params is None:
        raise SchemaError(
            f"unknown method {method[:64]!r}; the server accepts only: {', '.join(sorted(SIGNATURES))}"
        )
    if len(args) > len(params):
        raise SchemaError(f"{method} takes at most {len(params)} arguments, got {len(args)}")
    raw: dict[str, Any] = {}
    for param, value in zip(params, args, strict=False):
        raw[param.name] = value
    names = {p.name for p in params}
    for key, value in kwargs.items():
        if key not in names:
            raise SchemaError(
                f"{method} got an unknown argument {key[:64]!r}; accepted: {', '.join(sorted(names)) or 'none'}"
            )
        if key in raw:
            raise SchemaError(f"{method} got argument {key!r} twice")
        raw[key] = value
    bound: dict[str, Any] = {}
    for param in params:
        if param.name in raw:
            bound[param.name] = param.decode(raw[param.name])
        elif param.default is not _NO_DEFAULT:
            bound[param.name] = param.default
        else:
            raise SchemaError(f"{method} is missing argument {param.name!r}")
    return bound


def result_to_json(value: Any, depth: int = 0) -> Any:
    """A primitive's result as plain data: the structures by :func:`to_json`, containers walked."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, _WIRE_CLASSES):
        return to_json(value)
    if isinstance(value, Series):
        return series_to_json(value)
    if depth < 16 and isinstance(value, (list, tuple)):
        return [result_to_json(v, depth + 1) for v in value]
    if depth < 16 and isinstance(value, Mapping):
        return {str(k): result_to_json(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return result_to_json(value.item(), depth + 1)
    raise SchemaError(f"a result of type {type(value).__name__} cannot be sent over the wire")


def _plain(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)) and depth < 4:
        return [_plain(v, depth + 1) for v in value[:100]]
    return str(value)[:500]


def error_reply(exc: UnitrackError, request_id: int = 0) -> ErrorReply:
    """The wire form ``(kind, message, fields)`` of an error."""
    fields = {str(k): _plain(v) for k, v in exc.fields.items()}
    return ErrorReply(error=exc.kind, message=exc.message, fields=fields, id=request_id)


# ------------------------------------------------------------------------------------------- sessions
@dataclass
class Session:
    """One logged-in connection."""

    user: str
    role: str
    peer: str
    version: int = 1
    owners: dict[str, str | None] = field(default_factory=dict)
    #: Trials this connection wrote since its last commit: what its ``commit`` commits.
    written: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Connection:
    """A connection's place in the server's books."""

    peer: str
    source: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None
    since: float
    #: Inside a password check: the one state in which a connection is not evicted for a newer one.
    verifying: bool = False


def _deny(session: Session, what: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"user {session.user!r} (role {session.role}) may not {what}", user=session.user, role=session.role
    )


def _check_owner_tag(session: Session, update: TrialUpdate) -> None:
    """Only an admin may set or change a trial's owner."""
    if session.role != "admin" and OWNER_TAG in update.tags:
        raise _deny(session, f"set the {OWNER_TAG!r} tag")


class _Throttle:
    """Failed logins, counted per (user name, source address) pair: guesses at one user's password from one
    host slow down only that pair, never a colleague logging in from the same host.

    No delay for the first 3 failures, then 0.25 s doubling to 10 s; a success clears the pair. Memory is
    bounded (the oldest half is forgotten beyond ``max_pairs``).
    """

    def __init__(self, max_pairs: int = 10_000) -> None:
        self.max_pairs = max_pairs
        self._failures: dict[tuple[str, str], tuple[int, float]] = {}

    def delay_s(self, user: str, source: str) -> float:
        count = self._failures.get((user, source), (0, 0.0))[0]
        return 0.0 if count < 3 else min(0.25 * 2 ** (count - 3), 10.0)

    def failed(self, user: str, source: str) -> None:
        if len(self._failures) >= self.max_pairs:
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[: self.max_pairs // 2]:
                del self._failures[key]
        count = self._failures.get((user, source), (0, 0.0))[0]
        self._failures[(user, source)] = (count + 1, time.monotonic())

    def succeeded(self, user: str, source: str) -> None:
        self._failures.pop((user, source), None)


class _Reported:
    """Counts an event and logs it at most once per ``every_s`` (a flood must not flood the log)."""

    def __init__(self, message: str, every_s: float = 60.0) -> None:
        self.message = message
        self.every_s = every_s
        self.count = 0
        self._last = -math.inf

    def __call__(self, *args: Any) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last >= self.every_s:
            logger.warning(self.message + " (%d so far)", *args, self.count)
            self._last = now


class SocketServer:
    """Serve ``backend``'s primitives to authenticated clients.

    Args:
        backend: any Protocol (thread-safe, as every backend is); it is called from ``backend_threads``
            worker threads, never from the event loop.
        users: the users file (read at each login, so added users need no restart).
        host, port: where to listen (port 0 picks a free port; see :attr:`address`).
        ssl_context: a server TLS context (:func:`server_ssl_context`); None for plaintext.
        insecure: allow plaintext on a non-loopback address.
        max_connections: logged-in connections at once; a login beyond it gets ``ServerBusyError`` (the
            client retries).
        max_unauthenticated: connections that have not logged in yet, a cap of their own; when it is full a
            new connection takes the place of the oldest one that is not checking a password.
        login_timeout_s: a connection must log in (TLS handshake included) within this, or it is closed.
        idle_timeout_s: a logged-in connection with no frame for this long is closed.
        read_timeout_s: once a frame's first byte has arrived, the rest must arrive within this; a reply the
            client does not read within this closes the connection.
        max_frame_bytes: the largest frame accepted after login.
        max_login_frame_bytes: the largest frame accepted before login.
        chunk_bytes: replies longer than this travel as parts of this size (protocol version 2 clients).
        backend_threads: worker threads calling the backend.
    """

    def __init__(
        self,
        backend: Protocol,
        users: UserStore,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        insecure: bool = False,
        max_connections: int = 256,
        max_unauthenticated: int = 64,
        login_timeout_s: float = 10.0,
        idle_timeout_s: float = 600.0,
        read_timeout_s: float = 30.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_login_frame_bytes: int = DEFAULT_MAX_LOGIN_FRAME_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        backend_threads: int = 4,
    ) -> None:
        check_bind_address(host, tls=ssl_context is not None, insecure=insecure)
        if not users.load():
            raise ConfigError(
                f"No users in {users.path}; there is no default password. Add one with "
                f"'unitrack user add NAME --users {users.path} --role admin', or start with --init-admin."
            )
        for name, value in (
            ("max_connections", max_connections),
            ("max_unauthenticated", max_unauthenticated),
            ("backend_threads", backend_threads),
            ("chunk_bytes", chunk_bytes),
        ):
            if value < 1:
                raise ConfigError(f"{name}={value} must be at least 1")
        if max_login_frame_bytes < 1024:
            raise ConfigError(f"max_login_frame_bytes={max_login_frame_bytes} is too small for a login frame")
        if chunk_bytes * 2 + 1024 > max_frame_bytes:
            raise ConfigError(
                f"chunk_bytes={chunk_bytes} must be below half of max_frame_bytes={max_frame_bytes}"
            )
        self.backend = backend
        self.users = users
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_unauthenticated = max_unauthenticated
        self.login_timeout_s = login_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.max_login_frame_bytes = max_login_frame_bytes
        self.chunk_bytes = chunk_bytes
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=backend_threads, thread_name_prefix="unitrack-backend"
        )
        self._server: asyncio.Server | None = None
        self._unauthenticated: dict[asyncio.Task[None], _Connection] = {}  # oldest first
        self._authenticated: dict[asyncio.Task[None], _Connection] = {}
        self._throttle = _Throttle()
        self._verifying: asyncio.Semaphore | None = None  # made on the loop (Python 3.9 binds it there)
        # Password checks (scrypt: CPU-bound) on threads of their own, below the event loop's priority: a burst
        # of logins never starves the clients already served.
        self._checker = concurrent.futures.ThreadPoolExecutor(
            max_workers=_VERIFY_AT_ONCE, thread_name_prefix="unitrack-login", initializer=_lower_priority
        )
        self._evicted = _Reported(
            "unauthenticated connection from %s closed for a newer one: more than %d wait"
        )
        self._busy = _Reported("login of %r from %s refused: %d clients are logged in (--max-connections)")
        self._closing = False
        self.address: tuple[str, int] | None = None

    # ----------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; return the real ``(host, port)``."""
        self._verifying = asyncio.Semaphore(_VERIFY_AT_ONCE)
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.login_timeout_s if self.ssl_context else None,
            reuse_address=True,
            backlog=_ACCEPT_PER_TURN,  # asyncio accepts this many connections per turn of the event loop...
        )
        for (
            listening
        ) in self._server.sockets:  # ...and the kernel queues this many more (a flood waits there)
            dup = socket.fromfd(listening.fileno(), listening.family, listening.type)
            try:
                dup.listen(_LISTEN_QUEUE)
            finally:
                dup.close()
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        logger.info(
            "server listening on %s:%d (%s)", *self.address, "TLS" if self.ssl_context else "plaintext"
        )
        return self.address

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled or :meth:`aclose`."""
        if self._server is None:
            await self.start()
        assert self._server is not None  # noqa: S101 - set by start()
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    async def aclose(self) -> None:
        """Stop accepting, drop connections, wait for the backend workers."""
        self._closing = True
        if self._server is not None:
            self._server.close()
            while self._unauthenticated or self._authenticated:  # handlers that started meanwhile too
                pending = [*self._unauthenticated, *self._authenticated]
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            logger.info("server stopped")
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self._checker.shutdown(wait=False)

    @property
    def connections(self) -> tuple[int, int]:
        """``(logged in, not yet logged in)`` connections now."""
        return len(self._authenticated), len(self._unauthenticated)

    # ----------------------------------------------------------------------------------------- connections
    def _admit(self, conn: _Connection) -> bool:
        """Book a new connection among the unauthenticated, evicting the oldest one waiting if they are full."""
        assert conn.task is not None  # noqa: S101 - a handler always runs in a task
        if len(self._unauthenticated) >= self.max_unauthenticated:
            victim = next((c for c in self._unauthenticated.values() if not c.verifying), None)
            if victim is None:
                return False
            assert victim.task is not None  # noqa: S101 - as above
            del self._unauthenticated[victim.task]
            victim.task.cancel()
            self._evicted(victim.peer, self.max_unauthenticated)
        self._unauthenticated[conn.task] = conn
        return True

    def _forget(self, conn: _Connection) -> None:
        if conn.task is not None:
            self._unauthenticated.pop(conn.task, None)
            self._authenticated.pop(conn.task, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cheap until login: one task and one timer per connection, and an abort (no goodbye) at the end, so a
        # flood of connections costs little event-loop time each.
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else str(peer_info)
        source = str(peer_info[0]) if isinstance(peer_info, tuple) else str(peer_info)
        conn = _Connection(peer, source, writer, asyncio.current_task(), time.monotonic())
        if self._closing or not self._admit(conn):
            busy = ServerBusyError("server busy: every connection slot is checking a password; retry later")
            writer.write(encode_frame(error_reply(busy)))
            writer.transport.abort()
            return
        deadline = asyncio.get_running_loop().call_later(self.login_timeout_s, self._expire, conn)
        session: Session | None = None
        try:
            try:
                session = await self._login_phase(conn, reader)
            finally:
                deadline.cancel()
            if session is not None:
                await self._session_phase(session, reader, writer)
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            logger.debug("connection from %s failed: %s", peer, exc)
        except FrameError as exc:  # the stream is out of step: answer, then close
            await self._send_quietly(writer, error_reply(exc))
        except TimeoutError:
            logger.info("connection from %s timed out", peer)
        except (asyncio.CancelledError, _Close):
            pass
        finally:
            self._forget(conn)
            if session is None:
                writer.transport.abort()
            else:
                await self._close_writer(writer)
                logger.info("connection closed from %s (%s)", peer, session.user)

    def _expire(self, conn: _Connection) -> None:
        """The login deadline passed: close the connection unless it has logged in meanwhile."""
        if conn.task is None or self._unauthenticated.get(conn.task) is not conn:
            return
        if conn.verifying:  # its password is being checked: look again in a moment
            asyncio.get_running_loop().call_later(1.0, self._expire, conn)
            return
        logger.debug("connection from %s closed: no login within %g s", conn.peer, self.login_timeout_s)
        conn.task.cancel()

    async def _login_phase(self, conn: _Connection, reader: asyncio.StreamReader) -> Session | None:
        """Frames before login (small ones only): pings, then a login. Returns the session, or None when the
        connection should close."""
        while True:
            try:
                payload = await read_frame(reader, self.max_login_frame_bytes, None, None)
            except FrameError as exc:
                if "limit" not in exc.fields:
                    raise
                raise FrameError(
                    f"frame of {exc.fields.get('size')} bytes exceeds the limit of {self.max_login_frame_bytes} "
                    "bytes before login; log in first (a login frame is small)",
                    size=exc.fields.get("size"),
                    limit=self.max_login_frame_bytes,
                ) from None
            if payload is None:
                return None
            try:
                message = decode_payload(payload)
            except FrameError as exc:
                await self._write(conn.writer, [encode_frame(error_reply(exc))])
                continue
            request_id = getattr(message, "id", 0)
            if isinstance(message, Ping):
                await self._write(conn.writer, [encode_frame(Pong(id=request_id))])
            elif isinstance(message, Login):
                session = await self._login(conn, message)
                if session is not None:
                    return session
            else:
                denied = AuthenticationError("log in first: the first message of a connection is a login")
                await self._write(conn.writer, [encode_frame(error_reply(denied, request_id))])

    async def _session_phase(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            payload = await read_frame(reader, self.max_frame_bytes, self.idle_timeout_s, self.read_timeout_s)
            if payload is None:
                return
            if len(payload) <= _DECODE_ON_LOOP:  # pings are answered here, never queued behind backend work
                try:
                    message: Message | bytes = decode_payload(payload)
                except FrameError as exc:
                    await self._write(writer, [encode_frame(error_reply(exc))])
                    continue
                if isinstance(message, Ping):
                    await self._write(writer, [encode_frame(Pong(id=message.id))])
                    continue
            else:
                message = payload
            frames = await loop.run_in_executor(self._executor, self._work, session, message)
            await self._write(writer, frames)

    async def _write(self, writer: asyncio.StreamWriter, frames: list[bytes]) -> None:
        """Send frames, waiting for the client to take each (a client that stops reading is dropped)."""
        for frame in frames:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), self.read_timeout_s)

    async def _send_quietly(self, writer: asyncio.StreamWriter, message: Message) -> None:
        try:
            await asyncio.wait_for(write_frame(writer, message), min(self.read_timeout_s, 5.0))
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            pass

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            pass

    # ----------------------------------------------------------------------------------------- login
    async def _login(self, conn: _Connection, message: Login) -> Session | None:
        """Check a login and answer it: the session when it succeeded, None when the client may try again.

        Raises:
            _Close: when the connection should end (protocol mismatch, no room, users file unreadable).
        """
        writer = conn.writer
        user = message.user[:64]
        delay = self._throttle.delay_s(user, conn.source)
        if delay:
            await asyncio.sleep(delay)  # the connection can still be evicted meanwhile
        if not 1 <= message.version <= PROTOCOL_VERSION:
            mismatch = ProtocolMismatchError(
                f"the client speaks wire protocol version {message.version}; this server speaks 1 to "
                f"{PROTOCOL_VERSION}. Install the same unitrack version on both sides."
            )
            await self._write(writer, [encode_frame(error_reply(mismatch, message.id))])
            raise _Close
        if len(message.user) > 64 or len(message.password) > 1024:  # bounded work per attempt
            name, password = "", ""
        else:
            name, password = message.user, message.password
        assert self._verifying is not None  # noqa: S101 - made in start()
        async with self._verifying:  # scrypt costs 16 MiB and tens of ms: a few at a time
            conn.verifying = True
            try:
                role = await asyncio.get_running_loop().run_in_executor(
                    self._checker, self.users.verify, name, password
                )
            except UnitrackError as exc:
                logger.error("cannot read the users file: %s", exc)
                error = RemoteError("the server cannot check passwords now; retry later")
                await self._write(writer, [encode_frame(error_reply(error, message.id))])
                raise _Close from exc
            finally:
                conn.verifying = False
        if role is None:
            self._throttle.failed(user, conn.source)
            logger.info("authentication failed for user %r from %s", user, conn.peer)
            denied = AuthenticationError("unknown user or wrong password")
            await self._write(writer, [encode_frame(error_reply(denied, message.id))])
            return None
        self._throttle.succeeded(user, conn.source)
        if len(self._authenticated) >= self.max_connections:
            self._busy(user, conn.peer, len(self._authenticated))
            busy = ServerBusyError(
                f"server busy: {len(self._authenticated)} clients are logged in, the most it serves; retry "
                "later (the server's --max-connections sets the limit)"
            )
            await self._write(writer, [encode_frame(error_reply(busy, message.id))])
            raise _Close
        assert conn.task is not None  # noqa: S101 - a handler always runs in a task
        self._unauthenticated.pop(conn.task, None)
        self._authenticated[conn.task] = conn
        logger.info("user %r logged in from %s as %s", message.user, conn.peer, role)
        reply = Reply(result={"user": message.user, "role": role, "version": PROTOCOL_VERSION}, id=message.id)
        await self._write(writer, [encode_frame(reply)])
        return Session(message.user, role, conn.peer, version=message.version)

    # ----------------------------------------------------------------------------------------- calls
    def _work(self, session: Session, message: Message | bytes) -> list[bytes]:
        """Runs on a backend thread: decode, check, call the backend, encode the reply (in parts if large)."""
        request_id = getattr(message, "id", 0)
        try:
            if isinstance(message, bytes):
                message = decode_payload(message)
                request_id = getattr(message, "id", 0)
            if isinstance(message, Call):
                reply: Message = Reply(result=self._call(session, message), id=request_id)
            elif isinstance(message, Batch):
                reply = Reply(result=self._batch(session, message), id=request_id)
            elif isinstance(message, Ping):
                reply = Pong(id=request_id)
            elif isinstance(message, Login):
                reply = ErrorReply(error="RemoteError", message="already logged in", id=request_id)
            else:
                raise FrameError(f"a client may not send a {message.KIND} message")
            pieces = encode_pieces(reply)
        except UnitrackError as exc:
            return [encode_frame(error_reply(exc, request_id))]
        except Exception:  # noqa: BLE001 - a backend bug must not stop the server; logged with its traceback
            logger.exception("backend failed on a request from %s", session.peer)
            err = RemoteError("internal server error; the server log has the details")
            return [encode_frame(error_reply(err, request_id))]
        size = sum(map(len, pieces))
        if size > self.chunk_bytes and session.version < 2:
            too_big = FrameError(
                f"the reply has {size} bytes, more than one frame holds, and this client cannot read replies "
                "in parts; upgrade unitrack on the client",
                size=size,
                limit=self.chunk_bytes,
            )
            return [encode_frame(error_reply(too_big, request_id))]
        return encode_frames(reply, self.chunk_bytes, pieces)

    def _call(self, session: Session, message: Call) -> Any:
        method = message.method
        if method not in SIGNATURES:
            bind_arguments(method, [], {})  # raises the "unknown method" error
        if method not in ROLE_METHODS[session.role]:
            raise _deny(session, f"call {method}")
        args = bind_arguments(method, message.args, message.kwargs)
        update = args.get("update")
        if isinstance(update, TrialUpdate) and message.writer is not None and message.seq is not None:
            args["update"] = update = dataclasses.replace(update, writer=message.writer, seq=message.seq)
        is_writer = session.role == "writer"
        if isinstance(update, TrialUpdate):
            _check_owner_tag(session, update)
        if is_writer and method == "insert_trial":
            trial: Trial = args["trial"]
            args["trial"] = dataclasses.replace(trial, tags={**trial.tags, OWNER_TAG: session.user})
        if is_writer and method == "insert_trials":
            args["trials"] = [
                dataclasses.replace(t, tags={**t.tags, OWNER_TAG: session.user}) for t in args["trials"]
            ]
        if is_writer and method == "find_and_update_trial":
            query = args["query"]
            pairs = list(query.items()) if isinstance(query, dict) else list(query or [])
            args["query"] = [*pairs, (f"tags.{OWNER_TAG}", session.user)]
        if method == "commit":
            return self._commit(session)
        if is_writer and method == "update_trial":
            self._check_owner(session, args["uid"])
        result = getattr(self.backend, method)(**args)  # ``method`` is a key of SIGNATURES, not wire text
        if method == "update_trial":
            session.written.add(args["uid"])
        elif method in ("insert_trial", "find_and_update_trial") and isinstance(result, Trial):
            session.written.add(result.uid)
        elif method == "insert_trials":
            session.written.update(t.uid for t, stored in zip(args["trials"], result, strict=True) if stored)
        return result_to_json(result)

    def _commit(self, session: Session) -> None:
        """Commit what this connection wrote since its last commit: only its trials (nothing when none)."""
        if not session.written:
            return
        trials = frozenset(session.written)
        session.written.clear()
        try:
            self.backend.commit(trials=trials)
        except BaseException:
            session.written |= trials
            raise

    def _check_owner(self, session: Session, uid: str) -> None:
        """Raises unless ``session``'s user owns trial ``uid``."""
        if uid not in session.owners:
            found = self.backend.find_trial_summaries({"uid": uid})  # the tags only: no points read
            if not found:
                return  # the backend's update raises its own NotFoundError
            owner = found[0].tags.get(OWNER_TAG)
            session.owners[uid] = owner if isinstance(owner, str) else None
        if session.owners[uid] != session.user:
            raise _deny(session, f"update trial {uid} (it belongs to someone else)")

    def _batch(self, session: Session, message: Batch) -> int:
        if "update_trial" not in ROLE_METHODS[session.role]:
            raise _deny(session, "call update_trial")
        items: list[tuple[str, TrialUpdate]] = []
        for item in message.items:
            if not isinstance(item, list) or len(item) != 2:
                raise SchemaError("a batch item is [uid, update]")
            bound = bind_arguments("update_trial", item, {})
            _check_owner_tag(session, bound["update"])
            items.append((bound["uid"], bound["update"]))
        if session.role == "writer":
            for uid, _ in items:
                self._check_owner(session, uid)
        self.backend.update_trials(items)  # one call: a backend may write the batch in one transaction
        session.written.update(uid for uid, _ in items)
        return len(items)


class _Close(Exception):  # noqa: N818 - a signal between methods, never raised to users
    """End this connection quietly (its client has been told why)."""


#: Connections accepted per turn of the event loop (so a flood of them never holds the loop for long), and
#: connections the kernel holds for us meanwhile.
_ACCEPT_PER_TURN = 16
_LISTEN_QUEUE = 4096
#: Password checks running at once (scrypt: 16 MiB and tens of milliseconds each).
_VERIFY_AT_ONCE = max(1, min(4, (os.cpu_count() or 2) - 1))  # a core is left to the event loop


def _lower_priority() -> None:
    """Lower the calling thread's priority a little (Linux schedules threads one by one; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 5))
        except OSError as exc:
            logger.debug("cannot lower the priority of the password-checking thread: %s", exc)


#: Frames up to this size are decoded on the event loop (so pings never wait for a backend thread).
_DECODE_ON_LOOP = 16 * 1024


# ------------------------------------------------------------------------------------------- running
class ServerThread:
    """A :class:`SocketServer` on its own event loop in a background thread (tests, embedding).

    Example:
        >>> # with ServerThread(backend, users) as srv: SocketProtocol(f"socket://u@127.0.0.1:{srv.port}")
    """

    def __init__(
        self, backend: Protocol, users: UserStore, host: str = "127.0.0.1", port: int = 0, **options: Any
    ):
        self.server = SocketServer(backend, users, host, port, **options)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._serving: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="unitrack-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, which re-raises it
            self._error = exc
            self._started.set()
            return
        self._serving = self._loop.create_task(self.server.serve_forever())
        self._started.set()
        self._loop.run_until_complete(self._serving)
        self._loop.run_until_complete(self.server.aclose())
        leftover = asyncio.all_tasks(self._loop)  # e.g. a connection accepted while stopping
        for task in leftover:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        self._loop.close()

    def start(self) -> ServerThread:
        """Start and return once the server accepts connections."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server.address is not None  # noqa: S101 - set once started
        return self.server.address[1]

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._thread.is_alive() and self._serving is not None:
            try:
                self._loop.call_soon_threadsafe(self._serving.cancel)  # aclose() then ends the connections
            except RuntimeError:  # the loop has already finished
                pass
            self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_track_server(
    protocol: Protocol | str,
    hostname: str = "127.0.0.1",
    port: int = 0,
    security_layer: str | None = None,
    *,
    users: UserStore | str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    on_listening: Callable[[tuple[str, int]], None] | None = None,
    **options: Any,
) -> None:
    """track's entry point: serve ``protocol`` (a Protocol, or a backend URI as track took) until SIGINT/SIGTERM.

    ``security_layer`` accepts ``None`` or ``'ssl'`` (with ``ssl_context``); track's ``'AES'`` layer is refused.
    A backend opened here from a URI is closed when the server stops.

    Raises:
        ConfigError: for the AES layer, ``'ssl'`` without a context, or no users file.
    """
    if security_layer is not None and security_layer.lower() == "aes":
        raise ConfigError(
            "security_layer=AES is not supported (it was unauthenticated and malleable); use TLS: "
            "unitrack serve --tls-cert/--tls-key or --tls-self-signed"
        )
    if security_layer is not None and security_layer.lower() == "ssl" and ssl_context is None:
        raise ConfigError("security_layer='ssl' needs ssl_context= (see server_ssl_context)")
    if users is None:
        raise ConfigError("start_track_server needs users= (a users file; see 'unitrack user add')")
    store = users if isinstance(users, UserStore) else UserStore(users)
    owned = not isinstance(
        protocol, Protocol
    )  # track's form: start_track_server("file://db.json", host, port)
    backend = get_protocol(protocol) if not isinstance(protocol, Protocol) else protocol
    server = SocketServer(backend, store, hostname, port, ssl_context=ssl_context, **options)

    async def main() -> None:
        address = await server.start()
        # What the process holds now (modules, the backend) lives as long as it: keep it out of the cyclic
        # collector, whose full passes would otherwise stop the event loop for tens of ms under a flood of
        # connections.
        gc.collect()
        gc.freeze()
        # Worker threads run Python code too: hand the interpreter lock to the event loop within 1 ms (not 5)
        # when it wants it, so a long reply being encoded does not hold up pings and small requests.
        sys.setswitchinterval(0.001)
        if on_listening is not None:
            on_listening(address)
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(server.serve_forever())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, serving.cancel)
        try:
            await serving
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await server.aclose()

    try:
        asyncio.run(main())
    finally:
        if owned:
            backend.close()


# ------------------------------------------------------------------------------------------- security
def check_bind_address(host: str, *, tls: bool, insecure: bool) -> None:
    """Refuse plaintext on a non-loopback address unless ``insecure``.

    Raises:
        ConfigError: naming the fix (TLS, or ``--insecure`` on a trusted network).
    """
    if not tls and not insecure and not is_loopback(host):
        raise ConfigError(
            f"Refusing to serve plaintext on {host!r}: passwords and data would cross the network in clear. "
            "Use --tls-cert/--tls-key or --tls-self-signed DIR, or --insecure on a trusted network."
        )


def server_ssl_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """A TLS >= 1.2 server context for a certificate chain and its key.

    Raises:
        ConfigError: when the files cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"Cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from exc
    return context


def certificate_fingerprint(cert_file: str | os.PathLike[str]) -> str:
    """SHA-256 of a PEM certificate's DER bytes, as hex (what clients pin with ``?fingerprint=``)."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text(encoding="ascii"))
    return hashlib.sha256(der).hexdigest()


def generate_self_signed(
    folder: str | os.PathLike[str], hostnames: tuple[str, ...] = ()
) -> tuple[Path, Path, str]:
    """Create (or reuse) ``server.key`` (0600) and a self-signed ``server.crt`` in ``folder``.

    The certificate names ``localhost``, ``127.0.0.1``, ``::1`` and ``hostnames``.

    Returns:
        ``(cert_path, key_path, sha256_fingerprint_hex)``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = root / "server.crt", root / "server.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path, certificate_fingerprint(cert_path)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unitrack serve")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, certificate_fingerprint(cert_path)
