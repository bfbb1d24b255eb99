"""``unitrack.lightning``: the seed's module path for the Lightning 2.x loggers (xmen shipped ``xmen.lightning``).

See :mod:`unitrack.integrations.lightning`. Importing this module imports ``lightning``.
"""

from unitrack.integrations.lightning import MonitorLogger, TensorBoardLogger, UnitrackLogger

__all__ = ["MonitorLogger", "TensorBoardLogger", "UnitrackLogger"]
