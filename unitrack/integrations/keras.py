"""``UnitrackCallback`` for Keras 3 (any backend: TensorFlow, JAX or PyTorch): one unitrack trial per ``fit``.

- At the start: the fit's parameters (``epochs``, ``steps``, ``batch_size`` when given), the optimizer's config
  (``parameters.optimizer.learning_rate``), the loss and a summary of the model (``parameters.model``: name,
  class, parameter and layer counts) become the trial's parameters; the model's full config goes to
  ``metadata['model_config']``;
- epoch metrics (``loss``, ``val_loss``, ``accuracy``...) become points at the epoch (0-based, as Keras counts);
  batch metrics become ``batch/<name>`` points at the number of batches trained so far (every
  ``batch_every``-th batch; 0 for none);
- with ``checkpoints=`` (your ``keras.callbacks.ModelCheckpoint`` objects) the newest file each writes goes to
  ``metadata['checkpoints']['latest']``;
- at the end: ``finished``; an exception escaping ``fit`` ends the run with ``error`` and its traceback (uncaught:
  by the process's excepthook; caught by your code: use the callback as a context manager); Ctrl-C ends it
  ``stopped``;
- a process a launcher marks with a rank other than 0 (``RANK``, ``SLURM_PROCID``...) writes nothing.

Importing this module does not import Keras: the class is made when first asked for, so set ``KERAS_BACKEND``
before, as for Keras itself.

Example::

    from unitrack.integrations.keras import UnitrackCallback

    model.fit(x, y, epochs=5, callbacks=[UnitrackCallback(name="mlp")])
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from unitrack.integrations.run import (
    IntegrationRun,
    RunCallback,
    env_rank,
    finish_open_runs_on_crash,
    plain_parameters,
)

__all__ = ["UnitrackCallback"]  # noqa: F822 - made on first use (module __getattr__)

logger = logging.getLogger(__name__)

_CLASS: type | None = None


class _Mixin(RunCallback):
    """The callback's behaviour; the class is ``(_Mixin, keras.callbacks.Callback)``, made on first use."""

    model: Any
    params: dict[str, Any]

    def __init__(
        self,
        target: Any = None,
        *,
        name: str | None = None,
        project: str | None = None,
        group: str | None = None,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        system_metrics: float | bool | None = None,
        batch_every: int = 1,
        checkpoints: Any = (),
    ) -> None:
        super().__init__()
        self._options: dict[str, Any] = {
            "name": name,
            "project": project,
            "group": group,
            "description": description,
            "tags": tags,
            "system_metrics": system_metrics,
        }
        self.run = IntegrationRun(target, framework="keras", **self._options)
        if not isinstance(batch_every, int) or batch_every < 0:
            from unitrack.errors import ConfigError

            raise ConfigError(
                f"batch_every={batch_every!r}: use a count of batches >= 0", parameter="batch_every"
            )
        self.batch_every = batch_every
        self.checkpoints = [checkpoints] if hasattr(checkpoints, "filepath") else list(checkpoints or ())
        self._active = env_rank() == 0
        self._batches = 0
        self._epochs: list[tuple[int, dict[str, Any]]] = []

    # ------------------------------------------------------------------------------------------ callbacks
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Create the trial with the fit's, the optimizer's and the model's parameters."""
        if not self._active:
            return
        if self.run.is_open:  # the previous fit never reached on_train_end: it raised, and was caught
            lost = RuntimeError("fit ended without on_train_end (an exception was raised and caught)")
            self.run.finish("error", (RuntimeError, lost, None))
        if self.run.uid is not None and self.run.experiment is None:
            self.run = IntegrationRun(self.run.target, framework="keras", **self._options)
        self._batches = 0
        self._epochs = []
        finish_open_runs_on_crash()
        self.run.start(self._parameters())
        config = _model_config(self.model)
        if config is not None:
            self.run.log_metadata({"model_config": config})

    def _parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {k: v for k, v in (self.params or {}).items() if k != "verbose"}
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "get_config"):
            with warnings.catch_warnings():  # Keras' own variables warn about numpy 2's copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                params["optimizer"] = optimizer.get_config()
        loss = getattr(model, "loss", None)
        if loss is not None:
            params["loss"] = (
                loss if isinstance(loss, str) else getattr(loss, "name", None) or type(loss).__name__
            )
        summary: dict[str, Any] = {"name": getattr(model, "name", None), "class": type(model).__name__}
        try:
            summary["params"] = int(model.count_params())
        except (ValueError, AttributeError, RuntimeError):  # an unbuilt model has no parameters yet
            pass
        summary["layers"] = len(getattr(model, "layers", ()) or ())
        params["model"] = summary
        return params

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Every ``batch_every``-th batch: ``batch/<name>`` points at the number of batches trained."""
        if not self._active:
            return
        self._batches += 1
        if self.batch_every and logs and self._batches % self.batch_every == 0:
            self.run.log_metrics({f"batch/{k}": v for k, v in logs.items()}, self._batches)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """The epoch's metrics at the epoch; the newest checkpoint written."""
        if not self._active:
            return
        if logs:
            self.run.log_metrics(logs, epoch)
        self._epochs.append((epoch, dict(logs or {})))
        self._record_checkpoints()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """End the run: finished."""
        if not self._active:
            return
        self._record_checkpoints()
        self.run.finish("finished")

    def _record_checkpoints(self) -> None:
        # Keras names a checkpoint filepath.format(epoch=epoch + 1, **logs); the newest that exists was written
        # (ModelCheckpoint may run after this callback: the file then shows up at the next look).
        for checkpoint in self.checkpoints:
            for epoch, logs in reversed(self._epochs):
                try:
                    path = str(checkpoint.filepath).format(epoch=epoch + 1, **logs)
                except (KeyError, IndexError, ValueError):
                    continue
                if os.path.exists(path):
                    self.run.record_checkpoints({"latest": os.path.abspath(path)})
                    break


def _model_config(model: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return plain_parameters(model.get_config())
    except (NotImplementedError, AttributeError, TypeError, ValueError):  # subclassed models may have none
        return None


def _build() -> type:
    global _CLASS
    if _CLASS is None:
        import keras

        _CLASS = type(
            "UnitrackCallback",
            (_Mixin, keras.callbacks.Callback),
            {
                "__module__": __name__,
                "__qualname__": "UnitrackCallback",
                "__doc__": """Record a Keras ``fit`` as a unitrack trial (see :mod:`unitrack.integrations.keras`).

    Args:
        target: where the trial lives: None (``$UNITRACK_URI``, else ``hdf5://runs``), a URI, a Protocol, a
            ``TrackClient``, a ``TrialLogger`` or a registered ``unitrack.experiment.Experiment``.
        name, project, group, description, tags: the new trial's fields (default name ``keras-<date>-<time>``).
        system_metrics: sample ``sys/...`` series every so many seconds while training (``True``: 10 s).
        batch_every: write batch metrics every so many batches (0: epoch metrics only).
        checkpoints: ``keras.callbacks.ModelCheckpoint`` object(s) whose files to record.
    """,
            },
        )
    return _CLASS


def __getattr__(name: str) -> Any:
    if name == "UnitrackCallback":
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> Iterable[str]:
    return [*globals(), "UnitrackCallback"]
