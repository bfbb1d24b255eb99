"""The wire format of ``unitrack serve``: length-prefixed JSON frames carrying frozen message dataclasses.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON (one object with a
``kind`` field). The length is checked against ``max_frame_bytes`` *before* anything is allocated, nesting is
limited, and NaN/±inf travel explicitly as ``{"$float": "nan" | "inf" | "-inf"}`` (plain JSON has no spelling for
them). Nothing here ever unpickles: decoding any bytes returns a message or raises :class:`FrameError`, in time
linear in the payload (the JSON is parsed by the C parser first, then its nesting is measured on the result).

A message larger than a frame (a reply holding many long series) travels as :class:`Part` frames: slices of its
JSON text, in order, the last one marked; :func:`encode_frames` splits and :func:`recv_message` joins them, so no
size of stored data makes a read impossible.

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
import json
import math
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from unitrack.errors import FrameError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_LOGIN_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_DEPTH",
    "PROTOCOL_VERSION",
    "Batch",
    "Call",
    "ErrorReply",
    "Login",
    "Message",
    "Part",
    "Ping",
    "Pong",
    "Reply",
    "decode_payload",
    "encode_frame",
    "encode_frames",
    "encode_payload",
    "is_loopback",
    "read_frame",
    "recv_frame",
    "recv_message",
    "send_frame",
    "to_bytes",
    "to_obj",
    "write_frame",
]

#: Largest frame a logged-in connection may send (and a client accepts).
DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
#: Largest frame before login: a login frame is a few hundred bytes.
DEFAULT_MAX_LOGIN_FRAME_BYTES = 16 * 1024
#: Messages whose JSON is longer than this are sent as :class:`Part` frames of this many characters.
DEFAULT_CHUNK_BYTES = 1024 * 1024
#: Largest message a client reassembles from parts (a reply); ``?max_reply_bytes=`` changes it.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024**3
#: Deepest nesting of lists/objects accepted in a payload (a Call with a query is about 8 deep).
MAX_DEPTH = 64
#: Version of this wire protocol, sent at login. 1: no parts (replies had to fit one frame); 2: parts.
PROTOCOL_VERSION = 2
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
    password: str = field(repr=False)
    id: int = 0
    version: int = 1
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


@dataclass(frozen=True)
class Part(Message):
    """A slice of a message too large for one frame: ``data`` is the next piece of its JSON text."""

    KIND: ClassVar[str] = "part"
    data: str
    last: bool = False
    id: int = 0
    kind: str = field(default="part", repr=False)


#: kind -> message class: the only classes a payload can become.
MESSAGES: Mapping[str, type[Message]] = {
    cls.KIND: cls for cls in (Login, Call, Batch, Reply, ErrorReply, Ping, Pong, Part)
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
    "version": (int,),
    "data": (str,),
    "last": (bool,),
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


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:  # NaN or infinity somewhere: spell them explicitly
        return json.dumps(_tag_specials(value), allow_nan=False, separators=(",", ":"))


#: Lists longer than this are encoded in slices, so no single call into the C encoder runs for long.
_SLICE = 4096


def _pieces(value: Any, out: list[str]) -> None:
    """Append the JSON text of ``value`` to ``out`` in pieces: containers are walked, runs of at most
    ``_SLICE`` scalars go to the C encoder at once."""
    if isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(("," if i else "") + json.dumps(key) + ":")
            _pieces(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        run: list[Any] = []
        first = True
        for item in value:
            if isinstance(item, (dict, list, tuple)) or len(run) >= _SLICE:
                if run:
                    out.append(("" if first else ",") + _dumps(run)[1:-1])
                    first, run = False, []
            if isinstance(item, (dict, list, tuple)):
                if not first:
                    out.append(",")
                _pieces(item, out)
                first = False
            else:
                run.append(item)
        if run:
            out.append(("" if first else ",") + _dumps(run)[1:-1])
        out.append("]")
    else:
        out.append(_dumps(value))


def encode_pieces(message: Message) -> list[str]:
    """The JSON text of ``message`` as pieces to join, each made by a short call into the C encoder (for a
    reply built on a worker thread: no single call holds the interpreter for long).

    Raises:
        FrameError: for a value JSON cannot hold.
    """
    out: list[str] = []
    try:
        _pieces(_as_dict(message), out)
    except TypeError as exc:
        raise FrameError(f"cannot encode a {message.KIND} message: {exc}") from exc
    return out


def encode_frames(
    message: Message, chunk_bytes: int = DEFAULT_CHUNK_BYTES, pieces: list[str] | None = None
) -> list[bytes]:
    """The frames carrying ``message``: one frame, or :class:`Part` frames of ``chunk_bytes`` characters each.

    ``pieces`` is the message's JSON text already made by :func:`encode_pieces`.
    """
    text = "".join(pieces if pieces is not None else encode_pieces(message))
    if len(text) <= chunk_bytes:
        return [_HEADER.pack(len(text)) + text.encode("ascii")]
    request_id = getattr(message, "id", 0)
    count = (len(text) + chunk_bytes - 1) // chunk_bytes
    frames = []
    for i in range(count):
        part = Part(data=text[i * chunk_bytes : (i + 1) * chunk_bytes], last=i == count - 1, id=request_id)
        payload = json.dumps(_as_dict(part), separators=(",", ":")).encode("ascii")
        frames.append(_HEADER.pack(len(payload)) + payload)
    return frames


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


def _check_depth(data: Any, limit: int) -> None:
    """Refuse parsed JSON nesting deeper than ``limit``: one pass over its lists and objects, level by level
    (no recursion; time linear in their number)."""
    level = [data] if isinstance(data, (list, dict)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise FrameError(f"payload nests deeper than {limit} levels")
        deeper: list[Any] = []
        for node in level:
            values = node.values() if isinstance(node, dict) else node
            deeper += [v for v in values if type(v) is list or type(v) is dict]
        level = deeper


def _loads(payload: bytes, max_depth: int) -> Any:
    """Parse UTF-8 JSON (strictly: json.loads would sniff UTF-16/32), then check its nesting.

    The C parser runs first, in linear time; what nests deeper than its own recursion limit fails there.
    """
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant, object_hook=_object_hook)
    except RecursionError:
        raise FrameError(f"payload nests deeper than {max_depth} levels") from None
    _check_depth(data, max_depth)
    return data


def decode_payload(payload: bytes, max_depth: int = MAX_DEPTH) -> Message:
    """Turn a frame's payload into a message.

    Raises:
        FrameError: for anything that is not a well-formed message (never another exception).
    """
    try:
        data = _loads(payload, max_depth)
    except FrameError:
        raise
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
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

    Waits up to ``idle_timeout_s`` for the first byte of a frame, then ``read_timeout_s`` for the rest of it
    (header and body: a half-sent header is a started frame).

    Raises:
        FrameError: for an oversized length or a stream cut inside a frame.
        TimeoutError: when a timeout passes.
    """
    try:
        first = await asyncio.wait_for(reader.readexactly(1), idle_timeout_s)
    except asyncio.IncompleteReadError:
        return None
    return await asyncio.wait_for(_read_rest(reader, first, max_frame_bytes), read_timeout_s)


