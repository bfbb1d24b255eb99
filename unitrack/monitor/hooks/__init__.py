"""Monitor hooks: Hook (base), Logger, Timer, XmenMessenger, Probe, TensorboardLogger, Checkpointer."""

from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.hooks.checkpointer import Checkpointer
from unitrack.monitor.hooks.logger import Logger, Timer
from unitrack.monitor.hooks.messenger import Keep, XmenMessenger
from unitrack.monitor.hooks.probe import Probe
from unitrack.monitor.hooks.tensorboard import SummaryType, TensorboardLogger

__all__ = [
    "Checkpointer",
    "Hook",
    "Keep",
    "Logger",
    "Probe",
    "SummaryType",
    "TensorboardLogger",
    "Timer",
    "XmenMessenger",
]
