"""track's ``track.persistence.socketed`` names, re-exported from the modules that own them.

``SocketClient`` is :class:`~unitrack.persistence.client.SocketProtocol`; ``SocketServer`` and
``start_track_server`` live in :mod:`unitrack.persistence.server`; ``to_bytes``/``to_obj`` in
:mod:`unitrack.persistence.wire` (JSON, never pickle). track's AES layer is not reproduced: use TLS.
"""

from __future__ import annotations

from unitrack.errors import RPCCallFailure
from unitrack.persistence.client import SocketProtocol
from unitrack.persistence.server import SocketServer, start_track_server
from unitrack.persistence.wire import to_bytes, to_obj

__all__ = ["RPCCallFailure", "SocketClient", "SocketServer", "start_track_server", "to_bytes", "to_obj"]

SocketClient = SocketProtocol
