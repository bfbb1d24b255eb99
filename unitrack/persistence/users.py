"""The users file of ``unitrack serve``: names, roles and scrypt password hashes (never passwords).

The file is JSON, mode 0600, rewritten atomically (a temporary file beside it, then ``os.replace``). Each user
has a random 16-byte salt and an scrypt hash (``cryptography``). :meth:`UserStore.verify` takes the same time
for an unknown user as for a wrong password (it hashes against a dummy entry) and answers both the same way.

Roles:

- ``reader``: ``find_*`` only;
- ``writer``: also inserts, and updates of the trials it inserted (their ``tags['owner']``);
- ``admin``: everything.

Example:
    >>> import pathlib, tempfile
    >>> users = UserStore(pathlib.Path(tempfile.mkdtemp()) / "users.json")
    >>> users.add("ada", "correct horse", role="writer")
    >>> users.verify("ada", "correct horse"), users.verify("ada", "wrong"), users.verify("bob", "x")
    ('writer', None, None)
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from unitrack.errors import ConfigError, StorageError

__all__ = ["ROLES", "User", "UserStore", "generate_password", "hash_password"]

ROLES = ("reader", "writer", "admin")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: scrypt cost: 2**14 x 8 x 1 takes about 50 ms and 16 MiB, per login (once per connection).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    """One entry of the users file."""

    name: str
    role: str
    salt: bytes
    digest: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


def hash_password(
    password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    """scrypt(password, salt) as 32 bytes."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def generate_password() -> str:
    """A random password (24 URL-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)


_DUMMY = User("", "reader", b"\0" * 16, b"\0" * 32)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"Invalid user name {name!r}: use 1-64 letters, digits, '_', '.' or '-'.")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    return role


class UserStore:
    """The users file at ``path`` (created on the first :meth:`add`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------------------------------ reading
    def load(self) -> dict[str, User]:
        """Every user, by name ({} when the file does not exist).

        Raises:
            StorageError: when the file is writable by group or others, or unreadable.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRGRP | stat.S_IROTH):
            raise StorageError(
                f"Users file {self.path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run: chmod 600 {self.path}",
                path=str(self.path),
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            users = {}
            for name, entry in data["users"].items():
                users[name] = User(
                    name=_check_name(name),
                    role=_check_role(entry["role"]),
                    salt=base64.b64decode(entry["salt"]),
                    digest=base64.b64decode(entry["hash"]),
                    n=int(entry["n"]),
                    r=int(entry["r"]),
                    p=int(entry["p"]),
                )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"Users file {self.path} is unreadable: {exc}. Recreate it with 'unitrack user add'.",
                path=str(self.path),
            ) from exc
        return users

    def list(self) -> list[tuple[str, str]]:
        """``(name, role)`` of every user, sorted by name."""
        return sorted((u.name, u.role) for u in self.load().values())

    def verify(self, name: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same work for an unknown user)."""
        user = self.load().get(name) if isinstance(name, str) else None
        entry = user if user is not None else _DUMMY
        digest = hash_password(password, entry.salt, entry.n, entry.r, entry.p)
        matches = hmac.compare_digest(digest, entry.digest)
        return user.role if user is not None and matches else None

    # ------------------------------------------------------------------------------------------ writing
    def add(self, name: str, password: str, role: str = "writer") -> None:
        """Add a user.

        Raises:
            ConfigError: for a bad name or role, a password shorter than 8 characters, or an existing user.
        """
        users = self.load()
        _check_name(name)
        if name in users:
            raise ConfigError(f"User {name!r} exists; use 'unitrack user passwd' to change the password.")
        users[name] = self._make(name, password, _check_role(role))
        self._save(users)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password (the role is kept)."""
        users = self.load()
        if name not in users:
            raise ConfigError(f"No user {name!r} in {self.path}.")
        users[name] = self._make(name, password, users[name].role)
        self._save(users)

    def remove(self, name: str) -> None:
        """Remove a user."""
        users = self.load()
        if users.pop(name, None) is None:
            raise ConfigError(f"No user {name!r} in {self.path}.")
        self._save(users)

    @staticmethod
    def _make(name: str, password: str, role: str) -> User:
        if not isinstance(password, str) or len(password) < _MIN_PASSWORD:
            raise ConfigError(f"Password for {name!r} is too short; use at least {_MIN_PASSWORD} characters.")
        salt = secrets.token_bytes(16)
        return User(name, role, salt, hash_password(password, salt))

    def _save(self, users: Mapping[str, User]) -> None:
        data: dict[str, Any] = {
            "version": 1,
            "users": {
                u.name: {
                    "role": u.role,
                    "salt": base64.b64encode(u.salt).decode(),
                    "hash": base64.b64encode(u.digest).decode(),
                    "n": u.n,
                    "r": u.r,
                    "p": u.p,
                }
                for u in users.values()
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"Could not write users file {self.path}: {exc}", path=str(self.path)) from exc
