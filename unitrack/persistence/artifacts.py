"""Artifacts: files stored with a run (its code, a config, a folder of plots), on every backend.

track's ``log_code``/``log_file``/``log_directory`` kept nothing; here an artifact is bytes under a name such
as ``code/train.py``, and the trial's ``metadata["artifacts"]`` lists every one with its size and sha256:

- a backend with a folder per run (``hdf5://``: ``<trial>/artifacts/<name>``; ``file://`` and ``pickled://``:
  ``<database>.artifacts/<uid>/<name>``) keeps the bytes in that folder, beside the run, and the metadata entry
  holds only their size and checksum;
- every other backend (``postgresql://``, ``ephemeral://``, a ``unitrack serve`` server through ``socket://``,
  a multiplexer) keeps the bytes, base64-encoded, in the metadata entry itself, so they travel as plain JSON
  data through the server's usual calls.

An artifact is at most :data:`MAX_ARTIFACT_BYTES` (the server's frames must hold it). Its bytes are only ever
returned as bytes: nothing here executes, imports or unpickles them. Names are relative paths of safe parts
(no ``..``, no absolute paths), so an artifact cannot be written or read outside its folder; a checksum that does
not match raises :class:`~unitrack.errors.CorruptStoreError`.

Example:
    >>> from unitrack.persistence.backends.ephemeral import EphemeralProtocol
    >>> from unitrack.persistence.structure import Trial
    >>> db = EphemeralProtocol(strict=False)
    >>> trial = db.new_trial(Trial(name="run"))
    >>> log_artifact(db, trial, "notes/readme.txt", b"hello")
    >>> read_artifact(db, trial, "notes/readme.txt")
    b'hello'
    >>> list(list_artifacts(db, trial))
    ['notes/readme.txt']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import unicodedata
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unitrack.errors import CorruptStoreError, NotFoundError, SchemaError, StorageError
from unitrack.persistence.protocol import Protocol, TrialRef, trial_uid
from unitrack.persistence.structure import TrialUpdate

__all__ = [
    "MAX_ARTIFACT_BYTES",
    "MAX_DIRECTORY_BYTES",
    "artifact_entries",
    "check_artifact_name",
    "list_artifacts",
    "log_artifact",
    "log_artifacts",
    "read_artifact",
]

logger = logging.getLogger(__name__)

#: The largest artifact (4 MiB): its base64 form must fit a server frame (8 MiB) with room to spare.
MAX_ARTIFACT_BYTES = 4 * 1024 * 1024
#: The most ``log_directory`` stores in one call.
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
#: The metadata key listing a trial's artifacts.
METADATA_KEY = "artifacts"


def check_artifact_name(name: object) -> str:
    """Return ``name`` if it is a relative path of safe parts (``code/train.py``), else raise.

    Raises:
        SchemaError: for an empty, absolute or ``..`` path, a backslash, a control character, or a part longer
            than 255 characters.
    """
    if not isinstance(name, str) or not name:
        raise SchemaError(f"Artifact name {name!r} must be a non-empty str such as 'code/train.py'.")
    parts = name.split("/")
    for part in parts:
        if (
            part in ("", ".", "..")
            or "\\" in part
            or len(part) > 255
            or any(unicodedata.category(ch).startswith("C") for ch in part)
        ):
            raise SchemaError(
                f"Artifact name {name!r} is not a relative path of plain parts (no '..', '//', leading '/', "
                "backslash or control character). Name it like 'code/train.py'.",
                name=name,
            )
    if len(parts) > 32:
        raise SchemaError(f"Artifact name {name!r} is nested more than 32 folders deep.", name=name)
    return name


def _folder(protocol: Protocol, uid: str) -> Path | None:
    """The folder beside the run where ``protocol`` keeps its artifacts, or None to keep them in metadata."""
    locate = getattr(protocol, "artifact_dir", None)
    if locate is None or "/" in uid or uid in (".", "..") or "\x00" in uid:
        return None
    folder = locate(uid)
    return None if folder is None else Path(folder)


def artifact_entries(trial: Any) -> dict[str, dict[str, Any]]:
    """The ``metadata["artifacts"]`` listing of a Trial (``{}`` when it has none)."""
    entries = getattr(trial, "metadata", {}).get(METADATA_KEY)
    return dict(entries) if isinstance(entries, Mapping) else {}


def _current(protocol: Protocol, uid: str) -> Any:
    found = protocol.fetch_trials({"uid": uid})
    if not found:
        raise NotFoundError(f"Trial {uid!r} is not in the backend; cannot store artifacts for it.", uid=uid)
    return found[0]


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise StorageError(f"Could not write artifact {path}: {exc}", path=str(path)) from exc


def _inside(folder: Path, name: str) -> Path:
    path = folder.joinpath(*name.split("/"))
    if not path.resolve().is_relative_to(folder.resolve()):
        raise SchemaError(f"Artifact {name!r} would leave {folder}; refused.", name=name)
    return path


def log_artifacts(protocol: Protocol, trial: TrialRef, files: Mapping[str, bytes]) -> None:
    """Store several artifacts of one trial with one metadata update.

    Args:
        protocol: The backend.
        trial: The trial (or its uid).
        files: ``{name: bytes}``.

    Raises:
        SchemaError: a name is unsafe, or an artifact is larger than :data:`MAX_ARTIFACT_BYTES`.
        NotFoundError: the trial is not in the backend.
        StorageError: a file could not be written.
    """
    uid = trial_uid(trial)
    for name, data in files.items():
        check_artifact_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SchemaError(f"Artifact {name!r} must be bytes, not {type(data).__name__}.", name=name)
        if len(data) > MAX_ARTIFACT_BYTES:
            raise SchemaError(
                f"Artifact {name!r} is {len(data):,} bytes; the limit is {MAX_ARTIFACT_BYTES:,}. Store large "
                "files (checkpoints, data sets) next to the run yourself and log their path as metadata.",
                name=name,
                size=len(data),
            )
    folder = _folder(protocol, uid)
    entries = artifact_entries(_current(protocol, uid))
    for name, data in files.items():
        raw = bytes(data)
        entry: dict[str, Any] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        if folder is not None:
            _write_file(_inside(folder, name), raw)
        else:
            entry["data"] = base64.b64encode(raw).decode("ascii")
        entries[name] = entry
    protocol.update_trial(uid, TrialUpdate(metadata={METADATA_KEY: entries}))


def log_artifact(protocol: Protocol, trial: TrialRef, name: str, data: bytes) -> None:
    """Store ``data`` as the artifact ``name`` of ``trial`` (replacing one of that name). See :func:`log_artifacts`."""
    log_artifacts(protocol, trial, {name: data})


def list_artifacts(protocol: Protocol, trial: TrialRef) -> dict[str, int]:
    """``{name: size in bytes}`` of every artifact of the trial, as the backend holds it now."""
    entries = artifact_entries(_current(protocol, trial_uid(trial)))
    return {name: int(entry.get("size", 0)) for name, entry in sorted(entries.items())}


def read_artifact(protocol: Protocol, trial: TrialRef, name: str) -> bytes:
    """Return the bytes of artifact ``name`` (checked against its sha256; never executed or unpickled).

    Raises:
        NotFoundError: the trial has no artifact of that name, or it was kept beside the run by another backend
            (copy runs with ``unitrack sync``, which brings artifacts along).
        CorruptStoreError: the bytes do not match the checksum recorded when they were stored.
    """
    uid = trial_uid(trial)
    check_artifact_name(name)
    entry = artifact_entries(_current(protocol, uid)).get(name)
    if not isinstance(entry, Mapping):
        raise NotFoundError(f"Trial {uid!r} has no artifact {name!r}.", uid=uid, name=name)
    where = f"artifact {name!r} of trial {uid}"
    if "data" in entry:
        try:
            raw = base64.b64decode(str(entry["data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CorruptStoreError(where, 0, f"its data is not base64 ({exc})") from exc
    else:
        folder = _folder(protocol, uid)
        if folder is None:
            raise NotFoundError(
                f"Artifact {name!r} of trial {uid!r} was kept beside the run by the backend that logged it; "
                "read it there, or copy the run here with 'unitrack sync', which brings its artifacts.",
                uid=uid,
                name=name,
            )
        path = _inside(folder, name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"Artifact file {path} is missing.", uid=uid, name=name) from exc
        where = str(path)
    if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
        raise CorruptStoreError(where, 0, "its bytes do not match the sha256 recorded when it was stored")
    return raw
