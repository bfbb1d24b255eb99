"""The write buffer of the networked backends (``socket://``, ``postgresql://``): one rule for what is acknowledged.

Updates that only log (metric points, timings, metadata) to a trial the client already knows are kept in a
bounded buffer and written by a background thread every ``batch_size`` updates or ``flush_interval_s`` seconds,
coalesced into one update per trial and stamped ``(writer, seq)``, so a batch written again after a lost
connection is applied once. Everything else (a status, tags, parameters...) is written at once, after every
buffered update (:meth:`UpdateBuffer.write_now`).

**Acknowledged** means: a logged value is acknowledged once ``flush()``, ``commit()`` or ``close()`` of its
backend returns after it was logged (with ``batch_size=1``: once the logging call itself returns). It is then
stored, and no lost connection, retry or killed client loses or duplicates it. A value logged since the last
flush lives in the client process only: a client killed before flushing never had it acknowledged. An error
while writing a batch in the background is logged and raised by the next call.
"""

from __future__ import annotations

import abc
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from unitrack.errors import SchemaError, UnitrackError
from unitrack.persistence.aggregators import Aggregator
from unitrack.persistence.protocol import Protocol, TrialRef
from unitrack.persistence.structure import MetricPoint, Trial, TrialUpdate

__all__ = ["UPDATE_FIELDS", "BufferedProtocol", "UpdateBuffer", "is_log_only", "merge_updates"]

logger = logging.getLogger(__name__)

#: The fields of a :class:`TrialUpdate` that carry data (``writer``/``seq`` are the stamp).
UPDATE_FIELDS = (
    "parameters",
    "metadata",
    "tags",
    "metrics",
    "chronos",
    "status",
    "errors",
    "project_id",
    "group_id",
    "description",
)

Item = TrialUpdate | tuple[MetricPoint, ...]


def merge_updates(updates: Sequence[Item]) -> TrialUpdate:
    """One update with the effect of applying ``updates`` in order (mappings merge, sequences append).

    A tuple of metric points stands for ``TrialUpdate(metrics=points)`` (the fast path of logging).
    """
    if len(updates) == 1 and isinstance(updates[0], TrialUpdate):
        return updates[0]
    parameters: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    metrics: list[Any] = []
    chronos: list[Any] = []
    errors: list[str] = []
    status = project_id = group_id = description = None
    for u in updates:
        if isinstance(u, tuple):
            metrics.extend(u)
            continue
        parameters.update(u.parameters)
        metadata.update(u.metadata)
        tags.update(u.tags)
        metrics.extend(u.metrics)
        chronos.extend(u.chronos)
        errors.extend(u.errors)
        status = u.status if u.status is not None else status
        project_id = u.project_id if u.project_id is not None else project_id
        group_id = u.group_id if u.group_id is not None else group_id
        description = u.description if u.description is not None else description
    return TrialUpdate(
        parameters=parameters,
        metadata=metadata,
        tags=tags,
        metrics=tuple(metrics),
        chronos=tuple(chronos),
        status=status,
        errors=tuple(errors),
        project_id=project_id,
        group_id=group_id,
        description=description,
    )


def is_log_only(update: TrialUpdate) -> bool:
    """Metrics, timings and metadata are buffered; status, tags, parameters, errors, description and moves are
    written at once."""
    return not (
        update.parameters
        or update.tags
        or update.errors
        or update.status is not None
        or update.project_id is not None
        or update.group_id is not None
        or update.description is not None
    )


