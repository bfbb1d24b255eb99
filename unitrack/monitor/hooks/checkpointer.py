"""Checkpointer: save ``state_dict()`` of selected variables every N steps/epochs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitrack.monitor import checkpoint
from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.sink import HasStateDict
from unitrack.monitor.spec import Every

if TYPE_CHECKING:
    from unitrack.monitor.monitor import Monitor

__all__ = ["Checkpointer"]

logger = logging.getLogger(__name__)


class Checkpointer(Hook):
    """Save each selected object to ``<directory>/checkpoints/<var>/<step>.pt`` (see :mod:`..checkpoint`).

    Args:
        spec: ``"{regex}@{modulo}{trigger}"``; the regex should select objects with ``state_dict()``.
        to_keep: Keep the newest ``to_keep`` checkpoints of each variable (files already there count), deleting
            older ones only after the new one is recorded; None keeps all.
        expand: Save each value of a dict variable as ``<var>_<key>``.
        save_dir: Save under this folder instead of ``<monitor.directory>/checkpoints``.

    A selected object without ``state_dict()`` is skipped with a ``UserWarning`` naming it (once per name). The
    paths saved go to :meth:`Monitor.record_checkpoints <unitrack.monitor.Monitor.record_checkpoints>` (the
    attached experiment's ``metadata['checkpoints']``).
    """

    def __init__(
        self,
        spec: str | Every,
        to_keep: int | None = None,
        expand: bool = True,
        save_dir: str | Path | None = None,
    ) -> None:
        super().__init__(spec)
        self.to_keep = to_keep
        self.expand = expand
        self.save_dir = save_dir
        self._warned: set[str] = set()

    def objects(self, var_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Return the objects to save by name, dicts expanded when ``expand``."""
        objects: dict[str, Any] = {}
        for name, value in var_dict.items():
            if self.expand and isinstance(value, Mapping) and not isinstance(value, HasStateDict):
                objects.update({f"{name}_{key}": item for key, item in value.items()})
            else:
                objects[name] = value
        return objects

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Save every selected object that has ``state_dict()``."""
        if self.save_dir is not None:
            directory = Path(self.save_dir)
        elif monitor.directory is not None:
            directory = Path(monitor.directory) / "checkpoints"
        else:
            if "" not in self._warned:
                self._warned.add("")
                warnings.warn(
                    f"{self!r} has nowhere to save: give the Monitor a directory", UserWarning, stacklevel=2
                )
            return
        saved: dict[str, Path] = {}
        for name, obj in self.objects(var_dict).items():
            if not callable(getattr(obj, "state_dict", None)):
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(
                        str(checkpoint.NotCheckpointableError(name, obj)), UserWarning, stacklevel=2
                    )
                continue
            saved[name] = checkpoint.save(directory, name, obj, monitor.triggers, monitor.now())
        if saved:
            monitor.report(f"saved {list(saved)} at {directory}")
            # Record the new files first, then delete old ones: a kill in between leaves an extra file (deleted
            # by the next save), never metadata['checkpoints'] naming a deleted one (#12 item 5).
            monitor.record_checkpoints(saved)
            if self.to_keep is not None:
                for path in saved.values():
                    checkpoint.prune(path.parent, self.to_keep, keep=[path])
