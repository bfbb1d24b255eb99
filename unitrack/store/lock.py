"""The single-writer lock of a store: ``fcntl.flock`` on ``<store>/store.lock``.

The lock file says who holds it (``pid <pid> on <host>``) so a refused writer can name the holder. The file is
never deleted: deleting a lock file that another process holds would let a third process take a second lock on a
new inode (the bug of track's ``LockFileRemover``, SEED_NOTES S16). The kernel drops the lock when the holder
exits, even on SIGKILL, so there is no stale-lock cleanup to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

from unitrack.errors import StorageError, StoreLockedError

__all__ = ["StoreLock"]


class StoreLock:
    """An exclusive, non-blocking lock on one store folder.

    Args:
        path: The lock file.
        store_path: The store folder, for error messages.

    Raises:
        StoreLockedError: Another Store object or process holds the lock.
    """

    def __init__(self, path: str, store_path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(store_path, holder or "another writer (holder unknown)") from exc
            raise StorageError(f"Cannot lock {path}: {exc}", path=path) from exc
        self.fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        """Release the lock (idempotent). The file stays; its content is cleared first."""
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
