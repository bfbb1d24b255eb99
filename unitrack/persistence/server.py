"""``unitrack serve``: an asyncio server exposing one backend's storage primitives to ``socket://`` clients.

What it guarantees (against track's ``SocketServer``, SEED_NOTES S12/S13):

- Only the primitives in :data:`~unitrack.persistence.protocol.PRIMITIVES` can be called, through an explicit
  table with typed, validated arguments; a name from the wire is never passed to ``getattr``. ``commit`` takes
  no arguments over the wire (no client-chosen path).
- Frames are size-limited before allocation and decoded as JSON only (:mod:`unitrack.persistence.wire`).
- Every connection logs in once (scrypt-hashed users file, :mod:`unitrack.persistence.users`), with roles and
  trial ownership; repeated failures are slowed down without blocking the event loop.
- Transport security is TLS (>= 1.2) from the ``ssl`` module; a self-signed certificate can be generated and its
  fingerprint pinned by clients. Binding a non-loopback address without TLS needs ``insecure=True``.
- Backend calls run on one worker thread (serialized, the event loop never blocks); per-connection idle and
  read timeouts and a connection limit bound what one client can hold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import hashlib
import ipaddress
import logging
import math
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unitrack.errors import (
    AuthenticationError,
    ConfigError,
    FrameError,
    PermissionDeniedError,
    RemoteError,
    SchemaError,
    UnitrackError,
)
from unitrack.persistence.protocol import PRIMITIVES, Protocol
from unitrack.persistence.query import Query, normalize_query
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, request_from_json, series_to_json
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.users import UserStore
from unitrack.persistence.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    Batch,
    Call,
    ErrorReply,
    Login,
    Message,
    Ping,
    Pong,
    Reply,
    decode_payload,
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


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(f"argument 'auto_increment' must be true or false, not {value!r}")
    return value


_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    """One typed argument of a primitive."""

    name: str
    decode: Callable[[Any], Any]
    default: Any = _NO_DEFAULT


#: The wire signature of every primitive. ``commit`` takes nothing from the client.
SIGNATURES: Mapping[str, tuple[Param, ...]] = {
    "insert_project": (Param("project", _decode("project", Project)),),
    "insert_group": (Param("group", _decode("group", TrialGroup)),),
    "insert_trial": (Param("trial", _decode("trial", Trial)), Param("auto_increment", _bool, False)),
    "find_projects": (Param("query", _query, None),),
    "find_groups": (Param("query", _query, None),),
    "find_trials": (Param("query", _query, None),),
    "find_trial_summaries": (Param("query", _query, None),),
    "find_series": (Param("request", request_from_json),),
    "update_trial": (Param("uid", _uid), Param("update", _decode("update", TrialUpdate))),
    "update_group": (Param("uid", _uid), Param("update", _decode("update", GroupUpdate))),
    "find_and_update_trial": (Param("query", _query), Param("update", _decode("update", TrialUpdate))),
    "find_and_update_group": (Param("query", _query), Param("update", _decode("update", GroupUpdate))),
    "commit": (),
}

#: How each primitive is called: explicit, never ``getattr`` with a name from the wire.
_CALLS: Mapping[str, Callable[[Protocol, dict[str, Any]], Any]] = {
    "insert_project": lambda b, a: b.insert_project(a["project"]),
    "insert_group": lambda b, a: b.insert_group(a["group"]),
    "insert_trial": lambda b, a: b.insert_trial(a["trial"], auto_increment=a["auto_increment"]),
    "find_projects": lambda b, a: b.find_projects(a["query"]),
    "find_groups": lambda b, a: b.find_groups(a["query"]),
    "find_trials": lambda b, a: b.find_trials(a["query"]),
    "find_trial_summaries": lambda b, a: b.find_trial_summaries(a["query"]),
    "find_series": lambda b, a: b.find_series(a["request"]),
    "update_trial": lambda b, a: b.update_trial(a["uid"], a["update"]),
    "update_group": lambda b, a: b.update_group(a["uid"], a["update"]),
    "find_and_update_trial": lambda b, a: b.find_and_update_trial(a["query"], a["update"]),
    "find_and_update_group": lambda b, a: b.find_and_update_group(a["query"], a["update"]),
    "commit": lambda b, a: b.commit(),
}

if set(SIGNATURES) != PRIMITIVES or set(_CALLS) != PRIMITIVES:  # pragma: no cover - caught by the test suite
    raise RuntimeError(f"server tables do not match the Protocol primitives {sorted(PRIMITIVES)}")

_READS = frozenset({"find_projects", "find_groups", "find_trials", "find_trial_summaries", "find_series"})
#: The primitives each role may call; a writer's trial updates are further limited to its own trials.
ROLE_METHODS: Mapping[str, frozenset[str]] = {
    "reader": _READS,
    "writer": _READS
    | {"insert_project", "insert_group", "insert_trial", "update_trial", "find_and_update_trial", "commit"},
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


def _result_to_json(value: Any) -> Any:
    if isinstance(value, (Project, TrialGroup, Trial)):
        return to_json(value)
    if isinstance(value, list):
        return [series_to_json(v) if isinstance(v, Series) else to_json(v) for v in value]
    return None


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
    owners: dict[str, str | None] = field(default_factory=dict)


def _deny(session: Session, what: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"user {session.user!r} (role {session.role}) may not {what}", user=session.user, role=session.role
    )


def _check_owner_tag(session: Session, update: TrialUpdate) -> None:
    """Only an admin may set or change a trial's owner."""
    if session.role != "admin" and OWNER_TAG in update.tags:
        raise _deny(session, f"set the {OWNER_TAG!r} tag")


