"""Monitor (alias TorchMonitor): count nested loops and run hooks on the caller's variables.

How the per-step cost stays small: each of the five levels keeps, in a plain list, the next count at which any of
its hooks is due (``_next_due``) and the count at which a ``limit`` stops the loop (``_limits``). A step that is not
due costs one generator resume, one increment and two integer comparisons. Only at a due step does the monitor look
at the caller's frame, select variables by regex (cached per tuple of local names) and call the hooks.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from unitrack.errors import ConfigError
from unitrack.monitor import checkpoint as _checkpoint
from unitrack.monitor.hooks.checkpointer import Checkpointer
from unitrack.monitor.hooks.logger import Logger, Timer
from unitrack.monitor.hooks.messenger import XmenMessenger
from unitrack.monitor.hooks.probe import Probe
from unitrack.monitor.hooks.tensorboard import TensorboardLogger, get_writer
from unitrack.monitor.sink import MessageSink, MetadataSink, MetricSink
from unitrack.monitor.spec import TRIGGERS, Every, Trigger, parse_specs

__all__ = ["Monitor", "TorchMonitor"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NEVER = sys.maxsize
_LEVELS = len(TRIGGERS)
_MATCH_CACHE_SIZE = 64
LAST_FORMAT = "%I:%M%p %d/%m/%y"


def _per_spec(parameter: str, value: Any, count: int, spec_parameter: str) -> list[Any]:
    """Spread a per-spec option: one value for every spec, or a list/tuple with one value per spec."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(
                f"{parameter} has {len(value)} entries but {spec_parameter} has {count} spec(s); "
                f"give one {parameter} for all specs or one per spec",
                parameter=parameter,
                expected=count,
                got=len(value),
            )
        return list(value)
    return [value] * count


class _Entry:
    """A hook scheduled at one level, with its compiled regex and its cache of selected names."""

    __slots__ = ("cache", "hook", "modulo", "regex")

    def __init__(self, hook: Any, modulo: int, regex: re.Pattern[str]) -> None:
        self.hook = hook
        self.modulo = modulo
        self.regex = regex
        self.cache: dict[tuple[str, ...], tuple[str, ...]] = {}


