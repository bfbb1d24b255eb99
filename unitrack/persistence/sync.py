"""Copy runs from one backend to another: only what the destination lacks (``unitrack sync SRC DST``).

A cluster job logs to a local ``hdf5://`` store with no network; afterwards (or beside it, ``--follow``) its runs
are copied to ``unitrack serve`` or PostgreSQL. :func:`sync` compares each source trial with the destination's
copy (same uid) and sends only the difference:

- a trial the destination lacks is created with the same uid (hash and revision), project and group, fields,
  timers, metric points and status. Where the destination writes many trials at once
  (:meth:`~unitrack.persistence.protocol.Protocol.insert_trials`: ``postgresql://`` in one transaction with a
  bulk copy of the points, ``socket://`` in one call per batch) whole trials go in batches; elsewhere, and for
  trials with artifacts or more than :data:`WHOLE_TRIAL_POINTS` points, the trial is created, its points
  follow in chunks, and its status comes last;
- of a trial it has: the metric points it lacks (a point is identified by its step: a step the destination lacks,
  or whose value differs, is sent; points without a step are sent past the ones it already holds), parameters,
  metadata and tags whose values differ, errors it has not recorded, a new description or status;
- artifacts kept beside the source run are read and stored with the destination's copy (see
  :mod:`unitrack.persistence.artifacts`).

Every step is idempotent, so a sync killed at any moment (SIGKILL included) is resumed by running it again, and a
second run with nothing new sends nothing. When a trial is complete in the destination, its copy's metadata
records ``synced_from: {<source>: <fingerprint>}``, the fingerprint of the source trial's summary as listed
before it was read (every field, and each metric's latest value and count of points logged,
:attr:`~unitrack.persistence.structure.Metric.logged`): a later sync lists both sides' summaries
(``find_trial_summaries``, which read no points) and reads the series of only the trials whose summary changed
since, including a change that leaves a metric's latest value as it was (``full=True`` compares every point of
every trial instead). A copied trial's status is set last, after its points (or with them, in one
transaction): a reader of the destination never sees a finished run with half its points. Timers (chronos) are
copied when the trial is first copied, and a timer the copy lacks (such as ``runtime``, which appears when a
run ends) is rebuilt exactly; observations added to a timer both copies already hold cannot be merged into the
other backend's aggregate and are left.

The source is read one batch of trials ahead, in a thread, while the previous batch is written.

Example:
    >>> from unitrack.persistence.backends.ephemeral import EphemeralProtocol
    >>> from unitrack.persistence.structure import Trial
    >>> src, dst = EphemeralProtocol(strict=False), EphemeralProtocol(strict=False)
    >>> t = src.new_trial(Trial(name="run", parameters={"lr": 0.1}))
    >>> src.log_trial_metrics(t, step=1, loss=0.5)
    >>> sync(src, dst).points, sync(src, dst).points
    (1, 0)
    >>> dst.fetch_trials(None)[0].metrics["loss"].values
    (0.5,)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from unitrack.errors import NotFoundError, UnitrackError
from unitrack.persistence.artifacts import METADATA_KEY, artifact_entries, log_artifacts, read_artifact
from unitrack.persistence.protocol import Protocol
from unitrack.persistence.query import Query
from unitrack.persistence.serialization import to_json
from unitrack.persistence.structure import (
    ChronoObservation,
    Metric,
    MetricPoint,
    Project,
    Status,
    Trial,
    TrialGroup,
    TrialUpdate,
)

__all__ = ["STAMP_KEY", "SyncReport", "fingerprint", "source_id", "sync", "trial_differences"]

logger = logging.getLogger(__name__)

#: Points per write of a trial copied in chunks: large enough to amortise a round trip, small enough for a
#: server frame (8 MiB).
CHUNK_POINTS = 20_000
#: Trials read with one query (and written with one ``insert_trials``) at most.
BATCH_TRIALS = 100
#: About how many points one batch of trials holds (read ahead in memory, then written at once).
BATCH_POINTS = 200_000
#: Trials with more points than this are copied in chunks (created, points, status) rather than whole.
WHOLE_TRIAL_POINTS = 50_000
#: Trials whose summaries are read with one query.
LIST_TRIALS = 1000
#: The metadata key of a copied trial recording what it was copied from: ``{source id: fingerprint}``.
STAMP_KEY = "synced_from"


def source_id(protocol: Protocol) -> str:
    """A stable name for a backend: its URI without credentials (the class name when it has none)."""
    uri = getattr(protocol, "uri", None)
    if uri is not None and hasattr(uri, "redacted"):
        text = str(uri.redacted())
        return text.replace(":***@", "@")
    return type(protocol).__name__


def fingerprint(trial: Trial) -> str:
    """sha256 of a trial's summary: every field, each metric's latest value and count of points logged (not its
    points), no sync stamp."""
    data = to_json(trial)
    data["metrics"] = {name: [metric.latest, metric.logged] for name, metric in sorted(trial.metrics.items())}
    data["metadata"] = {k: v for k, v in data["metadata"].items() if k != STAMP_KEY}
    text = json.dumps(data, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class SyncReport:
    """What one :func:`sync` did."""

    projects: int = 0
    groups: int = 0
    trials_created: int = 0
    trials_updated: int = 0
    trials_unchanged: int = 0
    points: int = 0
    artifacts: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def trials(self) -> int:
        """Trials looked at."""
        return self.trials_created + self.trials_updated + self.trials_unchanged + len(self.failed)

    def __str__(self) -> str:
        rate = self.points / self.seconds if self.seconds else 0.0
        text = (
            f"{self.trials} trial(s): {self.trials_created} created, {self.trials_updated} updated, "
            f"{self.trials_unchanged} unchanged; {self.points:,} point(s) ({rate:,.0f}/s), "
            f"{self.artifacts} artifact(s), {self.projects} project(s), {self.groups} group(s) "
            f"in {self.seconds:.2f} s"
        )
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


def _same(a: Any, b: Any) -> bool:
    """Equal values (NaN equals NaN; 1 equals 1.0, as a JSON round trip makes them; True does not equal 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _missing_points(name: str, src: Metric, dst: Metric | None) -> list[MetricPoint]:
    """The points of ``src`` the destination's series ``dst`` lacks (or holds with another value)."""
    if dst is None or not dst.values:
        return [MetricPoint.checked(name, s, v) for s, v in zip(src.steps, src.values, strict=True)]
    have = {s: v for s, v in zip(dst.steps, dst.values, strict=True) if s is not None}
    unstepped_have = sum(1 for s in dst.steps if s is None)
    out: list[MetricPoint] = []
    unstepped_seen = 0
    for step, value in zip(src.steps, src.values, strict=True):
        if step is None:
            unstepped_seen += 1
            if unstepped_seen > unstepped_have:
                out.append(MetricPoint.checked(name, None, value))
        elif step not in have or not _same(have[step], value):
            out.append(MetricPoint.checked(name, step, value))
    return out


def _changed(src: Mapping[str, Any], dst: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in src.items() if k not in dst or not _same(dst[k], v)}


def _chrono_rebuild(name: str, state: Any) -> ChronoObservation | None:
    """One observation that makes a destination without timer ``name`` hold exactly ``state``.

    A backend adds an observation to the aggregate an update carries when the trial has no such timer yet, so the
    update carries ``state`` less one observation, and that observation (the mean for a timer of statistics,
    which leaves its min and max as they are).
    """
    if not isinstance(state, Mapping):
        return None
    kind = state.get("kind")
    before = dict(state)
    if kind == "stat":
        count, skipped, skip = (
            int(state.get("count", 0)),
            int(state.get("skipped", 0)),
            int(state.get("skip_obs", 0)),
        )
        if count > 0:
            x = float(state["sum"]) / count
            before.update(count=count - 1, sum=float(state["sum"]) - x, sum_sq=float(state["sum_sq"]) - x * x)
        elif 0 < skipped <= skip:
            x = float(state.get("first") or 0.0)
            before["skipped"] = skipped - 1
        else:
            return None
        return ChronoObservation(name, x, before)
    if kind == "value" and isinstance(state.get("val"), (int, float)):
        return ChronoObservation(name, float(state["val"]), {"kind": "value", "val": None})
    if kind in ("series", "ring") and isinstance(state.get("values"), list) and state["values"]:
        before["values"] = list(state["values"])[:-1]
        return ChronoObservation(name, float(state["values"][-1]), before)
    return None


def _missing_chronos(src: Trial, dst: Trial) -> tuple[ChronoObservation, ...]:
    out = []
    for name, state in src.chronos.items():
        if name in dst.chronos:
            continue
        obs = _chrono_rebuild(name, state)
        if obs is None:
            logger.warning("trial %s: timer %r cannot be copied (%r)", src.uid, name, state)
        else:
            out.append(obs)
    return tuple(out)


def trial_differences(src: Trial, dst: Trial | None) -> tuple[TrialUpdate | None, list[MetricPoint]]:
    """What ``dst`` (the destination's copy, None if it has none) lacks of ``src``.

    Returns:
        The field changes (None when there are none; artifacts excepted) and the metric points to send.
    """
    points: list[MetricPoint] = []
    for name, metric in src.metrics.items():
        points.extend(_missing_points(name, metric, None if dst is None else dst.metrics.get(name)))
    if dst is None:
        return None, points
    metadata = _changed(
        {k: v for k, v in src.metadata.items() if k not in (METADATA_KEY, STAMP_KEY)}, dst.metadata
    )
    errors: tuple[str, ...] = ()
    if tuple(dst.errors) != tuple(src.errors)[: len(dst.errors)]:
        logger.warning(
            "trial %s: the destination's errors differ from the source's; left as they are", src.uid
        )
    else:
        errors = tuple(src.errors)[len(dst.errors) :]
    update = TrialUpdate(
        parameters=_changed(src.parameters, dst.parameters),
        metadata=metadata,
        tags=_changed(src.tags, dst.tags),
        errors=errors,
        status=None if str(src.status) == str(dst.status) else src.status,
        description=src.description if src.description != dst.description else None,
        chronos=_missing_chronos(src, dst),
    )
    empty = not (
        update.parameters
        or update.metadata
        or update.tags
        or update.errors
        or update.chronos
        or update.status is not None
    ) and (update.description is None)
    return (None if empty else update), points


def _sync_artifacts(src: Protocol, dst: Protocol, trial: Trial, dst_trial: Trial | None) -> int:
    wanted = artifact_entries(trial)
    if not wanted:
        return 0
    have = artifact_entries(dst_trial) if dst_trial is not None else {}
    files: dict[str, bytes] = {}
    for name, entry in wanted.items():
        if have.get(name, {}).get("sha256") == entry.get("sha256"):
            continue
        try:
            files[name] = read_artifact(src, trial, name)
        except NotFoundError as exc:
            logger.warning("trial %s: artifact %s not copied: %s", trial.uid, name, exc)
    if files:
        log_artifacts(dst, trial.uid, files)
    return len(files)


def _chunks(points: list[MetricPoint], size: int) -> Iterable[tuple[MetricPoint, ...]]:
    for start in range(0, len(points), size):
        yield tuple(points[start : start + size])


def _ensure_projects_and_groups(src: Protocol, dst: Protocol, report: SyncReport) -> None:
    have = {p.uid for p in dst.fetch_projects(None)}
    for project in src.fetch_projects(None):
        if project.uid not in have:
            dst.insert_project(
                Project(
                    _uid=project.uid,
                    name=project.name,
                    description=project.description,
                    metadata=dict(project.metadata),
                )
            )
            report.projects += 1
    have_groups = {g.uid for g in dst.fetch_groups(None)}
    for group in src.fetch_groups(None):
        if group.uid not in have_groups:
            dst.insert_group(
                TrialGroup(
                    _uid=group.uid,
                    name=group.name,
                    description=group.description,
                    metadata=dict(group.metadata),
                    project_id=group.project_id,
                )
            )
            report.groups += 1


def _by_uid(protocol: Protocol, uids: list[str], summaries: bool) -> dict[str, Trial]:
    found: dict[str, Trial] = {}
    per_query = LIST_TRIALS if summaries else BATCH_TRIALS
    for start in range(0, len(uids), per_query):
        query = {"uid": {"$in": uids[start : start + per_query]}}
        trials = protocol.find_trial_summaries(query) if summaries else protocol.find_trials(query)
        found.update((t.uid, t) for t in trials)
    return found


def _points_of(trial: Trial) -> int:
    return sum(len(m) for m in trial.metrics.values())


def _batches(todo: list[Trial]) -> list[list[Trial]]:
    """Groups of at most :data:`BATCH_TRIALS` trials and about :data:`BATCH_POINTS` points (as their summaries
    count them), in order."""
    out: list[list[Trial]] = []
    batch: list[Trial] = []
    points = 0
    for summary in todo:
        size = sum(m.logged or 0 for m in summary.metrics.values())
        if batch and (len(batch) >= BATCH_TRIALS or points + size > BATCH_POINTS):
            out.append(batch)
            batch, points = [], 0
        batch.append(summary)
        points += size
    if batch:
        out.append(batch)
    return out


def _whole_copy(trial: Trial, stamp: dict[str, str]) -> Trial:
    """The destination's copy of a trial it lacks: every field and point, and the sync stamp."""
    metadata = {k: v for k, v in trial.metadata.items() if k not in (METADATA_KEY, STAMP_KEY)}
    metadata[STAMP_KEY] = stamp
    return replace(trial, metadata=metadata)


def _copy_trial(
    src: Protocol,
    dst: Protocol,
    trial: Trial,
    dst_trial: Trial | None,
    stamp: dict[str, str],
    report: SyncReport,
    chunk_points: int,
) -> None:
    update, points = trial_differences(trial, dst_trial)
    stamps = dict(dst_trial.metadata.get(STAMP_KEY) or {}) if dst_trial is not None else {}
    stamps.update(stamp)
    if dst_trial is None:
        # Created without points or status: the points follow, then the status, so a reader never sees a
        # finished run with part of its series.
        shell = replace(trial, metrics={}, status=Status.CreatedGroup, errors=())
        metadata = {k: v for k, v in shell.metadata.items() if k not in (METADATA_KEY, STAMP_KEY)}
        if dst.insert_trial(replace(shell, metadata=metadata)) is None:
            raise UnitrackError(f"trial {trial.uid} could not be created in the destination")
        report.trials_created += 1
        final = TrialUpdate(status=trial.status, errors=tuple(trial.errors), metadata={STAMP_KEY: stamps})
    else:
        if update is None and not points:
            report.trials_unchanged += 1
        else:
            report.trials_updated += 1
        base = update if update is not None else TrialUpdate()
        final = replace(base, metadata={**base.metadata, STAMP_KEY: stamps})
    for chunk in _chunks(points, chunk_points):
        dst.update_trial(trial.uid, TrialUpdate(metrics=chunk))
        report.points += len(chunk)
    report.artifacts += _sync_artifacts(src, dst, trial, dst_trial)
    dst.update_trial(trial.uid, final)  # last: the status, and the stamp saying the copy is complete


def sync(
    src: Protocol,
    dst: Protocol,
    query: Query = None,
    *,
    full: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    chunk_points: int = CHUNK_POINTS,
    source_name: str | None = None,
) -> SyncReport:
    """Copy to ``dst`` what it lacks of ``src``'s projects, groups and trials (matching ``query``).

    Args:
        src: Where the runs are.
        dst: Where they should also be.
        query: Only these trials (a trial query, e.g. ``{"status": "completed"}``); their projects and groups
            are always copied.
        full: Compare every point of every trial, also of trials whose summary is unchanged since the last sync.
        progress: Called as ``progress(trials done, trials in all, points sent so far)`` as trials are done.
        chunk_points: Points per write of a trial copied in chunks.
        source_name: How the copies' ``synced_from`` stamp names the source (default: its URI).

    Returns:
        What was copied. A trial that fails is recorded in ``failed`` (uid: reason) and the others go on.

    Raises:
        UnitrackError: when a backend cannot be read or a project/group cannot be created.
    """
    started = time.perf_counter()
    report = SyncReport()
    _ensure_projects_and_groups(src, dst, report)
    name = source_name or source_id(src)
    listed = src.find_trial_summaries(query)
    copies = _by_uid(dst, [t.uid for t in listed], summaries=True)
    todo: list[Trial] = []
    for trial in listed:
        copy = copies.get(trial.uid)
        stamp = (copy.metadata.get(STAMP_KEY) or {}).get(name) if copy is not None else None
        if not full and stamp is not None and stamp == fingerprint(trial):
            report.trials_unchanged += 1
        else:
            todo.append(trial)
    total = len(listed)
    done = report.trials_unchanged
    if progress is not None and done:
        progress(done, total, 0)
    # Whole trials in batches where the destination writes many at once (one transaction, one call).
    bulk = type(dst).insert_trials is not Protocol.insert_trials
    batches = _batches(todo)

    def read(batch: list[Trial]) -> dict[str, Trial]:
        return _by_uid(src, [t.uid for t in batch], summaries=False)

    # One thread reads the next batch from the source while this one is written to the destination.
    with ThreadPoolExecutor(1, "unitrack-sync-read") as reader:
        ahead = reader.submit(read, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            assert ahead is not None  # noqa: S101 - submitted for every batch
            sources = ahead.result()
            ahead = reader.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
            stamps = {t.uid: {name: fingerprint(t)} for t in batch}
            present = [t for t in batch if t.uid in sources]
            done += len(batch) - len(present)  # deleted from the source while syncing
            whole = [
                sources[t.uid]
                for t in present
                if bulk
                and t.uid not in copies
                and _points_of(sources[t.uid]) <= WHOLE_TRIAL_POINTS
                and not artifact_entries(sources[t.uid])
            ]
            taken = {t.uid for t in whole}
            rest = [sources[t.uid] for t in present if t.uid not in taken]
            if whole:
                try:
                    stored = dst.insert_trials([_whole_copy(t, stamps[t.uid]) for t in whole])
                except UnitrackError as exc:
                    # e.g. one trial the destination refuses (nothing of the batch was stored): each alone below
                    logger.warning(
                        "a batch of %d trials was not copied at once (%s); copying one by one",
                        len(whole),
                        exc,
                    )
                    stored = [False] * len(whole)
                for trial, ok in zip(whole, stored, strict=True):
                    if ok:
                        report.trials_created += 1
                        report.points += _points_of(trial)
                        done += 1
                    else:  # the destination has it after all (or refused the batch): compared below
                        rest.append(trial)
                if progress is not None:
                    progress(done, total, report.points)
            held = [t.uid for t in rest if t.uid in copies or t.uid in taken]
            targets = _by_uid(dst, held, summaries=False) if held else {}
            for source in rest:
                done += 1
                try:
                    _copy_trial(
                        src, dst, source, targets.get(source.uid), stamps[source.uid], report, chunk_points
                    )
                except UnitrackError as exc:  # one run that cannot be copied must not stop the others
                    report.failed[source.uid] = str(exc)
                    logger.error("trial %s (%s) was not copied: %s", source.uid, source.name, exc)
                if progress is not None:
                    progress(done, total, report.points)
    dst.commit()
    report.seconds = time.perf_counter() - started
    return report
