"""unitrack: track machine-learning experiments.

One façade over three older libraries: cox's Store of HDF5 tables, xmen's Experiment and Monitor, and track's
persistence Protocol with backends chosen by URI. Names are imported on first use, so ``import unitrack`` stays
fast and loads neither pandas nor torch.

Example:
    >>> import unitrack
    >>> protocol = unitrack.get_protocol("ephemeral://")
    >>> type(protocol).__name__
    'EphemeralProtocol'
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# name -> module that owns it; resolved on first attribute access (PEP 562).
_LAZY: dict[str, str] = {
    "get_protocol": "unitrack.persistence.registry",
    "register": "unitrack.persistence.registry",
    "parse_uri": "unitrack.persistence.uri",
    "Protocol": "unitrack.persistence.protocol",
    "ProtocolMultiplexer": "unitrack.persistence.multiplexer",
    "TrackClient": "unitrack.persistence.track",
    "Project": "unitrack.persistence.structure",
    "TrialGroup": "unitrack.persistence.structure",
    "Trial": "unitrack.persistence.structure",
    "Status": "unitrack.persistence.structure",
    "UnitrackError": "unitrack.errors",
    "runs": "unitrack.persistence.catalog",
    "Store": "unitrack.store",
    "Table": "unitrack.store",
    "CollectionReader": "unitrack.store.readers",
    "Experiment": "unitrack.experiment",
    "Root": "unitrack.experiment",
    "Monitor": "unitrack.monitor",
    "TorchMonitor": "unitrack.monitor",
    "plot": "unitrack.ui.notebook",
}

__all__ = [
    "CollectionReader",
    "Experiment",
    "Monitor",
    "Project",
    "Protocol",
    "ProtocolMultiplexer",
    "Root",
    "Status",
    "Store",
    "Table",
    "TorchMonitor",
    "TrackClient",
    "Trial",
    "TrialGroup",
    "UnitrackError",
    "get_protocol",
    "parse_uri",
    "plot",
    "register",
    "runs",
]

if TYPE_CHECKING:
    from unitrack.errors import UnitrackError
    from unitrack.experiment import Experiment, Root
    from unitrack.monitor import Monitor, TorchMonitor
    from unitrack.persistence.catalog import runs
    from unitrack.persistence.multiplexer import ProtocolMultiplexer
    from unitrack.persistence.protocol import Protocol
    from unitrack.persistence.registry import get_protocol, register
    from unitrack.persistence.structure import Project, Status, Trial, TrialGroup
    from unitrack.persistence.track import TrackClient
    from unitrack.persistence.uri import parse_uri
    from unitrack.store import Store, Table
    from unitrack.store.readers import CollectionReader
    from unitrack.ui.notebook import plot


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unitrack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
