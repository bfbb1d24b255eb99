"""The wire format of ``unitrack serve``: length-prefixed JSON frames carrying frozen message dataclasses.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON (one object with a
``kind`` field). The length is checked against ``max_frame_bytes`` *before* anything is allocated, nesting is
limited, and NaN/±inf travel explicitly as ``{"$float": "nan" | "inf" | "-inf"}`` (plain JSON has no spelling for
them). Nothing here ever unpickles: decoding any bytes returns a message or raises :class:`FrameError`.

Example:
    >>> frame = encode_frame(Ping(id=7))
    >>> frame[:4]
    b'\\x00\\x00\\x00\\x16'
    >>> decode_payload(frame[4:])
    Ping(id=7)
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import math
import re
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from unitrack.errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_DEPTH",
    "Batch",
    "Call",
    "ErrorReply",
    "Login",
    "Message",
    "Ping",
    "Pong",
    "Reply",
    "decode_payload",
    "encode_frame",
    "encode_payload",
    "is_loopback",
    "read_frame",
    "recv_frame",
    "send_frame",
    "to_bytes",
    "to_obj",
    "write_frame",
]

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
#: Deepest nesting of lists/objects accepted in a payload (a Call with a query is about 8 deep).
MAX_DEPTH = 64
_HEADER = struct.Struct(">I")

_FLOAT_TAG = "$float"
_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# ---------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """Base of every message; ``kind`` names its class on the wire."""

    KIND: ClassVar[str] = ""


@dataclass(frozen=True)
class Login(Message):
    """First message of a connection: who the client is."""

    KIND: ClassVar[str] = "login"
    user: str
    password: str
    id: int = 0
    kind: str = field(default="login", repr=False)


@dataclass(frozen=True)
class Call(Message):
    """One storage primitive: ``method`` is checked against the server's table, arguments are plain data.

    ``writer``/``seq``, when set, stamp the ``TrialUpdate`` of an update call so a retry is applied once.
    """

    KIND: ClassVar[str] = "call"
    method: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    writer: str | None = None
    seq: int | None = None
    id: int = 0
    kind: str = field(default="call", repr=False)


@dataclass(frozen=True)
class Batch(Message):
    """Many ``update_trial`` calls at once: ``items`` is a list of ``[uid, trial_update_json]``."""

    KIND: ClassVar[str] = "batch"
    items: list[Any]
    id: int = 0
    kind: str = field(default="batch", repr=False)


@dataclass(frozen=True)
class Reply(Message):
    """The result of a call (plain data, see :mod:`unitrack.persistence.serialization`)."""

    KIND: ClassVar[str] = "reply"
    result: Any = None
    id: int = 0
    kind: str = field(default="reply", repr=False)


@dataclass(frozen=True)
class ErrorReply(Message):
    """An error as ``(kind, message, fields)``; the client raises the same ``UnitrackError`` subclass."""

    KIND: ClassVar[str] = "error"
    error: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    kind: str = field(default="error", repr=False)


@dataclass(frozen=True)
class Ping(Message):
    """Liveness check; answered without touching the backend."""

    KIND: ClassVar[str] = "ping"
    id: int = 0
    kind: str = field(default="ping", repr=False)


@dataclass(frozen=True)
class Pong(Message):
    """The answer to :class:`Ping`."""

    KIND: ClassVar[str] = "pong"
    id: int = 0
    kind: str = field(default="pong", repr=False)


#: kind -> message class: the only classes a payload can become.
MESSAGES: Mapping[str, type[Message]] = {
    cls.KIND: cls for cls in (Login, Call, Batch, Reply, ErrorReply, Ping, Pong)
}

# Expected JSON types of each field, checked before a dataclass is built.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "user": (str,),
    "password": (str,),
    "id": (int,),
    "method": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "writer": (str, type(None)),
    "seq": (int, type(None)),
    "items": (list,),
    "error": (str,),
    "message": (str,),
    "fields": (dict,),
}


# ---------------------------------------------------------------------------------------------- encoding
def _tag_specials(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {k: _tag_specials(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag_specials(v) for v in value]
    return value


def _as_dict(message: Message) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in fields(message)}


def encode_payload(message: Message) -> bytes:
    """The JSON bytes of ``message`` (without the length prefix)."""
    data = _as_dict(message)
    try:
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except ValueError:  # NaN or infinity somewhere: spell them explicitly
        text = json.dumps(_tag_specials(data), allow_nan=False, separators=(",", ":"))
    except TypeError as exc:
        raise FrameError(f"cannot encode a {message.KIND} message: {exc}") from exc
    return text.encode("utf-8")


def encode_frame(message: Message, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Length prefix + payload.

    Raises:
        FrameError: when the payload exceeds ``max_frame_bytes`` (split the batch).
    """
    payload = encode_payload(message)
    if len(payload) > max_frame_bytes:
        raise FrameError(
            f"a {message.KIND} message of {len(payload)} bytes exceeds the frame limit of "
            f"{max_frame_bytes} bytes; send smaller batches",
            size=len(payload),
            limit=max_frame_bytes,
        )
    return _HEADER.pack(len(payload)) + payload


