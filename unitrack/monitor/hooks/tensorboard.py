"""TensorboardLogger: write selected variables as TensorBoard summaries with tensorboardX."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unitrack.errors import ConfigError
from unitrack.monitor.grid import make_grid
from unitrack.monitor.hooks.base import Hook
from unitrack.monitor.sink import MetricSink
from unitrack.monitor.spec import Every

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

    from unitrack.monitor.monitor import Monitor

__all__ = ["SummaryType", "TensorboardLogger", "close_writers", "get_writer"]

logger = logging.getLogger(__name__)

_GRID_OPTIONS = frozenset({"nrow", "padding", "normalize", "range", "value_range", "scale_each", "pad_value"})

# One writer per folder for the whole process: several hooks (and monitors) on one folder share one event file.
_writers: dict[Path, SummaryWriter] = {}
_writers_lock = threading.Lock()


def get_writer(directory: str | Path) -> SummaryWriter:
    """Return the cached tensorboardX ``SummaryWriter`` writing to ``directory``, creating it on first use."""
    from tensorboardX import SummaryWriter

    path = Path(directory).resolve()
    with _writers_lock:
        writer = _writers.get(path)
        if writer is None:
            path.mkdir(parents=True, exist_ok=True)
            writer = _writers[path] = SummaryWriter(logdir=str(path))
        return writer


def close_writers(directory: str | Path | None = None) -> None:
    """Flush and close the cached writer of ``directory`` (all writers when None)."""
    with _writers_lock:
        paths = list(_writers) if directory is None else [Path(directory).resolve()]
        for path in paths:
            writer = _writers.pop(path, None)
            if writer is not None:
                writer.close()


class SummaryType(str, enum.Enum):
    """The TensorBoard summaries a TensorboardLogger can write."""

    IMAGE = "image"
    SCALAR = "scalar"
    HISTOGRAM = "histogram"
    FIGURE = "figure"
    VIDEO = "video"
    TEXT = "text"
    PR_CURVE = "pr_curve"
    MESH = "mesh"


def _detach(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().clone()
    return value


class TensorboardLogger(Hook):
    """Write each selected variable as a TensorBoard summary to ``<monitor.directory>/tensorboard``.

    Per variable: ``fn`` is applied; the summary is named ``prefix + name``; a dict gives one summary per key
    (``name_key`` if ``prepend`` else ``key``) and a list or tuple one per item (``name_<i>``) (except for
    ``pr_curve`` and ``mesh``, whose value is the tuple ``(labels, predictions)`` / ``(vertices, colors, faces)``);
    the value goes through :meth:`make_compatible`; then ``add_<type>(name, value, global_step=monitor.step)``.
    Scalars also go to the metric series of the monitor's attached experiment
    (``experiment.log_metrics(scalars, step=monitor.step)``).

    Args:
        type: One of image, scalar, histogram, figure, video, text, pr_curve, mesh.
        spec: ``"{regex}@{modulo}{trigger}"``; without a frequency the hook is manual (``Monitor.to_hooks``).
        fn: Converts each variable before it is written.
        prefix: Prepended to every summary name.
        prepend: Name dict entries ``{dict}_{key}`` (else ``{key}``).
        **options: For images, options of :func:`~unitrack.monitor.grid.make_grid`: nrow, padding, normalize,
            range / value_range, scale_each, pad_value.

    Raises:
        ConfigError: Unknown ``type`` or option.

    ``figure`` needs matplotlib and ``video`` needs moviepy (tensorboardX's requirements).
    """

    def __init__(
        self,
        type: str | SummaryType,  # noqa: A002 - the seed's parameter name
        spec: str | Every,
        fn: Callable[[Any], Any] | None = None,
        prefix: str = "",
        prepend: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(spec)
        try:
            self.type = SummaryType(type)
        except ValueError:
            raise ConfigError(
                f"Unknown summary type {type!r}; use one of {', '.join(t.value for t in SummaryType)}",
                parameter="type",
            ) from None
        unknown = set(options) - _GRID_OPTIONS
        if unknown:
            raise ConfigError(
                f"Unknown image options {sorted(unknown)}; use {', '.join(sorted(_GRID_OPTIONS))}",
                parameter="options",
            )
        self.fn = fn
        self.prefix = prefix
        self.prepend = prepend
        self.options = options
        self._warned = False

    def summaries(self, var_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Return the summaries to write, by name, after ``fn`` and the dict/list expansion."""
        out: dict[str, Any] = {}
        expand_sequences = self.type not in (SummaryType.PR_CURVE, SummaryType.MESH)
        for name, value in var_dict.items():
            if self.fn is not None:
                value = self.fn(value)
            name = self.prefix + name
            if isinstance(value, Mapping):
                out.update({(f"{name}_{k}" if self.prepend else str(k)): v for k, v in value.items()})
            elif expand_sequences and isinstance(value, (list, tuple)):
                out.update({f"{name}_{i}": v for i, v in enumerate(value)})
            else:
                out[name] = value
        return out

    def make_compatible(self, value: Any) -> Any:
        """Convert ``value`` into what ``add_<type>`` accepts (detached tensors, means for scalars, image grids)."""
        value = _detach(value)
        if self.type is SummaryType.SCALAR:
            if hasattr(value, "ndim") and value.ndim > 0:
                value = value.float().mean() if hasattr(value, "float") else np.asarray(value).mean()
            return float(value)
        if self.type is SummaryType.IMAGE:
            options = {"normalize": True, "scale_each": True, **self.options}
            ndim = np.ndim(value) if not hasattr(value, "ndim") else value.ndim
            if ndim == 3:
                value = [value]
            return make_grid(value, **options)
        if self.type is SummaryType.TEXT:
            return str(value)
        return value

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Write one summary per selected variable (or dict key / list item) at ``monitor.step``."""
        if monitor.directory is None:
            if not self._warned:
                self._warned = True
                logger.warning("%r has no directory to write to; give the Monitor a directory", self)
            return
        writer = get_writer(Path(monitor.directory) / "tensorboard")
        step = monitor.step
        names = []
        scalars: dict[str, float] = {}
        for name, value in self.summaries(var_dict).items():
            value = self.make_compatible(value)
            if self.type is SummaryType.IMAGE:
                writer.add_image(name, value, global_step=step, dataformats="CHW")
            elif self.type is SummaryType.PR_CURVE:
                labels, predictions = value
                writer.add_pr_curve(name, labels, predictions, global_step=step)
            elif self.type is SummaryType.MESH:
                vertices, colors, faces = (
                    (*value, None, None)[:3] if isinstance(value, tuple) else (value, None, None)
                )
                writer.add_mesh(name, vertices, colors=colors, faces=faces, global_step=step)
            else:
                getattr(writer, f"add_{self.type.value}")(name, value, global_step=step)
                if self.type is SummaryType.SCALAR:
                    scalars[name] = value
            names.append(name)
        writer.flush()
        sink = monitor.experiment
        if scalars and sink is not None and isinstance(sink, MetricSink):
            sink.log_metrics(scalars, step=step)
        monitor.report(f"saved tb {self.type.value} summaries for {names} at {monitor.directory}")
