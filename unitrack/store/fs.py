"""Small filesystem helpers kept from cox."""

from __future__ import annotations

import logging
import os

__all__ = ["has_tensorboard", "mkdirp"]

logger = logging.getLogger(__name__)


def has_tensorboard(dirname: str | os.PathLike[str]) -> bool:
    """Whether ``dirname`` is a folder with a ``tensorboard`` folder in it.

    Example:
        >>> has_tensorboard("/nonexistent")
        False
    """
    return os.path.isdir(os.path.join(os.fspath(dirname), "tensorboard"))


def mkdirp(x: str | os.PathLike[str], should_msg: bool = False) -> None:
    """Make a folder and its parents; never raise (an existing or uncreatable folder is logged).

    Args:
        x: The folder.
        should_msg: Log at WARNING (instead of DEBUG) when the folder cannot be created.
    """
    try:
        os.makedirs(x, exist_ok=True)
    except OSError as exc:
        logger.log(logging.WARNING if should_msg else logging.DEBUG, "could not create %s: %s", x, exc)
