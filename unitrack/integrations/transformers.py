"""``UnitrackCallback`` for the Hugging Face ``Trainer``: one unitrack trial per ``trainer.train()``.

- At the start of training: the ``TrainingArguments`` (``learning_rate``, ``num_train_epochs``, ...) and the
  model's config (under ``model``: ``parameters.model.hidden_size``) become the trial's parameters;
- every ``on_log`` (losses, learning rate, evaluation results, the final ``train_runtime``...) becomes metric
  points at ``state.global_step``;
- every save: ``metadata['checkpoints']`` = ``{'latest': output_dir/checkpoint-<step>, 'best': ...}``;
- at the end: ``finished``; an exception escaping ``trainer.train()`` ends the run with ``error`` and its
  traceback (uncaught: by the process's excepthook; caught by your code: use the callback as a context manager,
  ``with UnitrackCallback() as cb: ...``); Ctrl-C ends it ``stopped``;
- only the main process (``state.is_world_process_zero``) writes: under DDP the other ranks write nothing.

Example::

    from transformers import Trainer
    from unitrack.integrations.transformers import UnitrackCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[UnitrackCallback(name="bert-small")])
    trainer.train()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from unitrack.integrations.run import IntegrationRun, RunCallback, finish_open_runs_on_crash

__all__ = ["UnitrackCallback"]

logger = logging.getLogger(__name__)

#: TrainingArguments fields that say where things go or hold secrets, not how the model is trained.
_SKIPPED_ARGS = frozenset(
    {"hub_token", "push_to_hub_token", "push_to_hub_organization", "push_to_hub_model_id"}
)


class UnitrackCallback(RunCallback, TrainerCallback):
    """Record a ``transformers.Trainer`` run as a unitrack trial (see the module docstring).

    Args:
        target: where the trial lives: None (``$UNITRACK_URI``, else ``hdf5://runs``), a URI, a Protocol, a
            ``TrackClient``, a ``TrialLogger`` or a registered ``unitrack.experiment.Experiment``.
        name: the trial's name (default: the run name of the ``TrainingArguments`` when set, else
            ``transformers-<date>-<time>``).
        project, group, description, tags: the new trial's fields.
        system_metrics: sample ``sys/...`` series every so many seconds while training (``True``: 10 s).
    """

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
    ) -> None:
        self._options: dict[str, Any] = {
            "name": name,
            "project": project,
            "group": group,
            "description": description,
            "tags": tags,
            "system_metrics": system_metrics,
        }
        self.run = IntegrationRun(target, framework="transformers", **self._options)
        self._named = name is not None

    # ------------------------------------------------------------------------------------------ callbacks
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Create the trial with the training arguments and the model's config as parameters."""
        if not state.is_world_process_zero:
            return
        if self.run.is_open:  # the previous train() never reached on_train_end: it raised, and was caught
            lost = RuntimeError("training ended without on_train_end (an exception was raised and caught)")
            self.run.finish("error", (RuntimeError, lost, None))
        if self.run.uid is not None and self.run.experiment is None and self.run.trial_logger is not None:
            self.run = IntegrationRun(self.run.target, framework="transformers", **self._options)
        run_name = getattr(args, "run_name", None)
        if not self._named and run_name and run_name != getattr(args, "output_dir", None):
            self.run.name = str(run_name)
        finish_open_runs_on_crash()
        self.run.start(self._parameters(args, model))

    @staticmethod
    def _parameters(args: Any, model: Any) -> dict[str, Any]:
        values = args.to_dict() if hasattr(args, "to_dict") else dict(vars(args))
        params = {k: v for k, v in values.items() if k not in _SKIPPED_ARGS}
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params["model"] = config.to_dict()
        elif model is not None:
            params["model"] = {"class": type(model).__qualname__}
        return params

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Append every number logged to its series at the global step."""
        if not state.is_world_process_zero or not logs:
            return
        self.run.log_metrics(logs, state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record the checkpoint folder just written (and the best one, when tracked)."""
        if not state.is_world_process_zero:
            return
        latest = os.path.join(str(args.output_dir), f"checkpoint-{state.global_step}")
        self.run.record_checkpoints({"latest": latest, "best": state.best_model_checkpoint or ""})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """End the run: finished."""
        if not state.is_world_process_zero:
            return
        self.run.finish("finished")