class UpdateBuffer:
    """Buffered, ordered, stamped trial updates, written by ``send`` (a list of ``(uid, stamped update)``, at most
    one per trial, written all or nothing, safe to write again).

    Args:
        send: writes one batch; raises a :class:`UnitrackError` when it could not.
        writer_id: this client's stamp.
        batch_size: updates per batch; 1 writes every update before the call returns.
        flush_interval_s: the longest an update waits in the buffer.
        max_buffer: updates held at most; a full buffer makes the caller wait (with one warning).
        lock: held while writing, so synchronous writes are ordered after buffered ones.
        describe: where the updates go, for log lines.
    """

    def __init__(
        self,
        send: Callable[[list[tuple[str, TrialUpdate]]], None],
        *,
        writer_id: str,
        batch_size: int,
        flush_interval_s: float,
        max_buffer: int,
        lock: threading.RLock,
        describe: str,
    ) -> None:
        self._send = send
        self.writer_id = writer_id
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.lock = lock
        self.describe = describe
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Item]] = []
        self._failed: UnitrackError | None = None
        self._warned_full = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="unitrack-flush", daemon=True)
        self._thread.start()

    def stamp(self, update: TrialUpdate) -> TrialUpdate:
        """``update`` stamped with this writer and its next sequence number."""
        return TrialUpdate(
            **{k: getattr(update, k) for k in UPDATE_FIELDS}, writer=self.writer_id, seq=next(self._seq)
        )

    def raise_failed(self) -> None:
        """Raise (once) the error of a batch that failed in the background."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    def add(self, uid: str, item: Item) -> None:
        """Buffer a log-only update of trial ``uid`` (written before returning when ``batch_size`` is 1)."""
        self.raise_failed()
        if self.batch_size == 1:  # durable when the call returns: written here, errors raised here
            self.write_now(lambda: self._send([(uid, self.stamp(merge_updates([item])))]))
            return
        with self._cond:
            while len(self._pending) >= self.max_buffer and not self._closed:
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "%d updates buffered for %s; blocking until it catches up",
                        len(self._pending),
                        self.describe,
                    )
                self._cond.notify_all()
                self._cond.wait(1.0)
            self._pending.append((uid, item))
            if len(self._pending) >= self.batch_size:
                self._cond.notify_all()

    def write_now(self, write: Callable[[], Any]) -> Any:
        """Run ``write`` (a synchronous write) after every buffered update is written, before any later one.

        ``write`` stamps its update itself (:meth:`stamp`), so its ``seq`` follows those of the buffered ones.
        """
        with self.lock:
            self.flush()
            return write()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._closed and len(self._pending) < self.batch_size:
                    self._cond.wait(self.flush_interval_s)
                if self._closed:
                    return
            self.drain()

    def drain(self) -> None:
        """Write every buffered update, in order, one batch at a time; a failed batch is kept as the error."""
        with self.lock:
            while True:
                with self._cond:
                    if not self._pending:
                        return
                    take = self._pending[: self.batch_size]
                    del self._pending[: self.batch_size]
                    self._cond.notify_all()
                by_uid: dict[str, list[Item]] = {}
                for uid, item in take:
                    by_uid.setdefault(uid, []).append(item)
                batch = [(uid, self.stamp(merge_updates(items))) for uid, items in by_uid.items()]
                try:
                    self._send(batch)
                except UnitrackError as exc:
                    logger.error("a batch of %d updates to %s was lost: %s", len(take), self.describe, exc)
                    if self._failed is None:
                        self._failed = exc

    def flush(self) -> None:
        """Write every buffered update and wait until it is stored (acknowledged).

        Raises:
            UnitrackError: the error of a batch that failed (its updates were not stored).
        """
        self.drain()
        self.raise_failed()

    def close(self) -> None:
        """Stop the background thread (call :meth:`flush` first to keep what is buffered)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    @property
    def closed(self) -> bool:
        return self._closed


class BufferedProtocol(Protocol):
    """A protocol whose log-only updates of trials it knows wait in an :class:`UpdateBuffer` (``_buffer``);
    every other update is written at once, after everything buffered, by :meth:`_write_update_now`.

    Subclasses set ``_buffer`` and add each trial they insert or write to ``_known``.
    """

    _buffer: UpdateBuffer
    _known: set[str]

    @abc.abstractmethod
    def _write_update_now(self, uid: str, update: TrialUpdate) -> None:
        """Write one stamped update before returning (called with the buffer's lock held)."""

    def update_trial(self, uid: str, update: TrialUpdate) -> None:
        """Buffered when it only logs to a trial this object knows; written at once otherwise, after everything
        buffered."""
        if not isinstance(uid, str) or not uid:
            raise SchemaError(f"Expected a trial uid, not {uid!r}")
        if not isinstance(update, TrialUpdate):
            raise SchemaError(f"Expected a TrialUpdate, not {update!r}")
        if update.writer is not None or uid not in self._known or not is_log_only(update):

            def write() -> None:  # stamped after the buffered updates, so it applies once and in order
                self._write_update_now(
                    uid, update if update.writer is not None else self._buffer.stamp(update)
                )

            self._buffer.write_now(write)
            self._known.add(uid)
            return
        self._buffer.add(uid, update)

    def log_trial_metrics(
        self,
        trial: TrialRef,
        step: Any = None,
        aggregator: Callable[[], Aggregator] | None = None,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Protocol.log_trial_metrics`; points of a known trial go straight to the buffer."""
        uid = trial.uid if isinstance(trial, Trial) else trial
        if not isinstance(uid, str) or uid not in self._known:
            super().log_trial_metrics(trial, step, aggregator, **kwargs)
            return
        self._buffer.add(uid, tuple(MetricPoint(k, step, v) for k, v in kwargs.items()))
