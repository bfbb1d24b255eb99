"""The ``protocol`` fixture: every backend, so the contract suite is written once.

Adding a backend means adding its scheme to BACKENDS; ``test_every_registered_scheme_is_in_the_contract_suite``
fails until it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from unitrack.persistence.backends.ephemeral import EphemeralProtocol
from unitrack.persistence.backends.file import FileProtocol
from unitrack.persistence.backends.hdf5 import HDF5Protocol
from unitrack.persistence.multiplexer import ProtocolMultiplexer
from unitrack.persistence.protocol import Protocol


def _pickled(tmp: Path, strict: bool) -> Protocol:
    from unitrack.persistence.backends.pickled import PickledProtocol

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the compatibility warning is tested in test_pickled.py
        return PickledProtocol(f"pickled://{tmp}/db.pkl", strict=strict)


#: scheme (or wrapper name) -> factory(tmp_path, strict) building a fresh, empty backend.
BACKENDS: dict[str, Callable[[Path, bool], Protocol]] = {
    "ephemeral": lambda tmp, strict: EphemeralProtocol("ephemeral://", strict=strict),
    "file": lambda tmp, strict: FileProtocol(f"file://{tmp}/db.json", strict=strict),
    "hdf5": lambda tmp, strict: HDF5Protocol(f"hdf5://{tmp}/runs", strict=strict),
    "pickled": _pickled,
    "multiplexer": lambda tmp, strict: ProtocolMultiplexer(
        FileProtocol(f"file://{tmp}/a.json", strict=strict), EphemeralProtocol(strict=strict)
    ),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_protocol(backend_name: str, tmp_path: Path) -> Iterator[Callable[..., Protocol]]:
    made: list[Protocol] = []

    def make(strict: bool = True) -> Protocol:
        protocol = BACKENDS[backend_name](tmp_path, strict)
        made.append(protocol)
        return protocol

    yield make
    for protocol in made:
        protocol.close()


@pytest.fixture
def protocol(make_protocol: Callable[..., Protocol]) -> Protocol:
    return make_protocol()
