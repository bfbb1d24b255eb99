"""``socket://``: the client of ``unitrack serve``, a Protocol like any other.

URI: ``socket://user[:password]@host:port[?fingerprint=HEX&cafile=F&batch_size=N&flush_interval_s=S&...]``.

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
- **Acknowledged** means: a logged value is acknowledged once ``flush()``, ``commit()`` or ``close()`` returns
  after it was logged (with ``?batch_size=1``: once the logging call returns). The server has then applied it,
  and a lost connection, a resend or a killed client never loses or duplicates it. Values logged since the last
  flush live in this process: a client killed before flushing them never had them acknowledged.
- **Failing fast**: what retrying cannot heal fails at once, with a message naming the cause and the fix: refused
  credentials, a TLS client against a plaintext server or the reverse (the server's certificate fingerprint is
  named), an unknown host, another wire protocol version. Transient failures (connection refused or reset, a
  restarting or busy server) are retried quietly with exponential backoff, one warning line after the first
  failure: for ``connect_timeout_s`` (default 5) before the first login, ``retry_timeout_s`` (default 60) once
  connected. Reads, inserts and stamped updates are resent; ``find_and_update_*`` are not once sent (they may
  have run): :class:`ConnectionLostError`.
- **Replies of any size**: the server sends long replies in parts; ``max_reply_bytes`` (default 4 GiB) bounds
  what this client reassembles.
- Errors from the server are re-raised as the same :class:`UnitrackError` subclass.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
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
    ProtocolMismatchError,
    ServerBusyError,
    UnitrackError,
    error_from_wire,
)
from unitrack.persistence.batching import BufferedProtocol, UpdateBuffer, merge_updates
from unitrack.persistence.protocol import PRIMITIVES, Protocol
from unitrack.persistence.query import Query, normalize_query
from unitrack.persistence.serialization import from_json, to_json
from unitrack.persistence.series import Series, SeriesRequest, request_to_json, series_from_json
from unitrack.persistence.structure import GroupUpdate, Project, Trial, TrialGroup, TrialUpdate
from unitrack.persistence.uri import ParsedURI, as_uri, option_flag, option_float
from unitrack.persistence.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Batch,
    Call,
    ErrorReply,
    Login,
    Message,
    Ping,
    Pong,
    Reply,
    is_loopback,
    recv_message,
    send_frame,
)

__all__ = ["PASSWORD_ENV", "SocketProtocol", "credentials_path", "merge_updates"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T", Project, TrialGroup, Trial)

PASSWORD_ENV = "UNITRACK_PASSWORD"  # noqa: S105 - the name of a variable, not a password
HOME_ENV = "UNITRACK_HOME"
#: About how many points one find_series reply carries (a reply must fit in one frame).
SERIES_POINTS_PER_CALL = 100_000
#: About how many metric points one insert_trials call carries (a request must fit in one frame).
INSERT_POINTS_PER_CALL = 100_000
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


class SocketProtocol(BufferedProtocol):
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
        self.connect_timeout_s = option_float(u, "connect_timeout_s", 5.0)
        self.retry_timeout_s = option_float(u, "retry_timeout_s", 60.0)
        self.max_frame_bytes = _int_option(u, "max_frame_bytes", DEFAULT_MAX_FRAME_BYTES)
        self.max_reply_bytes = _int_option(u, "max_reply_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        self._connected_once = False
        self.writer_id = uuid.uuid4().hex
        self.role: str | None = None
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._io_lock = threading.RLock()
        self._known: set[str] = set()
        self._closed = False
        self._request(Ping(id=next(self._ids)))  # connect and log in now (retried like any request)
        self._buffer = UpdateBuffer(
            self._send_batch,
            writer_id=self.writer_id,
            batch_size=self.batch_size,
            flush_interval_s=self.flush_interval_s,
            max_buffer=self.max_buffer,
            lock=self._io_lock,
            describe=self.uri.redacted(),
        )

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

    def _open(self) -> socket.socket:
        """A TCP connection. OSError for what may heal (refused, unreachable, DNS retry later)."""
        try:
            return socket.create_connection((self.host, self.port), timeout=min(self.timeout_s, 10.0))
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise  # the resolver may answer next time
            raise ConfigError(
                f"Cannot resolve the host {self.host!r} of {self.uri.redacted()} ({exc.strerror}); check the "
                "host name."
            ) from exc

    def _secure(self, sock: socket.socket) -> socket.socket:
        try:
            secured = self._tls_context().wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(
                f"TLS certificate of {self.host}:{self.port} not trusted: {exc.verify_message}; pin the one "
                "'unitrack serve' printed with ?fingerprint=<sha256>, or name its CA with ?cafile="
            ) from exc
        except ssl.SSLError as exc:
            if exc.reason in _PLAINTEXT_SIGNS:
                raise ProtocolMismatchError(
                    f"TLS handshake with {self.host}:{self.port} failed ({exc.reason}): the server does not speak "
                    "TLS. Drop ?fingerprint=/?cafile=/?tls= from the URI if it serves plaintext, or start it with "
                    "--tls-self-signed DIR (or --tls-cert/--tls-key)."
                ) from exc
            raise  # a handshake cut short: retried as any lost connection
        if self._fingerprint:
            der = secured.getpeercert(binary_form=True) or b""
            seen = hashlib.sha256(der).hexdigest()
            if not hmac.compare_digest(seen, self._fingerprint):
                secured.close()
                raise AuthenticationError(
                    f"TLS certificate of {self.host}:{self.port} has fingerprint {seen}, not the pinned "
                    f"{self._fingerprint}; refusing to send credentials. If the server's certificate was "
                    "renewed, pin the fingerprint 'unitrack serve' prints now."
                )
        return secured

    def _tls_fingerprint(self) -> str | None:
        """The fingerprint of the certificate a TLS server at our address presents; None if it does not."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only to read the certificate: nothing is sent
        try:
            with socket.create_connection((self.host, self.port), timeout=5.0) as raw:
                with context.wrap_socket(raw, server_hostname=self.host) as probe:
                    der = probe.getpeercert(binary_form=True) or b""
        except (OSError, ssl.SSLError):
            return None
        return hashlib.sha256(der).hexdigest()

    def _connect(self) -> socket.socket:
        """Open, secure and log in one connection.

        Raises:
            OSError, FrameError, ServerBusyError: what may heal by retrying.
            AuthenticationError, ProtocolMismatchError, ConfigError: what cannot.
        """
        sock = self._open()
        received = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = self._secure(sock)
            sock.settimeout(self.timeout_s)
            assert self._password is not None  # noqa: S101 - checked in __init__
            login = Login(user=self.user, password=self._password, id=0, version=PROTOCOL_VERSION)
            send_frame(sock, login, self.max_frame_bytes)
            try:
                reply = recv_message(sock, self.max_frame_bytes, self.max_reply_bytes)
                received = True
            except (ConnectionError, FrameError) as exc:
                if self._tls:
                    raise
                # No answer we can read: a TLS server reading plaintext closes without a word.
                fingerprint = self._tls_fingerprint()
                if fingerprint is None:
                    raise
                raise ProtocolMismatchError(
                    f"the server at {self.host}:{self.port} uses TLS, and this URI asks for plaintext. Add "
                    f"?fingerprint={fingerprint} to the URI if that is the fingerprint 'unitrack serve' printed "
                    "(never pin one you cannot check), or ?cafile=<ca.pem>.",
                    fingerprint=fingerprint,
                ) from exc
        except BaseException:
            sock.close()
            raise
        if isinstance(reply, ErrorReply):
            sock.close()
            if (
                reply.error == "FrameError"
                and "unknown fields" in reply.message
                and "version" in reply.message
            ):
                raise ProtocolMismatchError(
                    f"the server at {self.host}:{self.port} speaks wire protocol version 1 and this client "
                    f"{PROTOCOL_VERSION}; install the same unitrack version on both sides."
                )
            raise self._error(reply)
        if not isinstance(reply, Reply) or not isinstance(reply.result, dict) or not received:
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
        """The error a server reported, as the same class (fields it cannot take are dropped)."""
        fields = {
            k: v
            for k, v in reply.fields.items()
            if isinstance(k, str) and k.isidentifier() and not k.startswith("_") and k not in _RESERVED_FIELDS
        }
        return error_from_wire(reply.error, reply.message, fields)

    def _request(self, message: Message, *, resend: bool = True) -> tuple[Any, bool]:
        """Send ``message`` and return ``(result, was_retried)``; reconnect and resend on a lost connection.

        Raises:
            ConnectionLostError: when no connection could be made in time (``connect_timeout_s`` before the first
                login, ``retry_timeout_s`` after), or the connection broke after sending a message that must not
                be resent.
            AuthenticationError, ProtocolMismatchError, ConfigError: at once, for what retrying cannot heal.
        """
        started = time.monotonic()
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
                        self._connected_once = True
                    send_frame(self._sock, message, self.max_frame_bytes)
                    sent = True
                    reply = recv_message(self._sock, self.max_frame_bytes, self.max_reply_bytes)
                    if getattr(reply, "id", None) != getattr(message, "id", None):
                        raise FrameError("reply does not match the request")
                except (OSError, FrameError, ServerBusyError) as exc:
                    if isinstance(exc, FrameError) and (not sent or "limit" in exc.fields):
                        if sent:
                            self._drop()  # the stream is out of step
                        raise  # our own message cannot be encoded, or the reply is over our limit: no retry heals
                    self._drop()
                    if sent and not resend:
                        raise ConnectionLostError(
                            f"connection to {self.host}:{self.port} lost after sending a request that is not "
                            f"safe to resend; check the data before retrying ({exc})"
                        ) from exc
                    budget = self.retry_timeout_s if self._connected_once else self.connect_timeout_s
                    if time.monotonic() + delay > started + budget:
                        raise ConnectionLostError(self._gave_up(exc, budget)) from exc
                    if attempt == 0:
                        logger.warning(
                            "connection to %s failed (%s); retrying quietly for up to %g s",
                            self.uri.redacted(),
                            _cause(exc),
                            budget,
                        )
                    else:
                        logger.debug("retrying %s (%s)", self.uri.redacted(), _cause(exc))
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    attempt += 1
                    continue
                if attempt:
                    logger.info(
                        "connection to %s back after %.1f s", self.uri.redacted(), time.monotonic() - started
                    )
                if isinstance(reply, ErrorReply):
                    raise self._error(reply)
                if isinstance(reply, Pong) and isinstance(message, Ping):
                    return None, attempt > 0
                if not isinstance(reply, Reply):
                    self._drop()
                    raise FrameError(f"unexpected {type(reply).__name__} from the server")
                return reply.result, attempt > 0

    def _gave_up(self, exc: BaseException, budget: float) -> str:
        where = f"{self.host}:{self.port}"
        option = "retry_timeout_s" if self._connected_once else "connect_timeout_s"
        if isinstance(exc, ConnectionRefusedError):
            return (
                f"nothing accepts connections at {where} (connection refused for {budget:g} s): check the port "
                f"('unitrack serve' prints 'listening on HOST:PORT') and that the server runs; ?{option}= waits "
                "longer"
            )
        if isinstance(exc, ServerBusyError):
            return f"{where} stayed busy for {budget:g} s ({exc}); ?{option}= waits longer"
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return (
                f"no answer from {where} within {budget:g} s: a firewall, a wrong host, or a stopped server; "
                f"?{option}= waits longer"
            )
        return f"no connection to {where} within {budget:g} s ({_cause(exc)}); ?{option}= waits longer"

    def _call(self, method: str, *args: Any, resend: bool = True, **kw: Any) -> tuple[Any, bool]:
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
    def _send_batch(self, batch: list[tuple[str, TrialUpdate]]) -> None:
        self._send_items([[uid, to_json(update)] for uid, update in batch])

    def _send_items(self, items: list[list[Any]]) -> None:
        """Send one batch; one that exceeds the frame limit is sent as two halves (seqs keep their order)."""
        try:
            self._request(Batch(items=items, id=next(self._ids)))
        except FrameError as exc:
            if "limit" not in exc.fields or len(items) < 2:
                raise
            self._send_items(items[: len(items) // 2])
            self._send_items(items[len(items) // 2 :])

    def flush(self) -> None:
        """Send every buffered update and wait for the server's acknowledgement (see "Acknowledged" above).

        Raises:
            UnitrackError: the error of a batch that failed (its updates were not applied).
        """
        self._buffer.flush()

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

    def insert_trials(self, trials: Sequence[Trial]) -> list[bool]:
        """One call per :data:`INSERT_POINTS_PER_CALL` points or so (halved when a frame would be too large); the
        server stores each call's trials with one call to its backend."""
        out: list[bool] = []
        group: list[Trial] = []
        points = 0
        for trial in trials:
            size = sum(len(m) for m in trial.metrics.values()) + 1
            if group and points + size > INSERT_POINTS_PER_CALL:
                out += self._insert_group(group)
                group, points = [], 0
            group.append(trial)
            points += size
        if group:
            out += self._insert_group(group)
        return out

    def _insert_group(self, trials: list[Trial]) -> list[bool]:
        try:
            result, _ = self._call("insert_trials", [to_json(t) for t in trials])
        except FrameError as exc:
            if "limit" not in exc.fields or len(trials) < 2:
                raise
            half = len(trials) // 2
            return self._insert_group(trials[:half]) + self._insert_group(trials[half:])
        if (
            not isinstance(result, list)
            or len(result) != len(trials)
            or not all(isinstance(r, bool) for r in result)
        ):
            raise FrameError(f"server returned {result!r:.80}, expected {len(trials)} true/false values")
        self._known.update(t.uid for t, stored in zip(trials, result, strict=True) if stored)
        return result

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

    def _write_update_now(self, uid: str, update: TrialUpdate) -> None:
        self._request(Call(method="update_trial", args=[uid, to_json(update)], id=next(self._ids)))

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
        """Flush buffered updates, then ask the server to commit this client's trials (no arguments travel:
        no client paths; ``trials=`` is accepted and left to the server, which knows what this client wrote)."""
        kwargs.pop("trials", None)
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
            self._closed = True
            self._buffer.close()
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


def _plain_operand(value: Any) -> Any:
    """Queries travel as JSON: tuples and sets become lists, statuses their names."""
    if isinstance(value, Mapping):
        return {k: _plain_operand(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain_operand(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


#: ``ssl`` reasons meaning the other end did not answer in TLS at all.
_PLAINTEXT_SIGNS = frozenset(
    {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"}
)


def _cause(exc: BaseException) -> str:
    """A short name for why a connection failed."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return f"{errno.errorcode[exc.errno]}: {exc.strerror}"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------- other primitives
def _to_wire(value: Any) -> Any:
    if isinstance(value, (Project, TrialGroup, Trial, TrialUpdate, GroupUpdate)):
        return to_json(value)
    return _plain_operand(value)


def _from_wire(value: Any) -> Any:
    if isinstance(value, dict):
        if "dtype" in value:
            return from_json(value)
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


def _remote_primitive(name: str) -> Callable[..., Any]:
    def call(self: SocketProtocol, *args: Any, **kwargs: Any) -> Any:
        result, _ = self._call(name, *map(_to_wire, args), **{k: _to_wire(v) for k, v in kwargs.items()})
        return _from_wire(result)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{name}`` on the server: plain data in and out (structures rebuilt from their JSON)."
    return call


# A primitive declared in Protocol without a method above is called generically, so the server's new
# primitives work through socket:// at once (a method written here can then give it typed results).
_WRITTEN = {
    name for cls in SocketProtocol.__mro__[: SocketProtocol.__mro__.index(Protocol)] for name in vars(cls)
}
for _name in sorted(PRIMITIVES - _WRITTEN):  # (update_trial is BufferedProtocol's)
    setattr(SocketProtocol, _name, _remote_primitive(_name))
abc.update_abstractmethods(SocketProtocol)