# ---------------------------------------------------------------------------------------------- decoding
def _reject_constant(name: str) -> Any:
    raise FrameError(f"payload holds the bare constant {name}; use {{'$float': ...}}")


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj:
        spelled = obj[_FLOAT_TAG]
        if not isinstance(spelled, str) or spelled not in _SPECIAL:
            raise FrameError(f"invalid {_FLOAT_TAG} value {spelled!r}; expected nan, inf or -inf")
        return _SPECIAL[spelled]
    return obj


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DELTA = [0] * 128
_DELTA[ord("[")] = _DELTA[ord("{")] = 1
_DELTA[ord("]")] = _DELTA[ord("}")] = -1


def _check_depth(text: str, limit: int) -> None:
    """Refuse JSON text nesting deeper than ``limit``, before parsing it (C-speed scans, no recursion)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if brackets and max(itertools.accumulate(map(_DELTA.__getitem__, brackets))) > limit:
        raise FrameError(f"payload nests deeper than {limit} levels")


def decode_payload(payload: bytes, max_depth: int = MAX_DEPTH) -> Message:
    """Turn a frame's payload into a message.

    Raises:
        FrameError: for anything that is not a well-formed message (never another exception).
    """
    try:
        text = payload.decode("utf-8")  # strictly UTF-8 (json.loads would sniff UTF-16/32 and import codecs)
        _check_depth(text, max_depth)
        data = json.loads(text, parse_constant=_reject_constant, object_hook=_object_hook)
    except FrameError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FrameError(f"payload is not valid UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise FrameError(f"payload is a JSON {type(data).__name__}, not an object with a 'kind'")
    kind = data.get("kind")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FrameError(f"unknown message kind {kind!r}; known: {', '.join(sorted(MESSAGES))}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise FrameError(f"{kind} message has unknown fields {sorted(unknown)!r}")
    for name, value in data.items():
        expected = _FIELD_TYPES.get(name)
        if expected is not None and (
            not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)
        ):
            raise FrameError(f"{kind} field {name!r} has the wrong type {type(value).__name__}")
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise FrameError(f"{kind} message is incomplete: {exc}") from None


def _check_length(length: int, max_frame_bytes: int) -> None:
    if length > max_frame_bytes:
        raise FrameError(
            f"frame of {length} bytes exceeds the limit of {max_frame_bytes} bytes",
            size=length,
            limit=max_frame_bytes,
        )


# ---------------------------------------------------------------------------------------------- asyncio I/O
async def read_frame(
    reader: asyncio.StreamReader,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    idle_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
) -> bytes | None:
    """Read one frame's payload; None at a clean end of stream (before a header).

    Waits up to ``idle_timeout_s`` for a header, then ``read_timeout_s`` for the rest.

    Raises:
        FrameError: for an oversized length or a stream cut inside a frame.
        TimeoutError: when a timeout passes.
    """
    try:
        header = await asyncio.wait_for(reader.readexactly(4), idle_timeout_s)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("stream ended inside a frame header") from None
    (length,) = _HEADER.unpack(header)
    _check_length(length, max_frame_bytes)
    try:
        return await asyncio.wait_for(reader.readexactly(length), read_timeout_s)
    except asyncio.IncompleteReadError:
        raise FrameError(f"stream ended inside a frame of {length} bytes") from None


async def write_frame(
    writer: asyncio.StreamWriter, message: Message, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> None:
    """Send one message and wait until it is handed to the OS."""
    writer.write(encode_frame(message, max_frame_bytes))
    await writer.drain()


# ---------------------------------------------------------------------------------------------- socket I/O
def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionResetError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Read one message from a blocking socket (its own timeout applies).

    Raises:
        FrameError: for an oversized or malformed frame.
        OSError: when the connection fails or closes (``ConnectionResetError``) or times out.
    """
    (length,) = _HEADER.unpack(_recv_exactly(sock, 4))
    _check_length(length, max_frame_bytes)
    return decode_payload(_recv_exactly(sock, length))


def send_frame(sock: socket.socket, message: Message, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
    """Send one message on a blocking socket."""
    sock.sendall(encode_frame(message, max_frame_bytes))


# ---------------------------------------------------------------------------------------------- addresses
def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only hosts frames may reach in clear by default."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- track names
def to_bytes(message: Any) -> bytes:
    """track's ``to_bytes``: plain data to UTF-8 JSON (NaN/inf spelled explicitly). Never pickles."""
    try:
        text = json.dumps(message, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_tag_specials(message), allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def to_obj(message: bytes) -> Any:
    """track's ``to_obj``: UTF-8 JSON back to plain data.

    Raises:
        FrameError: for bytes that are not valid JSON or nest too deeply.
    """
    try:
        text = message.decode("utf-8")
        _check_depth(text, MAX_DEPTH)
        data = json.loads(text, parse_constant=_reject_constant, object_hook=_object_hook)
    except FrameError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not valid UTF-8 JSON: {type(exc).__name__}") from None
    return data