async def _read_rest(reader: asyncio.StreamReader, first: bytes, max_frame_bytes: int) -> bytes:
    try:
        header = first + await reader.readexactly(3)
    except asyncio.IncompleteReadError:
        raise FrameError("stream ended inside a frame header") from None
    (length,) = _HEADER.unpack(header)
    _check_length(length, max_frame_bytes)
    try:
        return await reader.readexactly(length)
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


def recv_message(
    sock: socket.socket,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Read one message from a blocking socket, joining :class:`Part` frames.

    Raises:
        FrameError: for an oversized or malformed frame, parts of different messages, or a message over
            ``max_message_bytes``.
        OSError: as :func:`recv_frame`.
    """
    message = recv_frame(sock, max_frame_bytes)
    if not isinstance(message, Part):
        return message
    pieces, size = [message.data], len(message.data)
    while not message.last:
        message_id = message.id
        message = recv_frame(sock, max_frame_bytes)
        if not isinstance(message, Part) or message.id != message_id:
            raise FrameError(f"a {message.KIND} frame interrupted the parts of message {message_id}")
        size += len(message.data)
        if size > max_message_bytes:
            raise FrameError(
                f"a message of more than {max_message_bytes} bytes; raise ?max_reply_bytes= or ask for less",
                size=size,
                limit=max_message_bytes,
            )
        pieces.append(message.data)
    try:
        payload = "".join(pieces).encode("ascii")
    except UnicodeEncodeError:
        raise FrameError("the parts of a message are not ASCII JSON") from None
    joined = decode_payload(payload)
    if isinstance(joined, Part):
        raise FrameError("a part inside a part")
    return joined


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
        return _loads(message, MAX_DEPTH)
    except FrameError:
        raise
    except ValueError as exc:
        raise FrameError(f"not valid UTF-8 JSON: {type(exc).__name__}") from None
