"""Checkpoint files: ``<directory>/<variable>/<step>.pt``, saved by the Checkpointer and read back by :func:`load`.

Saving is crash-safe in this order (#12 item 5): the new file is written to a temporary file, fsynced and renamed
to ``<step>.pt``; the caller records it (``metadata['checkpoints']``); only then are older files deleted
(:func:`prune`). A kill at any moment leaves the recorded path naming a complete file; temporary files of killed
writers are removed by the next save in the folder.

A checkpoint is a dict holding only plain values and tensors, so it loads with ``torch.load(weights_only=True)``
(never a full unpickle; SEED_NOTES S15)::

    {"step": 120, "epoch": 3, ...            # the non-zero trigger counters
     "version": {"module": ..., "class": ..., "unitrack": ..., "torch": ...},
     "date": "01:17PM November 18, 2020",
     "state_dict": obj.state_dict()}
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from unitrack.errors import CheckpointNotFoundError, InvalidNameError, NotCheckpointableError
from unitrack.monitor.sink import HasStateDict
from unitrack.monitor.spec import TRIGGERS

__all__ = ["CheckpointNotFoundError", "NotCheckpointableError", "checkpoints", "load", "prune", "save"]

logger = logging.getLogger(__name__)

DATE_FORMAT = "%I:%M%p %B %d, %Y"

#: ``<step>.pt.<pid>.tmp`` (and the ``<step>.pt.tmp`` of older versions): a save in progress, or a killed one.
_TEMP = re.compile(r"\d+\.pt(?:\.(?P<pid>\d+))?\.tmp")


def _check_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise InvalidNameError("checkpoint", name, "it would not stay inside the checkpoints folder")
    return name


def checkpoints(folder: str | Path) -> dict[int, Path]:
    """Return the ``<step>.pt`` files of one variable's folder, by step (oldest first)."""
    path = Path(folder)
    if not path.is_dir():
        return {}
    found = {int(p.stem): p for p in path.glob("*.pt") if p.stem.isdigit()}
    return dict(sorted(found.items()))


def save(
    directory: str | Path,
    name: str,
    obj: HasStateDict,
    triggers: Mapping[str, int],
    date: datetime,
    to_keep: int | None = None,
) -> Path:
    """Save ``obj.state_dict()`` to ``<directory>/<name>/<step>.pt`` atomically, and keep the newest ``to_keep``.

    A caller that records the path somewhere (as the Checkpointer does in ``metadata['checkpoints']``) passes
    ``to_keep=None`` and calls :func:`prune` after recording it.

    Args:
        directory: The checkpoints folder.
        name: The variable's name (a folder name: no ``/``, no leading ``.``).
        obj: The object to save.
        triggers: The monitor's counters; non-zero ones are stored, ``step`` names the file.
        date: When, stored as text.
        to_keep: How many checkpoints of this variable to keep, newest first, deleted right after the save;
            None keeps all.

    Returns:
        The path written.

    Raises:
        NotCheckpointableError: ``obj`` has no ``state_dict``.
        InvalidNameError: ``name`` would escape ``directory``.
    """
    import torch

    if not isinstance(obj, HasStateDict) and not callable(getattr(obj, "state_dict", None)):
        raise NotCheckpointableError(name, obj)
    folder = Path(directory) / _check_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    cls = type(obj)
    from unitrack import __version__

    record: dict[str, Any] = {
        t.value: int(triggers.get(t.value, 0)) for t in TRIGGERS if triggers.get(t.value)
    }
    record["version"] = {
        "module": cls.__module__,
        "class": cls.__qualname__,
        "unitrack": __version__,
        "torch": str(torch.__version__),
    }
    record["date"] = date.strftime(DATE_FORMAT)
    record["state_dict"] = obj.state_dict()
    path = folder / f"{int(triggers.get('step', 0))}.pt"
    _remove_stale_temps(folder)
    tmp = folder / f"{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            torch.save(record, fh)
            fh.flush()
            os.fsync(fh.fileno())  # the rename below must never name a file whose bytes are not on disk
        os.replace(tmp, path)  # a crash mid-save never leaves a truncated <step>.pt
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(folder)
    if to_keep is not None:
        prune(folder, to_keep, keep=[path])
    return path


def prune(folder: str | Path, to_keep: int, keep: Iterable[str | Path] = ()) -> list[Path]:
    """Delete the oldest ``<step>.pt`` files of one variable's folder, keeping the newest ``to_keep``.

    Call it only after the checkpoint just saved is recorded wherever it is pointed to (the Checkpointer calls it
    after ``metadata['checkpoints']`` is written), so a kill in between never leaves a pointer to a deleted file.

    Args:
        folder: The variable's folder (``<checkpoints>/<name>``).
        to_keep: How many of the newest files to keep (at least the files in ``keep``).
        keep: Files never deleted (the ones just recorded).

    Returns:
        The files deleted.
    """
    protected = {Path(p).resolve() for p in keep}
    existing = [p for p in checkpoints(folder).values() if p.resolve() not in protected]
    room = max(to_keep - len(protected), 0)
    doomed = existing[: max(len(existing) - room, 0)]
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def _remove_stale_temps(folder: Path) -> None:
    """Remove temporary files of saves whose process is gone (killed mid-save)."""
    for entry in folder.iterdir():
        match = _TEMP.fullmatch(entry.name)
        if match is None:
            continue
        pid = match["pid"]
        if pid is not None and _alive(int(pid)):
            continue
        logger.info("removing %s, left by an interrupted save", entry)
        entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(
    load_dir: str | Path, step: int | None = None, attempt: bool = True, **modules: Any
) -> tuple[dict[str, Any], dict[str, int]]:
    """Load checkpoints into ``modules`` (passed as ``name=object``) from ``<load_dir>/<name>/<step>.pt``.

    Args:
        load_dir: The checkpoints folder (``<experiment>/checkpoints``).
        step: The step to load (the file ``<step>.pt`` exactly); None loads the newest.
        attempt: If True, a missing checkpoint is logged as a warning and the other modules still load; if False
            it raises.
        **modules: The objects to restore, with ``load_state_dict``.

    Returns:
        ``(modules, meta)``: the same modules, and the trigger counters stored with the first one loaded.

    Raises:
        CheckpointNotFoundError: With ``attempt=False``, a module has no checkpoint (at ``step``).

    Example:
        >>> import tempfile, torch
        >>> from datetime import datetime
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = save(folder, "net", torch.nn.Linear(2, 1), {"step": 10, "epoch": 2}, datetime(2020, 11, 18))
        ...     _, meta = load(folder, net=torch.nn.Linear(2, 1))
        >>> meta
        {'step': 10, 'epoch': 2}
    """
    import torch

    meta: dict[str, int] = {}
    for name, module in modules.items():
        folder = Path(load_dir) / _check_name(name)
        files = checkpoints(folder)
        path = files.get(step) if step is not None else (files[max(files)] if files else None)
        if path is None:
            error = CheckpointNotFoundError(name, str(folder), step, list(files))
            if not attempt:
                raise error
            logger.warning("%s; skipped", error)
            continue
        record = torch.load(path, weights_only=True, map_location="cpu")
        module.load_state_dict(record["state_dict"])
        logger.info("loaded %s from %s", name, path)
        if not meta:
            meta = {t.value: int(record[t.value]) for t in TRIGGERS if t.value in record}
    return modules, meta