class SocketServer:
    """Serve ``backend``'s primitives to authenticated clients.

    Args:
        backend: any Protocol; it is called from one worker thread only.
        users: the users file (read at each login, so added users need no restart).
        host, port: where to listen (port 0 picks a free port; see :attr:`address`).
        ssl_context: a server TLS context (:func:`server_ssl_context`); None for plaintext.
        insecure: allow plaintext on a non-loopback address.
        max_connections: connections beyond this are refused with an error.
        idle_timeout_s: a connection with no frame for this long is closed.
        read_timeout_s: once a frame has started, the rest must arrive within this.
        max_frame_bytes: the largest frame accepted.
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
        idle_timeout_s: float = 600.0,
        read_timeout_s: float = 30.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        check_bind_address(host, tls=ssl_context is not None, insecure=insecure)
        if not users.load():
            raise ConfigError(
                f"No users in {users.path}; there is no default password. Add one with "
                f"'unitrack user add NAME --users {users.path} --role admin', or start with --init-admin."
            )
        self.backend = backend
        self.users = users
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="unitrack-backend"
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._failures: dict[str, tuple[int, float]] = {}
        self._closing = False
        self.address: tuple[str, int] | None = None

    # ----------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; return the real ``(host, port)``."""
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.read_timeout_s if self.ssl_context else None,
            reuse_address=True,
        )
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
        """Stop accepting, drop connections, wait for the backend worker."""
        self._closing = True
        if self._server is not None:
            self._server.close()
            while self._connections:  # handlers that started meanwhile are cancelled too
                pending = list(self._connections)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            logger.info("server stopped")
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    # ----------------------------------------------------------------------------------------- connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else str(peer_info)
        if self._closing or len(self._connections) >= self.max_connections:
            logger.warning("connection from %s refused: %d connections open", peer, len(self._connections))
            try:
                await self._send_quietly(
                    writer,
                    ErrorReply(error="RemoteError", message="server busy: too many connections; retry later"),
                )
            finally:
                await self._close_writer(writer)
            return
        if task is not None:
            self._connections.add(task)
        logger.info("connection opened from %s", peer)
        session: Session | None = None
        try:
            while True:
                try:
                    payload = await read_frame(
                        reader, self.max_frame_bytes, self.idle_timeout_s, self.read_timeout_s
                    )
                except TimeoutError:
                    logger.info("connection from %s timed out", peer)
                    break
                except FrameError as exc:  # the stream is out of step: answer, then close
                    await self._send_quietly(writer, error_reply(exc))
                    break
                if payload is None:
                    break
                try:
                    message = decode_payload(payload)
                except FrameError as exc:
                    await write_frame(writer, error_reply(exc))
                    continue
                reply, session = await self._answer(message, session, peer)
                await write_frame(writer, reply, self.max_frame_bytes)
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            logger.debug("connection from %s failed: %s", peer, exc)
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            await self._close_writer(writer)
            logger.info("connection closed from %s", peer)

    async def _send_quietly(self, writer: asyncio.StreamWriter, message: Message) -> None:
        try:
            await asyncio.wait_for(write_frame(writer, message), self.read_timeout_s)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            pass

    @staticmethod
    async def _close_writer(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
            pass

    async def _answer(
        self, message: Message, session: Session | None, peer: str
    ) -> tuple[Message, Session | None]:
        request_id = getattr(message, "id", 0)
        if isinstance(message, Ping):
            return Pong(id=request_id), session
        if isinstance(message, Login):
            if session is not None:
                return ErrorReply(error="RemoteError", message="already logged in", id=request_id), session
            return await self._login(message, peer)
        if session is None:
            denied = AuthenticationError("log in first: the first message of a connection is a login")
            return error_reply(denied, request_id), None
        try:
            if isinstance(message, Call):
                result = await self._call(session, message)
                return Reply(result=result, id=request_id), session
            if isinstance(message, Batch):
                count = await self._batch(session, message)
                return Reply(result=count, id=request_id), session
            raise FrameError(f"a client may not send a {message.KIND} message")
        except UnitrackError as exc:
            return error_reply(exc, request_id), session
        except Exception:  # noqa: BLE001 - a backend bug must not stop the server; logged with its traceback
            logger.exception("backend failed on a request from %s", peer)
            err = RemoteError("internal server error; the server log has the details")
            return error_reply(err, request_id), session

    # ----------------------------------------------------------------------------------------- login
    def _delay_s(self, *keys: str) -> float:
        """Growing delay after repeated failures: none for the first 2, then 0.25 s doubling to 10 s."""
        count = max((self._failures.get(k, (0, 0.0))[0] for k in keys), default=0)
        return 0.0 if count < 3 else min(0.25 * 2 ** (count - 3), 10.0)

    def _record_failure(self, *keys: str) -> None:
        if len(self._failures) > 10_000:  # bounded memory: forget the oldest half
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5_000]:
                del self._failures[key]
        now = time.monotonic()
        for key in keys:
            self._failures[key] = (self._failures.get(key, (0, now))[0] + 1, now)

    async def _login(self, message: Login, peer: str) -> tuple[Message, Session | None]:
        host = peer.rsplit(":", 1)[0]
        keys = (f"user:{message.user[:64]}", f"peer:{host}")
        delay = self._delay_s(*keys)
        if delay:
            await asyncio.sleep(delay)
        if len(message.user) > 64 or len(message.password) > 1024:  # bounded work per attempt
            user, password = "", ""
        else:
            user, password = message.user, message.password
        try:
            role = await asyncio.to_thread(self.users.verify, user, password)
        except UnitrackError as exc:
            logger.error("cannot read the users file: %s", exc)
            return error_reply(RemoteError("the server cannot check passwords now"), message.id), None
        if role is None:
            self._record_failure(*keys)
            logger.info("authentication failed for user %r from %s", message.user[:64], peer)
            err = AuthenticationError("unknown user or wrong password")
            return error_reply(err, message.id), None
        for key in keys:
            self._failures.pop(key, None)
        logger.info("user %r logged in from %s as %s", message.user, peer, role)
        return Reply(result={"user": message.user, "role": role}, id=message.id), Session(
            message.user, role, peer
        )

    # ----------------------------------------------------------------------------------------- calls
    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _call(self, session: Session, message: Call) -> Any:
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
        if is_writer and method == "find_and_update_trial":
            query = args["query"]
            pairs = list(query.items()) if isinstance(query, dict) else list(query or [])
            args["query"] = [*pairs, (f"tags.{OWNER_TAG}", session.user)]

        def work() -> Any:
            if is_writer and method == "update_trial":
                self._check_owner(session, args["uid"])
            return _CALLS[method](self.backend, args)

        return _result_to_json(await self._run(work))

    def _check_owner(self, session: Session, uid: str) -> None:
        """Runs on the backend thread. Raises unless ``session``'s user owns trial ``uid``."""
        if uid not in session.owners:
            found = self.backend.find_trials({"uid": uid})
            if not found:
                return  # the backend's update raises its own NotFoundError
            owner = found[0].tags.get(OWNER_TAG)
            session.owners[uid] = owner if isinstance(owner, str) else None
        if session.owners[uid] != session.user:
            raise _deny(session, f"update trial {uid} (it belongs to someone else)")

    async def _batch(self, session: Session, message: Batch) -> int:
        if "update_trial" not in ROLE_METHODS[session.role]:
            raise _deny(session, "call update_trial")
        items: list[tuple[str, TrialUpdate]] = []
        for item in message.items:
            if not isinstance(item, list) or len(item) != 2:
                raise SchemaError("a batch item is [uid, update]")
            bound = bind_arguments("update_trial", item, {})
            _check_owner_tag(session, bound["update"])
            items.append((bound["uid"], bound["update"]))

        def work() -> int:
            if session.role == "writer":
                for uid, _ in items:
                    self._check_owner(session, uid)
            for uid, update in items:
                self.backend.update_trial(uid, update)
            return len(items)

        result: int = await self._run(work)
        return result


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
