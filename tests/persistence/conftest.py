"""The ``protocol`` fixture: every backend, so the contract suite is written once.

Adding a backend means adding its scheme to BACKENDS; ``test_every_registered_scheme_is_in_the_contract_suite``
fails until it is.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.persistence import pg
from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.multiplexer import ProtocolMultiplexer
from unitrack.persistence.protocol import Protocol

if TYPE_CHECKING:
    from unitrack.persistence.users import UserStore


def _pickled(tmp: Path, strict: bool) -> Protocol:
    from unitrack.persistence.backends.pickled import PickledProtocol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the compatibility warning is tested in test_pickled.py
        return PickledProtocol(f"pickled://{tmp}/db.pkl", strict=strict)


def _postgresql(tmp: Path, strict: bool, *, server_uri: str) -> Protocol:
    from unitrack.persistence.backends.sql import SQLProtocol

    return SQLProtocol(pg.schema_uri(server_uri, str(tmp)), strict=strict)


#: The admin of every test server (scrypt hashing once per session keeps the fixtures fast).
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-for-tests"


def make_users(path: Path, **extra: tuple[str, str]) -> UserStore:
    """A users file with the test admin plus ``name=(password, role)`` entries."""
    from unitrack.persistence.users import UserStore

    users = UserStore(path)
    users.add(ADMIN, ADMIN_PASSWORD, role="admin")
    for name, (password, role) in extra.items():
        users.add(name, password, role=role)
    return users


def _socket(tmp: Path, strict: bool) -> Protocol:
    """A SocketProtocol talking to a real server on 127.0.0.1 in front of an EphemeralProtocol."""
    from unitrack.persistence.client import SocketProtocol
    from unitrack.persistence.server import ServerThread

    tmp.mkdir(parents=True, exist_ok=True)
    users_file = tmp / f"users-{len(list(tmp.glob('users-*')))}.json"
    server = ServerThread(EphemeralProtocol(strict=strict), make_users(users_file)).start()
    client = SocketProtocol(f"socket://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{server.port}", strict=strict)
    close = client.close

    def close_both() -> None:
        try:
            close()
        finally:
            server.stop()

    client.close = close_both  # type: ignore[method-assign]
    return client


#: scheme (or wrapper name) -> factory(tmp_path, strict) building a fresh, empty backend. Factories that
#: need a server take it as a keyword (see NEEDS_SERVER).
BACKENDS: dict[str, Callable[..., Protocol]] = {
    "ephemeral": lambda tmp, strict: EphemeralProtocol("ephemeral://", strict=strict),
    "file": lambda tmp, strict: FileProtocol(f"file://{tmp}/db.json", strict=strict),
    "hdf5": lambda tmp, strict: HDF5Protocol(f"hdf5://{tmp}/runs", strict=strict),
    "pickled": _pickled,
    "socket": _socket,
    "multiplexer": lambda tmp, strict: ProtocolMultiplexer(
        FileProtocol(f"file://{tmp}/a.json", strict=strict), EphemeralProtocol(strict=strict)
    ),
    "postgresql": _postgresql,
}
#: backend -> the session fixture giving its ``server_uri``.
NEEDS_SERVER = {"postgresql": "postgres_uri"}


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A private PostgreSQL server for the session; skipped (failed under CI=true) without the binaries."""
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing under CI: {pg.ENABLE_HINT}")
        pytest.skip(pg.ENABLE_HINT)
    with pg.postgres_server(bin_dir) as uri:
        yield uri


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_protocol(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Protocol]]:
    made: list[Protocol] = []
    factory = BACKENDS[backend_name]
    if backend_name in NEEDS_SERVER:
        factory = functools.partial(factory, server_uri=request.getfixturevalue(NEEDS_SERVER[backend_name]))

    def make(strict: bool = True) -> Protocol:
        protocol = factory(tmp_path, strict)
        made.append(protocol)
        return protocol

    yield make
    for protocol in made:
        protocol.close()


@pytest.fixture
def protocol(make_protocol: Callable[..., Protocol]) -> Protocol:
    return make_protocol()
