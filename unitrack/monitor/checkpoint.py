"""Checkpoint files: ``<directory>/<variable>/<step>.pt``, saved by the Checkpointer and read back by :func:`load`.

A checkpoint is a dict holding only plain values and tensors, so it loads with ``torch.load(weights_only=True)``
(never a full unpickle; SEED_NOTES S15)::

    {"step": 120, "epoch": 3, ...            # the non-zero trigger counters
     "version": {"module": ..., "class": ..., "unitrack": ..., "torch": ...},
     "date": "01:17PM November 18, 2020",
     "state_dict": obj.state_dict()}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from unitrack.errors import CheckpointNotFoundError, InvalidNameError, NotCheckpointableError
from unitrack.monitor.sink import HasStateDict
from unitrack.monitor.spec import TRIGGERS

__all__ = ["CheckpointNotFoundError", "NotCheckpointableError", "checkpoints", "load", "save"]

logger = logging.getLogger(__name__)

DATE_FORMAT = "%I:%M%p %B %d, %Y"


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
    """Save ``obj.state_dict()`` to ``<directory>/<name>/<step>.pt`` and keep the newest ``to_keep`` files.

    Args:
        directory: The checkpoints folder.
        name: The variable's name (a folder name: no ``/``, no leading ``.``).
        obj: The object to save.
        triggers: The monitor's counters; non-zero ones are stored, ``step`` names the file.
        date: When, stored as text.
        to_keep: How many checkpoints of this variable to keep, newest first; None keeps all.

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
    tmp = path.with_suffix(".pt.tmp")
    torch.save(record, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a truncated <step>.pt
    if to_keep is not None:
        existing = list(checkpoints(folder).values())
        for old in existing[: max(len(existing) - to_keep, 0)]:
            old.unlink()
    return path


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