class Monitor:
    """Count nested loops (step, epoch, era, eon, supereon) and run hooks on the caller's local variables.

    Wrap each loop in the monitor: the innermost becomes ``step``, the next ``epoch``, and so on outwards. Counters
    are global: ``range(3)`` around ``range(5)`` counts steps 1..15 and epochs 1..3. After each iteration of a loop
    the hooks due at its level run, in this order: log, time, msg, probe, ckpt, img, sca, hist, fig, txt, vid,
    then ``hooks``. Each hook gets the local variables of the calling frame whose names match its regex.

    Options take spec strings ``"{regex}@{modulo}{trigger}"`` (one, or a list); see :mod:`unitrack.monitor.spec`.
    Per-spec options (``log_fn``, ``img_pref``, ``ckpt_keep``, ``msg_leader``, ...) take one value for all specs or
    a list with one value per spec.

    **Attached to an experiment** (``experiment=ex``, :meth:`attach`, or found by itself: the first local variable
    of the monitored frame that has ``log_metrics`` and whose ``directory`` is the monitor's ``directory``), the
    monitor also writes through the experiment (any object with the methods of
    :class:`~unitrack.monitor.sink.MetricSink` and :class:`~unitrack.monitor.sink.MetadataSink`, such as
    ``unitrack.experiment.Experiment``): scalar summaries (``sca``) become points of the trial's metric series at
    :attr:`step`, and each checkpoint saved updates ``metadata['checkpoints']`` (``{variable: newest path}``).
    Messages (``msg``) are sent with ``step=monitor.step`` to every experiment whose ``message`` takes ``step``.

    Args:
        directory: Folder for checkpoints (``checkpoints/``) and TensorBoard files (``tensorboard/``); default
            the attached experiment's directory.
        experiment: Attach to this experiment (see above and :meth:`attach`).
        hooks: Extra hooks (see :class:`~unitrack.monitor.hooks.Hook`).
        log, log_fn, log_format: :class:`~unitrack.monitor.hooks.Logger` hooks printing to ``stream``.
        time: :class:`~unitrack.monitor.hooks.Timer` hooks, e.g. ``('@2s', '@1e')``.
        msg, msg_keep, msg_leader, msg_expand, msg_prep: :class:`~unitrack.monitor.hooks.XmenMessenger` hooks.
        probe: :class:`~unitrack.monitor.hooks.Probe` hooks.
        limit: ``'@{N}{trigger}'`` (or a list; the first reached wins): stop when a loop at that level is about to
            start an iteration with its counter at N. Outer loops finish their current iteration and stop; later
            loops yield nothing.
        ckpt, checkpoint, ckpt_keep: :class:`~unitrack.monitor.hooks.Checkpointer` hooks (``checkpoint`` is an
            alias of ``ckpt``).
        img, sca, hist, fig, txt, vid (with ``_fn``, ``_pref``, ``_prep``), img_options:
            :class:`~unitrack.monitor.hooks.TensorboardLogger` hooks.
        stream: Where printing hooks and :meth:`log` write (default: ``sys.stdout`` at the time of writing).
        quiet: Leave out the status lines xmen printed as the monitor worked (``Left messages [...] with ex at
            ...``, ``saved [...] at .../checkpoints``, ``saved tb scalar summaries for [...] at ...``); the
            ``log=``/``time=`` lines asked for are printed all the same.
        clock: Returns the current time for time stamps (default ``datetime.now``).
        timer: Returns seconds for measuring durations (default ``time.perf_counter``).

    Raises:
        InvalidSpecError: A spec string is malformed.
        ConfigError: A per-spec option has the wrong number of entries, or a limit has a regex.

    Example:
        >>> m = Monitor()
        >>> for _ in m(range(3)):
        ...     for _ in m(range(5)):
        ...         pass
        >>> m.step, m.epoch
        (15, 3)
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        experiment: Any = None,
        hooks: Iterable[Any] = (),
        log: Any = None,
        log_fn: Any = None,
        log_format: Any = "",
        time: Any = (),  # noqa: A002 - the seed's parameter name
        msg: Any = None,
        msg_keep: Any = "latest",
        msg_leader: Any = None,
        msg_expand: Any = False,
        msg_prep: Any = None,
        probe: Any = None,
        limit: Any = None,
        ckpt: Any = None,
        checkpoint: Any = None,
        ckpt_keep: Any = None,
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
        stream: TextIO | None = None,
        clock: Callable[[], datetime] = datetime.now,
        timer: Callable[[], float] = time.perf_counter,
        quiet: bool = False,
    ) -> None:
        self.directory: str | None = str(directory) if directory is not None else None
        #: The experiment the monitor writes metrics and checkpoint paths through (None when not attached).
        self.experiment: Any = None
        #: The newest checkpoint saved by this monitor, by variable name.
        self.checkpoints: dict[str, str] = {}
        self._real_directory: str | None = None
        self.stream = stream
        self.quiet = bool(quiet)
        self.clock = clock
        self.timer = timer
        # Loop state. The lists are mutated in place, never rebound: running loops hold references to them.
        self._counts = [0] * _LEVELS
        self._next_due = [_NEVER] * _LEVELS
        self._limits = [_NEVER] * _LEVELS
        self._limit_specs: list[Every] = []
        self._lengths: list[int | None] = [None] * _LEVELS
        self._starts = [0] * _LEVELS
        self._depth = 0
        self._n_levels = 0
        self._stopped = False
        self._failed: set[int] = set()
        self._t0: float | None = None
        self._step_times = [0.0, 0.0, 0, 0.0, 0.0]  # last step, total step, n, last load, total load

        built: list[Any] = []
        specs = parse_specs(log)
        fns = _per_spec("log_fn", log_fn, len(specs), "log")
        formats = _per_spec("log_format", log_format, len(specs), "log")
        built += [Logger(s, format=f, process_func=fn) for s, fn, f in zip(specs, fns, formats, strict=True)]
        built += [Timer(s) for s in parse_specs(time)]
        specs = parse_specs(msg)
        options = [
            _per_spec(name, value, len(specs), "msg")
            for name, value in (
                ("msg_keep", msg_keep),
                ("msg_leader", msg_leader),
                ("msg_expand", msg_expand),
                ("msg_prep", msg_prep),
            )
        ]
        built += [
            XmenMessenger(s, keep=k, leader=ld, expand=e, prepend=p)
            for s, k, ld, e, p in zip(specs, *options, strict=True)
        ]
        built += [Probe(s) for s in parse_specs(probe)]
        if ckpt is not None and checkpoint is not None:
            raise ConfigError("give ckpt or its alias checkpoint, not both", parameter="checkpoint")
        specs = parse_specs(ckpt if ckpt is not None else checkpoint)
        keeps = _per_spec("ckpt_keep", ckpt_keep, len(specs), "ckpt")
        built += [Checkpointer(s, to_keep=k) for s, k in zip(specs, keeps, strict=True)]
        for kind, spec, fn, pref, prep, name in (
            ("image", img, img_fn, img_pref, img_prep, "img"),
            ("scalar", sca, sca_fn, sca_pref, sca_prep, "sca"),
            ("histogram", hist, hist_fn, hist_pref, hist_prep, "hist"),
            ("figure", fig, fig_fn, fig_pref, fig_prep, "fig"),
            ("text", txt, txt_fn, txt_pref, txt_prep, "txt"),
            ("video", vid, vid_fn, vid_pref, vid_prep, "vid"),
        ):
            specs = parse_specs(spec)
            fns = _per_spec(f"{name}_fn", fn, len(specs), name)
            prefs = _per_spec(f"{name}_pref", pref, len(specs), name)
            preps = _per_spec(f"{name}_prep", prep, len(specs), name)
            extra = dict(img_options or {}) if kind == "image" else {}
            built += [
                TensorboardLogger(kind, s, fn=f, prefix=p, prepend=bool(q), **extra)
                for s, f, p, q in zip(specs, fns, prefs, preps, strict=True)
            ]
        built += list(hooks)
        self.hooks: list[Any] = []
        self._by_level: list[list[_Entry]] = [[] for _ in range(_LEVELS)]
        self._manual: list[tuple[Any, re.Pattern[str]]] = []
        self._timed = False
        for hook in built:
            self.add_hook(hook)
        for spec in parse_specs(limit):
            self.add_limit(spec)
        if experiment is not None:
            self.attach(experiment)

    def attach(self, experiment: Any) -> Monitor:
        """Write scalar summaries and checkpoint paths through ``experiment`` too (see the class docstring).

        The monitor takes the experiment's ``directory`` when it has none of its own.

        Raises:
            ConfigError: ``experiment`` has none of ``log_metrics``, ``log_metadata``, ``message``, or neither it
                nor the monitor has a directory.
        """
        if not isinstance(experiment, (MetricSink, MetadataSink, MessageSink)):
            raise ConfigError(
                f"cannot attach a Monitor to {type(experiment).__name__}: it has no log_metrics, log_metadata "
                "or message method",
                parameter="experiment",
            )
        if self.directory is None:
            directory = getattr(experiment, "directory", None)
            if directory is None:
                raise ConfigError(
                    "the experiment has no directory (register it first) and the Monitor has none",
                    parameter="experiment",
                )
            self.directory = str(directory)
        self.experiment = experiment
        logger.debug("monitor attached to %r", experiment)
        return self

    def _discover(self, local_vars: Mapping[str, Any]) -> None:
        # Attach to the first variable that writes metrics and lives in the monitor's directory (e.g. ``self``
        # in ``Experiment.run`` with ``Monitor(self.directory, ...)``). Checked on the type first: cheap, and no
        # property of an unrelated object is evaluated.
        for value in local_vars.values():
            if not callable(getattr(type(value), "log_metrics", None)):
                continue
            directory = getattr(value, "directory", None)
            if directory is None:
                continue
            if self._real_directory is None:
                self._real_directory = os.path.realpath(self.directory or "")
            if os.path.realpath(os.fspath(directory)) == self._real_directory:
                self.attach(value)
                return

    def record_checkpoints(self, paths: Mapping[str, str | Path]) -> None:
        """Remember the newest checkpoint of each variable and write ``metadata['checkpoints']`` to the experiment."""
        if not paths:
            return
        self.checkpoints.update({name: str(path) for name, path in paths.items()})
        sink = self.experiment
        if sink is not None and isinstance(sink, MetadataSink):
            sink.log_metadata({"checkpoints": dict(self.checkpoints)})

    # ------------------------------------------------------------------------------------------ configuration
    def add_hook(self, hook: Any) -> None:
        """Schedule ``hook`` (anything with ``regex``, ``modulo``, ``trigger`` and ``__call__(var_dict, monitor)``)."""
        regex = getattr(hook, "compiled", None) or re.compile(hook.regex)
        self.hooks.append(hook)
        if hook.modulo is None:
            self._manual.append((hook, regex))
            return
        level = Trigger.parse(hook.trigger).level
        self._by_level[level].append(_Entry(hook, int(hook.modulo), regex))
        self._timed = self._timed or bool(getattr(hook, "needs_timing", False))
        self._schedule(level)

    def add_limit(self, spec: str | Every) -> None:
        """Stop at ``'@{N}{trigger}'``; with several limits the first reached wins.

        Raises:
            ConfigError: The spec has a regex or no frequency.
        """
        (parsed,) = parse_specs(spec)
        if parsed.pattern or parsed.target is not None or parsed.modulo is None or parsed.trigger is None:
            raise ConfigError(
                f"limit {str(parsed)!r} must look like '@20s' (no regex, a count and a trigger)",
                parameter="limit",
            )
        self._limit_specs.append(parsed)
        level = parsed.trigger.level
        self._limits[level] = min(self._limits[level], parsed.modulo)

    def _schedule(self, level: int) -> None:
        count = self._counts[level]
        entries = self._by_level[level]
        self._next_due[level] = min(((count // e.modulo + 1) * e.modulo for e in entries), default=_NEVER)

    # ------------------------------------------------------------------------------------------ iteration
    def __call__(self, iterable: Iterable[T], length: int | None = None) -> Iterator[T]:
        """Iterate over ``iterable``, counting at this loop's level (``length`` defaults to ``len(iterable)``)."""
        if length is None:
            try:
                length = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                length = None
        if self._timed:
            return self._timed_loop(iterable, length)
        return self._loop(iterable, length)

    def _enter(self, length: int | None) -> int:
        depth = self._depth
        if depth >= _LEVELS:
            raise ConfigError(f"a Monitor counts at most {_LEVELS} nested loops", parameter="iterable")
        if self._t0 is None:
            self._t0 = self.timer()
            self._started = self.clock()
        self._depth = depth + 1
        if self._depth > self._n_levels:
            self._n_levels = self._depth
        self._lengths[depth] = length
        self._starts[depth] = -1  # set at the first increment, once this loop's level is known
        return depth

    def _exit(self, depth: int) -> None:
        self._depth = depth
        if depth == 0:
            self._n_levels = 0

    def _loop(self, iterable: Iterable[T], length: int | None) -> Iterator[T]:
        if self._stopped:
            self._stop_criterion()
            return
        depth = self._enter(length)
        counts, due, limits = self._counts, self._next_due, self._limits
        getframe = sys._getframe
        try:
            for item in iterable:
                level = self._n_levels - 1 - depth
                if counts[level] >= limits[level]:
                    self._limit_reached(level)
                    break
                yield item
                level = self._n_levels - 1 - depth
                count = counts[level] + 1
                counts[level] = count
                if count >= due[level]:
                    self._on_due(level, getframe(1))
        finally:
            self._exit(depth)

    def _timed_loop(self, iterable: Iterable[T], length: int | None) -> Iterator[T]:
        # The same loop as _loop, also measuring the time spent fetching items (load) and in the body (step).
        if self._stopped:
            self._stop_criterion()
            return
        depth = self._enter(length)
        counts, due, limits, timer, times = (
            self._counts,
            self._next_due,
            self._limits,
            self.timer,
            self._step_times,
        )
        getframe = sys._getframe
        iterator = iter(iterable)
        try:
            while True:
                t0 = timer()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                t1 = timer()
                level = self._n_levels - 1 - depth
                if counts[level] >= limits[level]:
                    self._limit_reached(level)
                    break
                yield item
                level = self._n_levels - 1 - depth
                if level == 0:
                    t2 = timer()
                    times[0] = t2 - t1
                    times[1] += t2 - t1
                    times[2] += 1
                    times[3] = t1 - t0
                    times[4] += t1 - t0
                count = counts[level] + 1
                counts[level] = count
                if count >= due[level]:
                    self._on_due(level, getframe(1))
        finally:
            self._exit(depth)

    def _on_due(self, level: int, frame: FrameType | None) -> None:
        count = self._counts[level]
        local_vars: Mapping[str, Any] | None = None
        names: tuple[str, ...] = ()
        for entry in self._by_level[level]:
            if count % entry.modulo:
                continue
            if local_vars is None:
                local_vars = frame.f_locals if frame is not None else {}
                names = tuple(local_vars)
                if self.experiment is None and self.directory is not None:
                    self._discover(local_vars)
            selected = entry.cache.get(names)
            if selected is None:
                if len(entry.cache) >= _MATCH_CACHE_SIZE:
                    entry.cache.clear()
                selected = entry.cache[names] = tuple(n for n in names if entry.regex.match(n))
            self._run(entry.hook, {n: local_vars[n] for n in selected})
        self._schedule(level)

    def _run(self, hook: Any, var_dict: dict[str, Any]) -> None:
        try:
            hook(var_dict, self)
        except Exception:
            # A failing hook must not kill training: log it once with its traceback, then only at DEBUG.
            if id(hook) not in self._failed:
                self._failed.add(id(hook))
                logger.exception("hook %r failed at %s; training continues", hook, self._counters_text())
            else:
                logger.debug("hook %r failed again at %s", hook, self._counters_text(), exc_info=True)

    def _limit_reached(self, level: int) -> None:
        if not self._stopped:
            self.stop(f"---- Limit reached for {TRIGGERS[level].value} {self._limits[level]} ----")

    def _stop_criterion(self) -> None:
        self.log(f"---- Stop Criterion @ {self._counters_text()} ----")

    def _counters_text(self) -> str:
        return ", ".join(f"{t.value}={c}" for t, c in zip(TRIGGERS, self._counts, strict=True))

    def stop(self, message: str | None = None) -> None:
        """Stop every running loop after its current iteration; later loops yield nothing."""
        if message:
            self.log(message)
        self._stopped = True
        self._limits[:] = [0] * _LEVELS

    @property
    def is_stopped(self) -> bool:
        """True once a limit was reached or :meth:`stop` was called."""
        return self._stopped

    # ------------------------------------------------------------------------------------------ manual use
    def inc(self, trigger: str | Trigger, back: int = 1) -> None:
        """Increment ``trigger`` by one and run its due hooks on the variables ``back`` frames up.

        Raises:
            UnknownTriggerError: ``trigger`` is not a trigger name (also a ``NotImplementedError``).
        """
        level = Trigger.parse(trigger).level
        self._counts[level] += 1
        if self._counts[level] >= self._next_due[level]:
            self._on_due(level, sys._getframe(back))

    def to_hooks(self, **kwargs: Any) -> None:
        """Pass the keyword arguments whose names match to every manual hook (spec without ``@``)."""
        for hook, regex in self._manual:
            selected = {k: v for k, v in kwargs.items() if regex.match(k)}
            if selected:
                self._run(hook, selected)

    def run_hooks(self, trigger: str | Trigger, variables: Mapping[str, Any]) -> None:
        """Run the hooks of ``trigger`` that are due at its current count on ``variables`` (instead of the
        caller's frame); what a framework adapter that counts steps itself calls (``unitrack.lightning``).

        Raises:
            UnknownTriggerError: ``trigger`` is not a trigger name.
        """
        level = Trigger.parse(trigger).level
        count = self._counts[level]
        names = tuple(variables)
        for entry in self._by_level[level]:
            if count % entry.modulo:
                continue
            selected = {n: variables[n] for n in names if entry.regex.match(n)}
            if selected:
                self._run(entry.hook, selected)

    def modulo(self, trigger: str | Trigger, modulo: int, exclude_1st: bool = False) -> bool:
        """Return True when the ``trigger`` counter is a multiple of ``modulo`` (False at 0 if ``exclude_1st``)."""
        count = self._counts[Trigger.parse(trigger).level]
        return count % modulo == 0 and not (exclude_1st and count == 0)

    def now(self) -> datetime:
        """Return the current time from the monitor's clock."""
        return self.clock()

    def log(
        self,
        x: Any,
        format: str = "",  # noqa: A002 - the seed's parameter name
        process_func: Callable[[Any], Any] = str,
        *,
        stream: TextIO | None = None,
    ) -> None:
        """Print ``[<time> <counters>]: <x>`` (``x`` processed, then formatted as ``f'{x:{format}}'``)."""
        summary = self.summary()
        counters = " ".join(v for k, v in summary.items() if k in _ABBREVIATION_KEYS)
        prefix = f"{summary['last']} {counters}" if counters else summary["last"]
        out = stream or self.stream or sys.stdout
        out.write(f"[{prefix}]: {process_func(x):{format}}\n")

    def report(self, text: str) -> None:
        """Print a status line as xmen's monitor did (``[<time> <counters>]: <text>``), unless ``quiet``.

        The line is also logged at INFO for programs that read the log instead.
        """
        logger.info("%s", text)
        if not self.quiet:
            self.log(text)

    # ------------------------------------------------------------------------------------------ state
    @property
    def step(self) -> int:
        """Completed steps (innermost loop iterations)."""
        return self._counts[0]

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._counts[1]

    @property
    def era(self) -> int:
        """Completed eras."""
        return self._counts[2]

    @property
    def eon(self) -> int:
        """Completed eons."""
        return self._counts[3]

    @property
    def supereon(self) -> int:
        """Completed supereons."""
        return self._counts[4]

    @property
    def triggers(self) -> dict[str, int]:
        """All counters by full trigger name."""
        return {t.value: c for t, c in zip(TRIGGERS, self._counts, strict=True)}

    def set_triggers(self, **counts: int) -> None:
        """Set counters by name (``step=100, epoch=4``), e.g. after loading a checkpoint."""
        for name, value in counts.items():
            level = Trigger.parse(name).level
            self._counts[level] = int(value)
            self._schedule(level)

    def _active_levels(self) -> list[tuple[int, int]]:
        """Return ``(depth, level)`` of the running loops, outermost first."""
        return [(d, self._n_levels - 1 - d) for d in range(self._depth)]

    def summary(self, verbose: int = 0) -> dict[str, Any]:
        """Summarise the counters and timing.

        Returns:
            ``last`` (the time, ``%I:%M%p %d/%m/%y``); one entry per running loop, outermost first, keyed by its
            trigger's abbreviation, valued ``count/total`` (total = product of the loop lengths down to that level,
            omitted when unknown; see :attr:`triggers` for all counters); ``wall`` and ``end`` (estimated
            time left); with ``verbose``: ``next`` (time left in the innermost loop), ``step`` and ``m_step`` (last
            and mean step time), ``load`` and ``m_load`` (last and mean time fetching an item; measured only when a
            Timer hook is attached, else the step times include loading).
        """
        out: dict[str, Any] = {"last": self.clock().strftime(LAST_FORMAT)}
        total: int | None = 1
        active = self._active_levels()
        for depth, level in active:
            length = self._lengths[depth]
            total = total * length if total is not None and length is not None else None
            abbreviation = TRIGGERS[level].abbreviation
            out[abbreviation] = (
                f"{self._counts[level]}/{total}" if total is not None else str(self._counts[level])
            )
        wall = self.timer() - self._t0 if self._t0 is not None else 0.0
        steps = self._counts[0]
        times = self._step_times
        if times[2]:
            m_step = (times[1] + times[4]) / times[2]
        else:
            m_step = wall / steps if steps else 0.0
        # Every loop's length, the finished inner ones included (a timer at an epoch boundary runs after its step
        # loop ended): the steps of the whole run, and of what is left of the innermost running loop.
        lengths = self._lengths[: self._n_levels]
        known = bool(active) and all(n is not None for n in lengths)
        left = next_left = None
        if known:
            all_steps = math.prod(n for n in lengths if n is not None)
            left = max(all_steps - steps, 0) * m_step
            depth, level = active[-1]
            length = lengths[depth]
            assert length is not None  # known
            done = self._counts[level] % length if length else 0
            per_iteration = math.prod(n for n in lengths[depth + 1 :] if n is not None)
            next_left = max(length - done, 0) * per_iteration * m_step
        out["wall"] = str(timedelta(seconds=round(wall)))
        if left is not None:
            out["end"] = str(timedelta(seconds=round(left)))
        if verbose:
            if next_left is not None:
                out["next"] = str(timedelta(seconds=round(next_left)))
            if times[2]:
                out["step"] = str(timedelta(seconds=times[0]))
                out["m_step"] = str(timedelta(seconds=times[1] / times[2]))
                out["load"] = str(timedelta(seconds=times[3]))
                out["m_load"] = str(timedelta(seconds=times[4] / times[2]))
            else:
                out["step"] = out["m_step"] = str(timedelta(seconds=m_step))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.directory!r}, {self._counters_text()}, hooks={len(self.hooks)})"

    # ------------------------------------------------------------------------------------------ checkpoints
    def checkpoint(self, **modules: Any) -> list[Path]:
        """Save each ``name=object`` now, to ``<directory>/checkpoints/<name>/<step>.pt`` (all kept).

        Raises:
            ConfigError: The monitor has no directory.
            NotCheckpointableError: An object has no ``state_dict()``.
        """
        if self.directory is None:
            raise ConfigError(
                "Monitor.checkpoint needs a directory: Monitor(directory=...)", parameter="directory"
            )
        folder = Path(self.directory) / "checkpoints"
        for name, obj in modules.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise _checkpoint.NotCheckpointableError(name, obj)
        paths = [_checkpoint.save(folder, n, o, self.triggers, self.clock()) for n, o in modules.items()]
        self.record_checkpoints(dict(zip(modules, paths, strict=True)))
        return paths

    def load(
        self,
        directory: str | Path | None = None,
        step: int | None = None,
        attempt: bool = True,
        update_triggers: bool = True,
        **modules: Any,
    ) -> dict[str, Any]:
        """Load ``name=object`` modules from checkpoints and (if ``update_triggers``) restore the counters.

        Args:
            directory: The checkpoints folder; default ``<self.directory>/checkpoints``.
            step: The step to load; None loads the newest.
            attempt: If False, a missing checkpoint raises instead of logging a warning.
            update_triggers: Restore step, epoch, ... from the checkpoint.
            **modules: The objects to restore.

        Returns:
            The modules (``{}`` with a warning when there is no directory).

        Raises:
            CheckpointNotFoundError: ``attempt=False`` and a checkpoint is missing.
        """
        if directory is None:
            if self.directory is None:
                logger.warning("Monitor.load: no directory given and the monitor has none; nothing loaded")
                return {}
            directory = Path(self.directory) / "checkpoints"
        loaded, meta = _checkpoint.load(directory, step=step, attempt=attempt, **modules)
        if update_triggers and meta:
            self.set_triggers(**{t.value: meta.get(t.value, 0) for t in TRIGGERS})
        return loaded

    def close(self) -> None:
        """Flush the TensorBoard writer of this monitor's directory (it stays open for other users)."""
        if self.directory is not None and any(isinstance(h, TensorboardLogger) for h in self.hooks):
            get_writer(Path(self.directory) / "tensorboard").flush()


_ABBREVIATION_KEYS = frozenset(t.abbreviation for t in TRIGGERS)

#: The seed's name for the monitor with checkpoint and TensorBoard hooks; the same class.
TorchMonitor = Monitor
