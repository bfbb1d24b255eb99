"""Lightning 2.x loggers writing to a unitrack trial (importable as ``unitrack.lightning``, the seed's module).

``UnitrackLogger`` is a ``lightning.pytorch.loggers.Logger``:

- ``log_hyperparams`` → the trial's parameters (``Namespace``, OmegaConf and nested dicts made plain, nesting
  kept: ``parameters.optimizer.lr``); the first call creates the trial, so its uid covers them;
- ``log_metrics`` → one point per number at the step Lightning gives (the trainer's global step);
- every ``ModelCheckpoint`` save → ``metadata['checkpoints']``: ``latest`` (the file just written), ``best``
  and ``last`` paths;
- ``finalize`` → ``finished`` after a successful ``fit``/``test``, ``error`` with the traceback when training
  raised (``stopped`` for Ctrl-C), ``stopped`` when Lightning's requeue handler ends the run;
- everything happens on global rank 0 only: under DDP the other processes create and write nothing.

``MonitorLogger`` is xmen's form: it also takes the Monitor's specs (``sca=``, ``img=``, ``hist=``, ``fig=``,
``txt=``, ``vid=`` with ``_fn``/``_pref``/``_prep``, ``log=``, ``msg=``, ``hooks=``) and sends what the module
logs through the Monitor's hooks: TensorBoard summaries in ``{log_dir}/tensorboard`` and scalars in the trial.

Example (the trial lands in ``$UNITRACK_URI``, else ``hdf5://runs``)::

    import lightning.pytorch as pl
    from unitrack.lightning import UnitrackLogger

    trainer = pl.Trainer(max_epochs=2, logger=UnitrackLogger(name="mnist-small", system_metrics=10))
    trainer.fit(model, train_loader)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers.logger import Logger

from unitrack.errors import ConfigError
from unitrack.integrations.run import IntegrationRun
from unitrack.monitor import Monitor, XmenMessenger
from unitrack.monitor.spec import Every, Trigger, parse_specs

__all__ = ["MonitorLogger", "TensorBoardLogger", "UnitrackLogger"]

logger = logging.getLogger(__name__)


class UnitrackLogger(Logger):
    """A Lightning logger writing hyperparameters, metrics, checkpoint paths and status to one unitrack trial.

    Args:
        target: where the trial lives: None (``$UNITRACK_URI``, else ``hdf5://runs``), a URI, a Protocol, a
            ``TrackClient``, a ``TrialLogger`` or a registered ``unitrack.experiment.Experiment`` (see
            :mod:`unitrack.integrations.run`).
        name: the trial's name (default ``lightning-<date>-<time>``; an experiment's folder name).
        project, group, description, tags: the new trial's project, group, description and tags.
        save_dir: where Lightning puts this run's files (checkpoints in ``{save_dir}/{name}/checkpoints``);
            default: an experiment's root, so its checkpoints sit in the experiment folder; otherwise
            the Trainer's ``default_root_dir``.
        system_metrics: sample ``sys/...`` series every so many seconds while training (``True``: 10 s).
        prefix: prepended to every metric name (``prefix/loss``).
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
        save_dir: str | os.PathLike[str] | None = None,
        system_metrics: float | bool | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.run = IntegrationRun(
            target,
            framework="lightning",
            name=name,
            project=project,
            group=group,
            description=description,
            tags=tags,
            system_metrics=system_metrics,
            # The trainer installs its own SIGTERM handler for the fit and reports the signal to finalize():
            # stacking ours under it would leave ours installed after the run (the trainer restores it).
            catch_sigterm=False,
        )
        if save_dir is None and self.run.experiment is not None:
            save_dir = os.path.dirname(os.path.abspath(str(self.run.experiment.directory)))
        self._save_dir = os.fspath(save_dir) if save_dir is not None else None
        self.prefix = prefix

    # ------------------------------------------------------------------------------------- Lightning API
    @property
    def name(self) -> str:
        """The trial's name."""
        return self.run.name

    @property
    def version(self) -> str:
        """Empty: a run's files go to ``{save_dir}/{name}/`` (an experiment's own folder)."""
        return ""

    @property
    def save_dir(self) -> str | None:
        """See the ``save_dir`` argument."""
        return self._save_dir

    @property
    def root_dir(self) -> str | None:
        """``{save_dir}/{name}`` (None without a save_dir)."""
        return os.path.join(self._save_dir, self.name) if self._save_dir is not None else None

    @property
    def log_dir(self) -> str | None:
        """The same as :attr:`root_dir`."""
        return self.root_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> IntegrationRun:
        """The :class:`~unitrack.integrations.run.IntegrationRun` (a dummy on ranks other than 0); reading it
        creates nothing: the trial is created by the first write."""
        return self.run

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Record ``params`` (a dict, Namespace or OmegaConf container) as the trial's parameters."""
        if params is None:
            params = {}
        elif not isinstance(params, Mapping):
            params = vars(params) if hasattr(params, "__dict__") else {"hparams": params}
        self.run.log_parameters(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append each number to its series at ``step``."""
        self._log_series(metrics, step)

    def _log_series(self, metrics: Mapping[str, Any], step: int | None) -> None:
        if self.prefix:
            metrics = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        self.run.log_metrics(metrics, step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Record the paths a ``ModelCheckpoint`` just wrote in ``metadata['checkpoints']``."""
        cb = checkpoint_callback
        latest = getattr(cb, "_last_checkpoint_saved", "") or getattr(cb, "last_model_path", "")
        self.run.record_checkpoints(
            {
                "latest": latest or getattr(cb, "best_model_path", ""),
                "best": getattr(cb, "best_model_path", ""),
                "last": getattr(cb, "last_model_path", ""),
            }
        )

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: ``success`` → finished; ``failed`` → error with the traceback of the exception Lightning
        is handling (stopped for Ctrl-C); anything else (the requeue handler's ``finished``) → stopped."""
        self._finish(status, sys.exc_info())

    def _finish(self, status: str, exc_info: Any) -> None:
        if status == "success":
            self.run.finish("finished")
        elif status == "failed":
            self.run.finish("error", exc_info if exc_info[0] is not None else None)
        else:
            self.run.finish("stopped")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.run!r})"


