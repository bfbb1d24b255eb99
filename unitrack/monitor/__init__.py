"""Monitor: count nested training loops and run hooks (logging, messages, checkpoints, TensorBoard).

torch and tensorboardX are imported only when a checkpoint or a summary is written.
"""

from unitrack.monitor.checkpoint import CheckpointNotFoundError, NotCheckpointableError, load
from unitrack.monitor.hooks import (
    Checkpointer,
    Hook,
    Logger,
    Probe,
    TensorboardLogger,
    Timer,
    XmenMessenger,
)
from unitrack.monitor.monitor import Monitor, TorchMonitor
from unitrack.monitor.sink import HasStateDict, MessageSink, MetadataSink, MetricSink
from unitrack.monitor.spec import Every, Spec, Trigger, parse_spec

__all__ = [
    "CheckpointNotFoundError",
    "Checkpointer",
    "Every",
    "HasStateDict",
    "Hook",
    "Logger",
    "MessageSink",
    "MetadataSink",
    "MetricSink",
    "Monitor",
    "NotCheckpointableError",
    "Probe",
    "Spec",
    "TensorboardLogger",
    "Timer",
    "Trigger",
    "TorchMonitor",
    "XmenMessenger",
    "load",
    "parse_spec",
]
