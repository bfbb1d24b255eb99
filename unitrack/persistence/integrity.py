"""Files the local backends write for themselves, written so that damage is detected, never read as data.

Three forms, all plain text a person can read:

- **Sealed JSON** (``db.json``, ``trial.json``, ``.unitrack/index.json``): one JSON object whose first line
  carries its format and the SHA-256 of everything after that line::

      {"format": "unitrack.db/2", "sha256": "9f2c...",
       "projects": [...], ...}

  :func:`load_sealed` checks the digest before parsing, so one changed bit anywhere is a
  :class:`~unitrack.errors.CorruptStoreError` naming the file, never a different value.
- **Frames** in append-only logs (the ``file://`` journal, the ``hdf5://`` trial index): ``\\n<length> <crc32>
  <header crc32> <json>``, lengths and checksums as 8 hex digits. Every frame must verify, except one cut short
  by a writer killed inside ``write()`` (that call never returned), which its verified length tells apart from
  a damaged one; several processes may append at once (each frame is one ``O_APPEND`` write).
- **Atomic replacement**: :func:`atomic_write` (temporary file beside the target, fsync, rename).

Example:
    >>> data = seal({"trials": []}, "unitrack.db/2", lines=True)
    >>> data.splitlines()[0][:39]
    b'{"format": "unitrack.db/2", "sha256": "'
    >>> unseal(data, "db.json", ("unitrack.db/2",))
    ({'trials': []}, 'unitrack.db/2')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unitrack.errors import CorruptStoreError, StorageError

__all__ = [
    "FRAME_HEADER_BYTES",
    "atomic_write",
    "frame",
    "read_frames",
    "seal",
    "unseal",
]

logger = logging.getLogger(__name__)

_SEAL = re.compile(rb'\{"format": "([A-Za-z0-9._/-]{1,64})", "sha256": "([0-9a-f]{64})",\n')

_HEX = frozenset(b"0123456789abcdef")


def atomic_write(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file beside it, fsync, rename, fsync the folder.

    ``mode`` is the new file's permission (before the umask), set when it is created: it is never visible with
    wider permissions.

    Raises:
        StorageError: when the disk is full or the folder is not writable (the old file is left intact).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"Could not write {path}: {exc.strerror or exc}. The previous file is unchanged."
        ) from exc


# ------------------------------------------------------------------------------------------- sealed JSON
def _digest(fmt: bytes, body: bytes) -> str:
    return hashlib.sha256(fmt + b"\n" + body).hexdigest()


def seal(data: dict[str, Any], fmt: str, *, lines: bool = False) -> bytes:
    """Encode ``data`` (a non-empty dict) as sealed JSON of format ``fmt``.

    The digest covers the format name and every byte after the first line, so the file can be checked before
    it is parsed. With ``lines`` each top-level key starts a line and each element of a top-level list sits on
    a line of its own (one trial per line: readable, and written by the C encoder, unlike ``indent``).
    """
    if not data or "format" in data or "sha256" in data:
        raise ValueError("a sealed JSON object needs at least one key, and neither 'format' nor 'sha256'")
    if lines:
        parts = []
        for key, value in data.items():
            if isinstance(value, list) and value:
                items = ",\n".join(json.dumps(v, allow_nan=True) for v in value)
                parts.append(f"{json.dumps(key)}: [\n{items}\n]")
            else:
                parts.append(f"{json.dumps(key)}: {json.dumps(value, allow_nan=True)}")
        text = ",\n".join(parts) + "}\n"
    else:
        text = json.dumps(data, allow_nan=True)[1:] + "\n"
    body = text.encode("ascii")  # ensure_ascii: the file is plain ASCII
    encoded_fmt = fmt.encode("ascii")
    return b'{"format": "%s", "sha256": "%s",\n%s' % (encoded_fmt, _digest(encoded_fmt, body).encode(), body)


def unseal(
    raw: bytes, path: str, formats: Iterable[str], *, advice: str | None = None, others_affected: bool = False
) -> tuple[dict[str, Any], str]:
    """Check and decode sealed JSON read from ``path``; return the object (without its seal) and its format.

    Raises:
        CorruptStoreError: naming ``path`` when the seal is malformed, the digest does not match, the format is
            not one of ``formats``, or the text is not one JSON object.
    """
    match = _SEAL.match(raw)
    if match is None:
        raise CorruptStoreError(
            path,
            0,
            "its first line is not a unitrack seal (format and sha256)",
            advice=advice,
            others_affected=others_affected,
        )
    fmt, digest = match.group(1), match.group(2).decode()
    body = raw[match.end() :]
    if _digest(fmt, body) != digest:
        raise CorruptStoreError(
            path,
            match.end(),
            "its content does not match the sha256 on its first line",
            advice=advice,
            others_affected=others_affected,
        )
    name = fmt.decode("ascii")
    if name not in formats:
        raise CorruptStoreError(
            path,
            12,
            f"format {name!r} is not one of {', '.join(sorted(formats))}",
            advice=advice,
            others_affected=others_affected,
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:  # the digest matched, so this is a writer's bug rather than damage
        raise CorruptStoreError(
            path,
            int(getattr(exc, "pos", 0)),
            "not valid JSON",
            advice=advice,
            others_affected=others_affected,
        ) from exc
    if not isinstance(data, dict):
        raise CorruptStoreError(path, 0, "not a JSON object", advice=advice, others_affected=others_affected)
    data.pop("format", None)
    data.pop("sha256", None)
    return data, name


# ------------------------------------------------------------------------------------------------ frames
#: ``<length:8 hex> <crc32 of payload:8 hex> <crc32 of the first 18 bytes:8 hex> `` before each payload.
FRAME_HEADER_BYTES = 27
_HEAD_HEX = tuple(i not in (8, 17, 26) for i in range(FRAME_HEADER_BYTES))
_HEADER = re.compile(rb"[0-9a-f]{8} [0-9a-f]{8} [0-9a-f]{8} ")


def frame(payload: bytes) -> bytes:
    """Frame one payload (a JSON object's text: no newline, ending in ``}``) for an append-only log.

    A frame is ``\n`` + header + payload: the newline *starts* a frame, so a frame cut short by a writer killed
    inside ``write()`` never swallows the frame appended after it, and the header's own checksum lets a reader
    tell a cut frame (shorter than its verified length) from a damaged one.
    """
    if b"\n" in payload or not payload.endswith(b"}"):
        raise ValueError("a frame's payload is one JSON object without newlines")
    head = b"%08x %08x " % (len(payload), zlib.crc32(payload))
    return b"\n%s%08x %s" % (head, zlib.crc32(head), payload)


def _classify(segment: bytes) -> bool | None:
    """True for a whole frame (without its leading newline), False for a cut one, None for damage.

    Cut: a strict prefix of a frame (a header prefix of hex digits and spaces, or a verified header followed by
    fewer payload bytes than it announces). Everything else that does not verify is damage. One flipped bit
    never turns a frame into a cut one: a changed length fails the header's checksum, and a byte turned into a
    newline leaves a remainder that is neither a frame nor a prefix of one (it ends with ``}``, which a header
    never holds).
    """
    head = segment[:FRAME_HEADER_BYTES]
    if len(segment) < FRAME_HEADER_BYTES:
        for byte, is_hex in zip(head, _HEAD_HEX, strict=False):  # a cut header: each byte fits its place?
            if (byte not in _HEX) if is_hex else (byte != 0x20):
                return None
        return False
    if _HEADER.match(head) is None:
        return None
    if int(head[18:26], 16) != zlib.crc32(head[:18]):
        return None
    length = int(head[:8], 16)
    got = len(segment) - FRAME_HEADER_BYTES
    if got < length:
        return False
    if got > length or int(head[9:17], 16) != zlib.crc32(segment[FRAME_HEADER_BYTES:]):
        return None
    return True


def read_frames(
    path: str,
    data: bytes,
    base: int,
    *,
    settled: bool,
    advice: str | None = None,
    others_affected: bool = False,
) -> tuple[list[tuple[int, bytes]], int]:
    """Verify and split the frames in ``data``, which starts at a frame boundary at byte ``base`` of ``path``.

    Returns ``(offset, payload)`` for each whole frame and the number of bytes consumed. A cut frame followed by
    another one was cut by a killed writer: it is skipped with a warning. A cut frame at the end is consumed
    (and skipped) only when ``settled`` (no writer can be appending to it now); otherwise it is left for the
    next read, as it may be a frame still being written.

    Raises:
        CorruptStoreError: naming the file and byte of the first damaged frame.
    """
    if not data:
        return [], 0
    if data[:1] != b"\n":
        raise CorruptStoreError(
            path,
            base,
            "a frame does not start where the previous one ends",
            advice=advice,
            others_affected=others_affected,
        )
    out: list[tuple[int, bytes]] = []
    segments = data.split(b"\n")
    pos = 0  # offset in data of the newline starting the current segment
    last = len(segments) - 1
    for i in range(1, len(segments)):
        segment = segments[i]
        state = _classify(segment)
        if state is None:
            raise CorruptStoreError(
                path,
                base + pos,
                "a frame fails its length or checksum",
                advice=advice,
                others_affected=others_affected,
            )
        if state:
            out.append((base + pos + 1 + FRAME_HEADER_BYTES, segment[FRAME_HEADER_BYTES:]))
        elif i == last and not settled:
            return out, pos
        else:
            logger.warning(
                "%s: skipped a cut frame at byte %d (%d bytes; its writer was killed while writing it, so that "
                "call never returned)",
                path,
                base + pos,
                len(segment) + 1,
            )
        pos += len(segment) + 1
    return out, pos
