"""``socket://``: the client of ``unitrack serve``, a Protocol like any other.

URI: ``socket://user[:password]@host:port[?fingerprint=HEX&cafile=F&batch_size=N&flush_interval_s=S]``.

- **Credentials**: the password comes from the URI, else ``$UNITRACK_PASSWORD``, else the credentials file
  ``$UNITRACK_HOME/credentials`` (default ``~/.unitrack/credentials``; lines ``user@host:port password`` or
  ``user password``; refused unless mode 0600). It is never logged.
- **Transport**: ``?fingerprint=`` pins the server certificate's SHA-256 (the self-signed case), ``?cafile=``
  verifies against a CA (hostname checked), ``?tls=true`` uses the system CAs. Plaintext is allowed only to a
  loopback host unless ``?insecure=true``. ``security_layer=AES`` is refused: use TLS.
- **Batching**: ``update_trial`` calls that only log (metrics, chronos, metadata) on trials this client already
  knows (it inserted them, or updated them once synchronously) are buffered and sent by a background thread every ``batch_size`` updates or
  ``flush_interval_s`` seconds, coalesced per trial. Each sent update carries ``(writer, seq)``, so a batch resent
  after a lost connection is applied exactly once. The buffer is bounded (``max_buffer``; a full buffer blocks
  the caller, with a warning). Reads and inserts flush first (read-your-writes); ``commit``/``close`` flush.
  An error in a background batch is logged and raised by the next call.
- **Reconnection**: a lost connection is re-established with exponential backoff for up to
  ``retry_timeout_s``; reads, inserts and stamped updates are retried, ``find_and_update_*`` are not once sent
  (they may have run): :class:`ConnectionLostError`.
- Errors from the server are re-raised as the same :class:`UnitrackError` subclass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import logging
import os
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from unitrack.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLostError,
    FrameError,
    SchemaError,
    UnitrackError,
    error_from_wire,
)
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.protocol import Protocol, TrialRef
from unitrack.persistence.query import Query, normalize_query
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest, request_to_json, series_from_json
from unitrack.persistence.structure import GroupUpdate, MetricPoint, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri, option_flag, option_float
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
    is_loopback,
    recv_frame,
    send_frame,
)

__all__ = ["PASSWORD_ENV", "SocketProtocol", "credentials_path", "merge_updates"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T", Project, TrialGroup, Trial)

PASSWORD_ENV = "UNITRACK_PASSWORD"  # noqa: S105 - the name of a variable, not a password
HOME_ENV = "UNITRACK_HOME"
#: About how many points one find_series reply carries (a reply must fit in one frame).
SERIES_POINTS_PER_CALL = 100_000
_RESERVED_FIELDS = frozenset({"message", "fields", "kind", "args", "with_traceback", "add_note"})


def credentials_path() -> Path:
    """``$UNITRACK_HOME/credentials``, default ``~/.unitrack/credentials``."""
    home = os.environ.get(HOME_ENV)
    return Path(home) / "credentials" if home else Path.home() / ".unitrack" / "credentials"


def _password_from_file(user: str, host: str, port: int) -> str | None:
    path = credentials_path()
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"Credentials file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    fallback = None
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or parts[0].startswith("#"):
            continue
        who, secret = parts
        if who == f"{user}@{host}:{port}":
            return secret
        if who == user:
            fallback = secret
    return fallback


def merge_updates(updates: Sequence[TrialUpdate | tuple[MetricPoint, ...]]) -> TrialUpdate:
    """One update with the effect of applying ``updates`` in order (mappings merge, sequences append).

    A tuple of metric points stands for ``TrialUpdate(metrics=points)`` (the fast path of logging).
    """
    if len(updates) == 1 and isinstance(updates[0], TrialUpdate):
        return updates[0]
    parameters: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    metrics: list[Any] = []
    chronos: list[Any] = []
    errors: list[str] = []
    status = project_id = group_id = description = None
    for u in updates:
        if isinstance(u, tuple):
            metrics.extend(u)
            continue
        parameters.update(u.parameters)
        metadata.update(u.metadata)
        tags.update(u.tags)
        metrics.extend(u.metrics)
        chronos.extend(u.chronos)
        errors.extend(u.errors)
        status = u.status if u.status is not None else status
        project_id = u.project_id if u.project_id is not None else project_id
        group_id = u.group_id if u.group_id is not None else group_id
        description = u.description if u.description is not None else description
    return TrialUpdate(
        parameters=parameters,
        metadata=metadata,
        tags=tags,
        metrics=tuple(metrics),
        chronos=tuple(chronos),
        status=status,
        errors=tuple(errors),
        project_id=project_id,
        group_id=group_id,
        description=description,
    )


def _int_option(uri: ParsedURI, name: str, default: int) -> int:
    raw = uri.option(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"option {name}={raw!r} in {uri.redacted()} must be a positive integer")
    return value


class SocketProtocol(Protocol):
    """A Protocol whose primitives run on a ``unitrack serve`` server.

    Args:
        uri: ``socket://user[:password]@host:port[?options]``.
        strict: accepted for symmetry; the server's backend decides.
        password: overrides the URI, environment and credentials file.
    """

    def __init__(self, uri: str | ParsedURI, strict: bool = True, *, password: str | None = None) -> None:
        super().__init__()
        self.uri = as_uri(uri)
        self.strict = strict
        u = self.uri
        layer = u.option("security_layer")
        if layer is not None and layer.lower() == "aes":
            raise ConfigError(
                f"security_layer=AES in {u.redacted()} is not supported (track's AES layer was unauthenticated "
                "and malleable); use TLS: start the server with --tls-self-signed and pass ?fingerprint=<sha256>"
            )
        if not u.host or u.port is None:
            raise ConfigError(f"{u.redacted()} needs a host and a port: socket://user@host:port")
        if not u.username:
            raise ConfigError(f"{u.redacted()} needs a user name: socket://user@{u.host}:{u.port}")
        self.user = u.username
        self.host, self.port = u.host, u.port
        self._password = (
            password
            or u.password
            or os.environ.get(PASSWORD_ENV)
            or _password_from_file(self.user, self.host, self.port)
        )
        if self._password is None:
            raise ConfigError(
                f"No password for {self.user!r} at {self.host}:{self.port}: set {PASSWORD_ENV}, or add "
                f"'{self.user}@{self.host}:{self.port} PASSWORD' to {credentials_path()} (mode 0600)."
            )
        fingerprint = u.option("fingerprint")
        self._fingerprint = fingerprint.replace(":", "").lower() if fingerprint else None
        self._cafile = u.option("cafile")
        self._tls = bool(self._fingerprint or self._cafile) or option_flag(u, "tls", layer is not None)
        if not self._tls and not option_flag(u, "insecure", False) and not is_loopback(self.host):
            raise ConfigError(
                f"Refusing plaintext to {self.host}: pass ?fingerprint=<sha256> or ?cafile=<ca.pem> for TLS, "
                "or ?insecure=true on a trusted network."
            )
        self.batch_size = _int_option(u, "batch_size", 1000)
        self.max_buffer = _int_option(u, "max_buffer", 100_000)
        self.flush_interval_s = option_float(u, "flush_interval_s", 0.1)
        self.timeout_s = option_float(u, "timeout_s", 60.0)
        self.retry_timeout_s = option_float(u, "retry_timeout_s", 60.0)
        self.max_frame_bytes = _int_option(u, "max_frame_bytes", DEFAULT_MAX_FRAME_BYTES)
        self.writer_id = uuid.uuid4().hex
        self.role: str | None = None
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._io_lock = threading.RLock()
        self._cond = threading.Condition()
        self._pending: list[tuple[str, TrialUpdate | tuple[MetricPoint, ...]]] = []
        self._known: set[str] = set()
        self._failed: UnitrackError | None = None
        self._warned_full = False
        self._closed = False
        self._request(Ping(id=next(self._ids)))  # connect and log in now (retried like any request)
        self._flusher = threading.Thread(target=self._flush_loop, name="unitrack-socket-flush", daemon=True)
        self._flusher.start()

    def __repr__(self) -> str:
        return f"SocketProtocol({self.uri.redacted()!r})"

    # ------------------------------------------------------------------------------------------ transport
    def _tls_context(self) -> ssl.SSLContext:
        if self._fingerprint:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the pinned fingerprint is checked right after the handshake
        else:
            context = ssl.create_default_context(cafile=self._cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _connect(self) -> socket.socket:
        """Open, secure and log in one connection. OSError on network failure; auth errors are raised."""
        sock = socket.create_connection((self.host, self.port), timeout=min(self.timeout_s, 10.0))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                try:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=self.host)
                except ssl.SSLCertVerificationError as exc:
                    raise AuthenticationError(
                        f"TLS certificate of {self.host}:{self.port} not trusted: {exc.verify_message}"
                    ) from exc
                if self._fingerprint:
                    der = sock.getpeercert(binary_form=True) or b""
                    seen = hashlib.sha256(der).hexdigest()
                    if not hmac.compare_digest(seen, self._fingerprint):
                        raise AuthenticationError(
                            f"TLS certificate of {self.host}:{self.port} has fingerprint {seen}, not the pinned "
                            f"{self._fingerprint}; refusing to send credentials"
                        )
            sock.settimeout(self.timeout_s)
            assert self._password is not None  # noqa: S101 - checked in __init__
            send_frame(sock, Login(user=self.user, password=self._password, id=0), self.max_frame_bytes)
            reply = recv_frame(sock, self.max_frame_bytes)
        except BaseException:
            sock.close()
            raise
        if isinstance(reply, ErrorReply):
            sock.close()
            raise self._error(reply)
        if not isinstance(reply, Reply) or not isinstance(reply.result, dict):
            sock.close()
            raise FrameError(f"unexpected answer to login: {type(reply).__name__}")
        self.role = str(reply.result.get("role"))
        logger.debug("connected to %s as %s (%s)", self.uri.redacted(), self.user, self.role)
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    @staticmethod
    def _error(reply: ErrorReply) -> UnitrackError:
        fields = {
            k: v
            for k, v in reply.fields.items()
            if isinstance(k, str) and k.isidentifier() and not k.startswith("_") and k not in _RESERVED_FIELDS
        }
        return error_from_wire(reply.error, reply.message, fields)

    def _request(self, message: Message, *, resend: bool = True) -> tuple[Any, bool]:
        """Send ``message`` and return ``(result, was_retried)``; reconnect and resend on a lost connection.

        Raises:
            ConnectionLostError: when no connection could be made within ``retry_timeout_s``, or the connection
                broke after sending a message that must not be resent.
        """
        deadline = time.monotonic() + self.retry_timeout_s
        delay = 0.02
        attempt = 0
        with self._io_lock:
            while True:
                if self._closed and self._sock is None:
                    raise ConnectionLostError(f"{self!r} is closed")
                sent = False
                try:
                    if self._sock is None:
                        self._sock = self._connect()
                    send_frame(self._sock, message, self.max_frame_bytes)
                    sent = True
                    reply = recv_frame(self._sock, self.max_frame_bytes)
                    if getattr(reply, "id", None) != getattr(message, "id", None):
                        raise FrameError("reply does not match the request")
                except (OSError, FrameError) as exc:
                    if isinstance(exc, FrameError) and not sent:
                        raise  # our own message cannot be encoded: resending will not help
                    self._drop()
                    if sent and not resend:
                        raise ConnectionLostError(
                            f"connection to {self.host}:{self.port} lost after sending a request that is not "
                            f"safe to resend; check the data before retrying ({exc})"
                        ) from exc
                    if time.monotonic() + delay > deadline:
                        raise ConnectionLostError(
                            f"no connection to {self.host}:{self.port} within {self.retry_timeout_s:g} s: {exc}"
                        ) from exc
                    logger.warning(
                        "connection to %s lost (%s); retrying in %.2f s", self.uri.redacted(), exc, delay
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    attempt += 1
                    continue
                if isinstance(reply, ErrorReply):
                    raise self._error(reply)
                if isinstance(reply, Pong) and isinstance(message, Ping):
                    return None, attempt > 0
                if not isinstance(reply, Reply):
                    self._drop()
                    raise FrameError(f"unexpected {type(reply).__name__} from the server")
                return reply.result, attempt > 0

    def _call(self, method: str, *args: Any, resend: bool = True, **kw: Any) -> tuple[Any, bool]:
        self._check_failed()
        self.flush()
        if not resend:  # make sure the connection is alive, so a stale one is not mistaken for a lost call
            self._request(Ping(id=next(self._ids)))
        return self._request(
            Call(method=method, args=list(args), kwargs=kw, id=next(self._ids)), resend=resend
        )

    def ping(self) -> float:
        """Round-trip time of a ping, in seconds (answered without touching the backend)."""
        t0 = time.perf_counter()
        self._request(Ping(id=next(self._ids)))
        return time.perf_counter() - t0

    # ------------------------------------------------------------------------------------------ batching
    def _check_failed(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self.flush_interval_s)
                elif len(self._pending) < self.batch_size and not self._closed:
                    self._cond.wait(self.flush_interval_s)
                if self._closed:
                    return
            self._drain()

    def _drain(self) -> None:
        """Send every pending update, in order, one acknowledged batch at a time."""
        with self._io_lock:
            while True:
                with self._cond:
                    if not self._pending:
                        return
                    take = self._pending[: self.batch_size]
                    del self._pending[: self.batch_size]
                    self._cond.notify_all()
                by_uid: dict[str, list[TrialUpdate | tuple[MetricPoint, ...]]] = {}
                for uid, update in take:
                    by_uid.setdefault(uid, []).append(update)
                items = []
                for uid, updates in by_uid.items():
                    merged = merge_updates(updates)
                    stamped = TrialUpdate(
                        **{k: getattr(merged, k) for k in _UPDATE_FIELDS},
                        writer=self.writer_id,
                        seq=next(self._seq),
                    )
                    items.append([uid, to_json(stamped)])
                try:
                    self._send_batch(items)
                except UnitrackError as exc:
                    logger.error(
                        "a batch of %d updates to %s was lost: %s", len(take), self.uri.redacted(), exc
                    )
                    if self._failed is None:
                        self._failed = exc

    def _send_batch(self, items: list[list[Any]]) -> None:
        """Send one batch; one that exceeds the frame limit is sent as two halves (seqs keep their order)."""
        try:
            self._request(Batch(items=items, id=next(self._ids)))
        except FrameError as exc:
            if "limit" not in exc.fields or len(items) < 2:
                raise
            self._send_batch(items[: len(items) // 2])
            self._send_batch(items[len(items) // 2 :])

    def flush(self) -> None:
        """Send every buffered update and wait for the server's acknowledgement.

        Raises:
            UnitrackError: the error of a batch that failed (its updates were not applied).
        """
        self._drain()
        self._check_failed()

    # ------------------------------------------------------------------------------------------ primitives
    def insert_project(self, project: Project) -> Project | None:
        result, retried = self._call("insert_project", to_json(project))
        if result is None and retried:
            found = self.find_projects({"uid": project.uid})
            return found[0] if found else None
        return self._one(result, Project)

    def insert_group(self, group: TrialGroup) -> TrialGroup | None:
        result, retried = self._call("insert_group", to_json(group))
        if result is None and retried:
            found = self.find_groups({"uid": group.uid})
            return found[0] if found else None
        return self._one(result, TrialGroup)

    def insert_trial(self, trial: Trial, auto_increment: bool = False) -> Trial | None:
        result, retried = self._call("insert_trial", to_json(trial), auto_increment=auto_increment)
        if result is None and retried and not auto_increment:
            found = self.find_trials({"uid": trial.uid})
            result = to_json(found[0]) if found else None
        stored = self._one(result, Trial)
        if stored is not None:
            self._known.add(stored.uid)
        return stored

    def find_projects(self, query: Query) -> list[Project]:
        return self._many(self._call("find_projects", self._plain_query(query))[0], Project)

    def find_groups(self, query: Query) -> list[TrialGroup]:
        return self._many(self._call("find_groups", self._plain_query(query))[0], TrialGroup)

    def find_trials(self, query: Query) -> list[Trial]:
        return self._many(self._call("find_trials", self._plain_query(query))[0], Trial)

    def find_trial_summaries(self, query: Query) -> list[Trial]:
        return self._many(self._call("find_trial_summaries", self._plain_query(query))[0], Trial)

    def find_series(self, request: SeriesRequest) -> list[Series]:
        """Ask the server, which downsamples before sending; the trials go in groups small enough that every
        reply stays under the frame limit (about :data:`SERIES_POINTS_PER_CALL` points each)."""
        per_uid = max(1, len(request.metrics)) * (request.max_points or SERIES_POINTS_PER_CALL)
        step = max(1, SERIES_POINTS_PER_CALL // per_uid)
        out: list[Series] = []
        for start in range(0, len(request.uids), step):
            part = dataclasses.replace(request, uids=request.uids[start : start + step])
            result = self._call("find_series", request_to_json(part))[0]
            if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
                raise FrameError(f"server returned {type(result).__name__}, expected a list of series")
            out.extend(series_from_json(r) for r in result)
        return out

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        if not isinstance(uid, str) or not uid:
            raise SchemaError(f"Expected a trial uid, not {uid!r}")
        if not isinstance(update, TrialUpdate):
            raise SchemaError(f"Expected a TrialUpdate, not {update!r}")
        self._check_failed()
        if update.writer is not None or uid not in self._known or not _is_log_only(update):
            with self._io_lock:  # ordered after every buffered update, stamped so a resend applies once
                self.flush()
                if update.writer is None:
                    update = TrialUpdate(
                        **{k: getattr(update, k) for k in _UPDATE_FIELDS},
                        writer=self.writer_id,
                        seq=next(self._seq),
                    )
                self._request(Call(method="update_trial", args=[uid, to_json(update)], id=next(self._ids)))
            self._known.add(uid)
            return
        self._enqueue(uid, update)

    def log_trial_metrics(
        self,
        trial: TrialRef,
        step: Any = None,
        aggregator: Callable[[], Aggregator] | None = None,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Protocol.log_trial_metrics`; points of a known trial go straight to the buffer."""
        uid = trial.uid if isinstance(trial, Trial) else trial
        if not isinstance(uid, str) or uid not in self._known:
            super().log_trial_metrics(trial, step, aggregator, **kwargs)
            return
        self._check_failed()
        self._enqueue(uid, tuple(MetricPoint(k, step, v) for k, v in kwargs.items()))

    def _enqueue(self, uid: str, item: TrialUpdate | tuple[MetricPoint, ...]) -> None:
        with self._cond:
            while len(self._pending) >= self.max_buffer and not self._closed:
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "%d updates buffered for %s; blocking until the server catches up",
                        len(self._pending),
                        self.uri.redacted(),
                    )
                self._cond.notify_all()
                self._cond.wait(1.0)
            self._pending.append((uid, item))
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()

    def update_group(self, uid: str, update: GroupUpdate) -> None:
        self._call("update_group", uid, to_json(update))

    def find_and_update_trial(self, query: Query, update: TrialUpdate) -> Trial | None:
        result, _ = self._call(
            "find_and_update_trial", self._plain_query(query), to_json(update), resend=False
        )
        return self._one(result, Trial)

    def find_and_update_group(self, query: Query, update: GroupUpdate) -> TrialGroup | None:
        result, _ = self._call(
            "find_and_update_group", self._plain_query(query), to_json(update), resend=False
        )
        return self._one(result, TrialGroup)

    def commit(self, **kwargs: Any) -> None:
        """Flush buffered updates, then ask the server to commit (no arguments travel: no client paths)."""
        if kwargs:
            raise ConfigError(
                f"commit over socket:// takes no arguments (got {sorted(kwargs)}); the server owns its files"
            )
        if self._closed:
            return
        self.flush()
        if self.role != "reader":
            self._call("commit")

    def close(self) -> None:
        """Flush, commit, stop the background thread and close the connection."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._flusher.join(5)
            with self._io_lock:
                self._drop()

    # ------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _plain_query(query: Query) -> Any:
        normalize_query(query)
        if query is None:
            return None
        if isinstance(query, Mapping):
            return {k: _plain_operand(v) for k, v in query.items()}
        return [[k, _plain_operand(v)] for k, v in query]

    @staticmethod
    def _one(result: Any, cls: type[_T]) -> _T | None:
        if result is None:
            return None
        obj = from_json(result)
        if not isinstance(obj, cls):
            raise FrameError(f"server returned a {type(obj).__name__}, expected {cls.__name__}")
        return obj

    def _many(self, result: Any, cls: type[_T]) -> list[_T]:
        if not isinstance(result, list) or None in result:
            raise FrameError(f"server returned {type(result).__name__}, expected a list of objects")
        return [obj for obj in (self._one(r, cls) for r in result) if obj is not None]


_UPDATE_FIELDS = (
    "parameters",
    "metadata",
    "tags",
    "metrics",
    "chronos",
    "status",
    "errors",
    "project_id",
    "group_id",
    "description",
)


def _is_log_only(update: TrialUpdate) -> bool:
    """Metrics, timings and metadata are batched; status, tags, parameters, errors, description and moves are
    sent at once."""
    return not (
        update.parameters
        or update.tags
        or update.errors
        or update.status is not None
        or update.project_id is not None
        or update.group_id is not None
        or update.description is not None
    )


def _plain_operand(value: Any) -> Any:
    """Queries travel as JSON: tuples and sets become lists, statuses their names."""
    if isinstance(value, Mapping):
        return {k: _plain_operand(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain_operand(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
