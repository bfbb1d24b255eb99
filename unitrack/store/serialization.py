"""Serialized columns: OBJECT (dill + base64 inline), PICKLE (dill file) and PYTORCH_STATE (``torch.save`` file).

Decoding dill runs code chosen by whoever wrote the data, so the decoders here are only called when the caller
asked for them explicitly (``Table.get_object``/``get_pickle``, or ``CollectionReader.df(..., trusted=True)``).
PYTORCH_STATE is always read with ``torch.load(weights_only=True)``. Ids read from cells are validated and the
resolved path must lie inside ``.table_objects`` before any file is opened (SEED_NOTES S2).
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from pathlib import Path
from typing import Any

import dill

from unitrack.errors import InvalidNameError, MissingDependencyError, NotFoundError, SchemaError
from unitrack.store.names import validate_object_id

__all__ = [
    "load_pickle",
    "load_torch_state",
    "obj_to_string",
    "object_path",
    "save_pickle",
    "save_torch_state",
    "string_to_obj",
]


def obj_to_string(obj: Any) -> str:
    """Serialize an object into text: dill, then base64.

    Args:
        obj: Any object dill can serialize.

    Returns:
        The ASCII text.

    Example:
        >>> string_to_obj(obj_to_string({"a": [1, 2]}))
        {'a': [1, 2]}
    """
    return base64.b64encode(dill.dumps(obj)).decode("ascii")


def string_to_obj(s: Any) -> Any:
    """Deserialize text made by :func:`obj_to_string`. Only call it on data you trust: it runs dill.

    ``None`` and ``''`` give ``None`` and a non-string is returned unchanged, as in cox; unlike cox, text that is
    not a serialized object raises instead of being returned as if it were the value. cox's own text (base64
    with a newline every 76 characters) is read too.

    Args:
        s: The text.

    Returns:
        The object.

    Raises:
        SchemaError: ``s`` is not base64-encoded dill data.
    """
    if s is None or s == "":
        return None
    if not isinstance(s, str):
        return s
    try:
        raw = base64.b64decode("".join(s.split("\n")).encode("ascii"), validate=True)
        return dill.loads(raw)  # noqa: S301 - explicit opt-in by the caller (see module docstring)
    except (binascii.Error, UnicodeEncodeError, ValueError, EOFError, dill.UnpicklingError) as exc:
        raise SchemaError(f"Cannot decode an OBJECT value ({s[:40]!r}...): {exc}", value=s[:40]) from exc


def object_path(objects_dir: str | os.PathLike[str], uid: Any) -> Path:
    """Return the file of a stored object, after checking the id and that the path stays in ``objects_dir``.

    Args:
        objects_dir: The store's ``.table_objects`` folder.
        uid: The id read from a cell.

    Returns:
        The resolved path.

    Raises:
        InvalidNameError: The id is malformed or resolves outside ``objects_dir``.
    """
    name = validate_object_id(uid)
    root = Path(objects_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        # The id was well formed but a symlink took it outside the folder.
        raise InvalidNameError("object id", name, f"it resolves outside {root}")
    return path


def _new_file(objects_dir: str | os.PathLike[str]) -> tuple[str, Path, Path]:
    uid = uuid.uuid4().hex
    final = Path(objects_dir) / uid
    return uid, final, Path(objects_dir) / f".{uid}.tmp"


def _finish(tmp: Path, final: Path, fsync: bool) -> None:
    # Write-then-rename: a crash never leaves a half-written object under its final name.
    if fsync:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, final)


def save_pickle(objects_dir: str | os.PathLike[str], value: Any, *, fsync: bool = False) -> str:
    """Write ``value`` with dill into a new file of ``objects_dir`` and return its id."""
    uid, final, tmp = _new_file(objects_dir)
    with open(tmp, "wb") as fh:
        dill.dump(value, fh)
    _finish(tmp, final, fsync)
    return uid


def load_pickle(objects_dir: str | os.PathLike[str], uid: Any) -> Any:
    """Read a PICKLE object. Only call it on stores you trust: it runs dill.

    Raises:
        InvalidNameError: The id is malformed.
        NotFoundError: No object has that id.
    """
    path = object_path(objects_dir, uid)
    try:
        with open(path, "rb") as fh:
            return dill.load(fh)  # noqa: S301 - explicit opt-in by the caller (see module docstring)
    except FileNotFoundError as exc:
        raise NotFoundError(f"No stored object {uid!r} in {objects_dir}.", uid=uid) from exc


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("PYTORCH_STATE columns", "torch", "torch") from exc
    return torch


def save_torch_state(objects_dir: str | os.PathLike[str], value: Any, *, fsync: bool = False) -> str:
    """Save ``value.state_dict()`` (or ``value`` itself) with ``torch.save`` into ``objects_dir``; return its id."""
    torch = _torch()
    state = value.state_dict() if hasattr(value, "state_dict") else value
    uid, final, tmp = _new_file(objects_dir)
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
    _finish(tmp, final, fsync)
    return uid


def load_torch_state(objects_dir: str | os.PathLike[str], uid: Any, **kwargs: Any) -> Any:
    """Read a PYTORCH_STATE object with ``torch.load(weights_only=True)``.

    Args:
        objects_dir: The store's ``.table_objects`` folder.
        uid: The id read from the cell.
        **kwargs: Passed to ``torch.load`` (``map_location``...); ``weights_only`` is always True.

    Raises:
        InvalidNameError: The id is malformed.
        NotFoundError: No object has that id.
    """
    torch = _torch()
    path = object_path(objects_dir, uid)
    kwargs.pop("pickle_module", None)
    kwargs["weights_only"] = True
    try:
        return torch.load(path, **kwargs)
    except FileNotFoundError as exc:
        raise NotFoundError(f"No stored object {uid!r} in {objects_dir}.", uid=uid) from exc