#: Summary kinds of the Monitor specs a MonitorLogger takes, by option name.
_KINDS = ("img", "sca", "hist", "fig", "txt", "vid")
_RUN_VARIABLE = "_unitrack_run"  # the name the run goes by in a msg spec


class MonitorLogger(UnitrackLogger):
    """xmen's Lightning logger: a :class:`UnitrackLogger` that also runs the Monitor's hooks on what is logged.

    Specs are the Monitor's (``"{regex}@{N}{trigger}"``, :mod:`unitrack.monitor.spec`) with two triggers:
    ``s`` (step: the hook runs when Lightning logs at a step that is a multiple of N) and ``e`` (epoch: at the
    end of every N-th epoch, on the values last logged in it). A spec without ``@`` runs each time a matching
    value is logged. Scalars from ``self.log(...)`` reach the hooks; for images, histograms, text or figures pass
    the value directly: ``self.logger.log_metrics({"samples": images}, step=self.global_step)`` (numbers still
    become metric series; other values only reach the hooks).

    ``sca``/``img``/``hist``/``fig``/``txt``/``vid`` (with ``_fn``, ``_pref``, ``_prep``, ``img_options``) write
    TensorBoard summaries to ``{log_dir}/tensorboard`` (scalars also to the trial's series); ``log`` prints lines;
    ``msg`` (``"{regex}@{N}{trigger}"``) sends messages to the trial (an experiment's ``message``); ``hooks`` adds
    your own. ``log_dir`` is ``{save_dir}/{name}``: an experiment's folder, else ``lightning_logs/{name}``.

    Raises:
        ConfigError: for a trigger other than step and epoch, or a malformed option (as the Monitor raises).
    """

    def __init__(
        self,
        target: Any = None,
        *,
        hooks: Iterable[Any] = (),
        log: Any = None,
        log_fn: Any = None,
        log_format: Any = "",
        msg: Any = None,
        msg_keep: Any = "latest",
        msg_leader: Any = None,
        msg_expand: Any = False,
        msg_prep: Any = None,
        img: Any = None,
        img_fn: Any = None,
        img_pref: Any = "",
        img_prep: Any = True,
        img_options: Mapping[str, Any] | None = None,
        sca: Any = None,
        sca_fn: Any = None,
        sca_pref: Any = "",
        sca_prep: Any = True,
        hist: Any = None,
        hist_fn: Any = None,
        hist_pref: Any = "",
        hist_prep: Any = True,
        fig: Any = None,
        fig_fn: Any = None,
        fig_pref: Any = "",
        fig_prep: Any = True,
        txt: Any = None,
        txt_fn: Any = None,
        txt_pref: Any = "",
        txt_prep: Any = True,
        vid: Any = None,
        vid_fn: Any = None,
        vid_pref: Any = "",
        vid_prep: Any = True,
        save_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(target, save_dir=save_dir, **options)
        if self._save_dir is None:
            self._save_dir = "lightning_logs"
        specs = {"log": log, "msg": msg, **dict(zip(_KINDS, (img, sca, hist, fig, txt, vid), strict=True))}
        for option, value in specs.items():
            for spec in parse_specs(value):
                if spec.trigger is not None and spec.trigger not in (Trigger.STEP, Trigger.EPOCH):
                    raise ConfigError(
                        f"{option}={str(spec)!r}: Lightning counts steps and epochs only; use @Ns or @Ne",
                        parameter=option,
                    )
        self.monitor = Monitor(
            self.log_dir,
            hooks=hooks,
            log=log,
            log_fn=log_fn,
            log_format=log_format,
            img=img,
            img_fn=img_fn,
            img_pref=img_pref,
            img_prep=img_prep,
            img_options=img_options,
            sca=sca,
            sca_fn=sca_fn,
            sca_pref=sca_pref,
            sca_prep=sca_prep,
            hist=hist,
            hist_fn=hist_fn,
            hist_pref=hist_pref,
            hist_prep=hist_prep,
            fig=fig,
            fig_fn=fig_fn,
            fig_pref=fig_pref,
            fig_prep=fig_prep,
            txt=txt,
            txt_fn=txt_fn,
            txt_pref=txt_pref,
            txt_prep=txt_prep,
            vid=vid,
            vid_fn=vid_fn,
            vid_pref=vid_pref,
            vid_prep=vid_prep,
        )
        # msg specs name the values to send; the messages go to this logger's run (xmen sent them to the root).
        msg_specs = parse_specs(msg)
        msg_options = [
            _per_spec(n, v, len(msg_specs))
            for n, v in (
                ("msg_keep", msg_keep),
                ("msg_leader", msg_leader),
                ("msg_expand", msg_expand),
                ("msg_prep", msg_prep),
            )
        ]
        for spec, keep, leader, expand, prep in zip(msg_specs, *msg_options, strict=True):
            self.monitor.add_hook(
                _RunMessenger(spec, self.run, keep=keep, leader=leader, expand=expand, prepend=prep)
            )
        self._epoch: int | None = None
        self._epoch_values: dict[str, Any] = {}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append the numbers to their series, then run the due hooks on every logged value."""
        self._log_series(metrics, step)
        epoch = metrics.get("epoch")
        epoch = int(epoch) if isinstance(epoch, (int, float)) else (self._epoch or 0)
        if self._epoch is not None and epoch != self._epoch:
            self._end_epoch()
        self._epoch = epoch
        values = {k: v for k, v in metrics.items() if k != "epoch"}
        self._epoch_values.update(values)
        if step is not None:
            self.monitor.set_triggers(step=int(step), epoch=epoch)
            self.monitor.run_hooks(Trigger.STEP, values)
        self.monitor.to_hooks(**values)

    def _end_epoch(self) -> None:
        """Run the epoch hooks on the values last logged in the epoch that ended."""
        if self._epoch is None or not self._epoch_values:
            return
        self.monitor.set_triggers(epoch=self._epoch + 1)  # epochs completed
        self.monitor.run_hooks(Trigger.EPOCH, self._epoch_values)
        self._epoch_values = {}

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Run the last epoch's hooks, flush TensorBoard, then end the run (see :meth:`UnitrackLogger.finalize`)."""
        exc_info = sys.exc_info()
        try:
            self._end_epoch()
            self.monitor.close()
        finally:
            self._finish(status, exc_info)


def _per_spec(parameter: str, value: Any, count: int) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(
                f"{parameter} has {len(value)} entries but msg has {count} spec(s); give one for all or one each",
                parameter=parameter,
            )
        return list(value)
    return [value] * count


class _RunMessenger(XmenMessenger):
    """An XmenMessenger whose experiment is the logger's run: ``"loss@10s"`` sends ``loss`` to the trial."""

    def __init__(self, spec: Every, run: IntegrationRun, **options: Any) -> None:
        target = f"{spec.pattern}->^{_RUN_VARIABLE}$"
        if spec.trigger is not None:
            target += f"@{spec.modulo}{spec.trigger.abbreviation}"
        super().__init__(target, **options)
        self.run = run

    def __call__(self, var_dict: Mapping[str, Any], monitor: Monitor) -> None:
        """Send the selected values (after expand/prepend) to the run at the monitor's step."""
        values = self.values(var_dict, {})
        if not values:
            return
        leader = next((k for k in values if self.leader.match(k)), None) if self.leader is not None else None
        self.run.message(values, keep=self.keep.value, leader=leader, step=monitor.step)


#: xmen's name for the Monitor-spec logger.
TensorBoardLogger = MonitorLogger
