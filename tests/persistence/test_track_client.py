"""TrackClient and TrialLogger: track's user API over any backend."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from unitrack.errors import NotFoundError, SchemaError
from unitrack.persistence import track
from unitrack.persistence.lifecycle import read_heartbeat, run_status
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import Status, Trial, compute_hash
from unitrack.persistence.track import TrackClient
from unitrack.store.readers import CollectionReader

WORKTREE = Path(__file__).resolve().parents[2]


def test_delayed_trial_is_created_by_log_arguments(tmp_path: Path) -> None:
    client = TrackClient(f"file://{tmp_path}/db.json")
    client.set_project(name="p")
    client.set_group(name="g")
    pending = client.new_trial(name="t")  # waits for parameters (they are part of the hash)
    assert pending.is_pending and client.trial is None
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    args = client.log_arguments(parser.parse_args([]))
    assert args.lr == 0.1 and not pending.is_pending
    with client:
        for step in range(3):
            client.log_metrics(step=step, loss=1.0 / (step + 1))
        with client.chrono("eval"):
            pass
    client.close()
    again = TrackClient(f"file://{tmp_path}/db.json")
    (trial,) = again.protocol.fetch_trials({"parameters.lr": 0.1})
    assert trial.status is Status.Completed
    assert trial.metrics["loss"].to_dict() == {0: 1.0, 1: 0.5, 2: pytest.approx(1 / 3)}
    assert trial.project_id == "p" and trial.group_id == client.group.uid  # type: ignore[union-attr]
    assert "eval" in trial.chronos and "runtime" in trial.chronos
    again.close()


def test_exception_inside_the_trial_is_recorded_and_not_swallowed() -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", parameters={"a": 1})
    with pytest.raises(ZeroDivisionError), client:
        client.log_metrics(x=1)
        _ = 1 / 0
    (trial,) = client.protocol.fetch_trials(None)
    assert trial.status is Status.Exception and "ZeroDivisionError" in trial.errors[-1]


def test_an_identical_trial_is_a_new_revision_and_resume_continues_the_newest() -> None:
    client = TrackClient("ephemeral://")
    first = client.new_trial(name="t", parameters={"a": 1})
    second = client.new_trial(name="t", parameters={"a": 1})
    forced = client.new_trial(force=True, name="t", parameters={"a": 1})
    resumed = client.new_trial(name="t", parameters={"a": 1}, resume=True)
    other = client.new_trial(name="t", parameters={"a": 2}, resume=True)  # nothing to resume: created
    assert [log.trial.revision for log in (first, second, forced)] == [0, 1, 2]  # type: ignore[union-attr]
    assert len({first.uid, second.uid, forced.uid}) == 3 and first.trial.hash == forced.trial.hash  # type: ignore[union-attr]
    assert resumed.uid == forced.uid and other.trial.revision == 0  # type: ignore[union-attr]
    assert len(client.protocol.fetch_trials(None)) == 4


def test_arguments_alias_tags_metadata_and_report() -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="t", arguments={"a": 1})
    client.add_tags(team="x")
    client.log_metadata(host="h")
    out = io.StringIO()
    text = client.report(file=out)
    data = json.loads(out.getvalue())
    assert data == json.loads(text)
    assert (
        data["parameters"] == {"a": 1} and data["tags"] == {"team": "x"} and data["metadata"]["host"] == "h"
    )


def test_set_trial_by_uid_and_missing_trial() -> None:
    client = TrackClient("ephemeral://")
    logger = client.new_trial(name="t", parameters={})
    other = TrackClient(client.protocol)
    assert other.set_trial(uid=logger.uid).uid == logger.uid
    with pytest.raises(NotFoundError, match="does not exist"):
        TrackClient(client.protocol).set_trial(uid="nope_0")
    with pytest.raises(NotFoundError, match="get_only"):
        TrackClient(client.protocol).set_project(name="absent", get_only=True)


def test_environment_preselects_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNITRACK_PROJECT", "from-env")
    client = TrackClient("ephemeral://")
    assert client.project is not None and client.project.name == "from-env"


def test_default_backend_comes_from_unitrack_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNITRACK_URI", f"file://{tmp_path}/env.json")
    client = TrackClient()
    client.new_trial(name="t", parameters={})
    client.close()
    assert (tmp_path / "env.json").exists()


# ------------------------------------------------------------------------------------------------ identity
def test_readme_order_new_trial_then_log_arguments_on_the_returned_logger() -> None:
    client = TrackClient("ephemeral://")
    trial = client.new_trial(name="readme")
    trial.log_arguments(argparse.Namespace(lr=0.1, batch=32))
    trial.log_metrics(step=0, loss=1.0)
    trial.finish()
    (stored,) = client.protocol.fetch_trials(None)
    assert stored.parameters == {"lr": 0.1, "batch": 32}
    assert stored.hash == compute_hash("readme", None, {"lr": 0.1, "batch": 32})
    assert stored.status is Status.Completed and stored.metrics["loss"].to_dict() == {0: 1.0}


def test_track_e2e_order_gives_one_trial_per_distinct_arguments() -> None:
    client = TrackClient("ephemeral://")
    client.set_project(name="e2e")
    runs = [argparse.Namespace(lr=0.1), argparse.Namespace(lr=0.2), argparse.Namespace(lr=0.1)]
    for i, args in enumerate(runs):
        client.new_trial()
        client.add_tags(run=i)
        client.log_arguments(args)
        with client:
            client.log_metrics(step=0, loss=float(i))
    trials = client.protocol.fetch_trials({"project_id": "e2e"})
    assert sorted((t.parameters["lr"], t.revision, t.tags["run"]) for t in trials) == [
        (0.1, 0, 0),
        (0.1, 1, 2),
        (0.2, 0, 1),
    ]
    assert all(t.metrics["loss"].to_dict() == {0: float(t.tags["run"])} for t in trials)


def test_what_is_logged_before_the_arguments_lands_in_the_trial_they_create() -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="early")
    client.log_metadata(host="h1")
    client.add_tags(team="x")
    client.log_metrics(step=0, loss=1.0)  # starts the run: it waits for its parameters
    with client.chrono("load"):
        pass
    assert client.protocol.fetch_trials(None) == []  # nothing written under a hash without the parameters
    client.log_arguments({"lr": 0.1})
    client.log_metrics(step=1, loss=0.5)
    client.finish()
    (trial,) = client.protocol.fetch_trials(None)
    assert trial.hash == compute_hash("early", None, {"lr": 0.1})
    assert trial.metadata["host"] == "h1" and trial.tags == {"team": "x"}
    assert trial.metrics["loss"].to_dict() == {0: 1.0, 1: 0.5}
    assert "load" in trial.chronos and trial.status is Status.Completed


def test_a_run_that_never_logs_arguments_is_created_without_them_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = TrackClient("ephemeral://")
    client.new_trial(name="bare")
    with client:
        client.log_metrics(step=0, loss=2.0)
    (trial,) = client.protocol.fetch_trials(None)
    assert trial.parameters == {} and trial.metrics["loss"].latest == 2.0
    assert trial.status is Status.Completed
    assert "created without parameters" in caplog.text


def test_namespaces_and_parsers_are_accepted_wherever_a_dict_is(monkeypatch: pytest.MonkeyPatch) -> None:
    client = TrackClient("ephemeral://")
    from_namespace = client.new_trial(name="ns", arguments=argparse.Namespace(lr=0.1))
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=2)
    monkeypatch.setattr(sys, "argv", ["train.py", "--depth", "5"])
    from_parser = client.new_trial(name="parser", parameters=parser)
    later = client.new_trial(name="later")
    later.log_arguments(parser)
    assert from_namespace.trial.parameters == {"lr": 0.1}  # type: ignore[union-attr]
    assert from_parser.trial.parameters == {"depth": 5}  # type: ignore[union-attr]
    assert later.trial.parameters == {"depth": 5}  # type: ignore[union-attr]
    with pytest.raises(SchemaError, match="Namespace"):
        client.new_trial(name="bad", parameters=[("lr", 0.1)])


def test_continuing_a_run_is_explicit_set_trial_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    first = TrackClient("ephemeral://")
    first.new_trial(name="t", parameters={"a": 1})
    with first:
        first.log_metrics(step=0, loss=1.0)
    uid = first.logger.uid  # type: ignore[union-attr]
    monkeypatch.setenv("UNITRACK_TRIAL_ID", uid)  # e.g. set for a requeued job
    again = TrackClient(first.protocol)
    with again:
        again.log_metrics(step=1, loss=0.5)
    (trial,) = first.protocol.fetch_trials(None)
    assert trial.uid == uid and trial.metrics["loss"].to_dict() == {0: 1.0, 1: 0.5}


def test_a_trial_waiting_too_long_for_its_parameters_is_created_without_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(track, "PENDING_POINTS_LIMIT", 5)
    client = TrackClient("ephemeral://")
    client.new_trial(name="t")
    with client:
        for step in range(8):
            client.log_metrics(step=step, loss=float(step))
        client.log_arguments(lr=0.1)  # merged into the trial that exists by now
    (trial,) = client.protocol.fetch_trials(None)
    assert len(trial.metrics["loss"]) == 8 and trial.parameters == {"lr": 0.1}
    assert "more than 5 metric points" in caplog.text


# ------------------------------------------------------------------------------- real processes and signals
SCRIPT = textwrap.dedent(
    """
    import sys, time
    import unitrack

    uri, mode, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    client = unitrack.TrackClient(uri)
    client.set_project(name="p")
    client.new_trial(name="t", parameters={"a": 1})
    if mode == "run":
        with client:
            for i in range(3):
                client.log_metrics(step=i, v=value)
    elif mode == "exit":  # no with-block: the interpreter's exit ends the run
        for i in range(3):
            client.log_metrics(step=i, v=value)
    elif mode == "raise":
        client.log_metrics(step=0, v=value)
        raise ValueError("boom")
    else:  # loop until a signal: each line is an acknowledged step
        with client:
            i = 0
            while True:
                client.log_metrics(step=i, v=value)
                print(i, flush=True)
                i += 1
                time.sleep(0.005)
    """
)


@pytest.fixture(params=["hdf5", "file"])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"hdf5://{tmp_path}/runs" if request.param == "hdf5" else f"file://{tmp_path}/db.json"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "t.py"
    path.write_text(SCRIPT)
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_") or k == "UNITRACK_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(WORKTREE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def run_script(script: Path, uri: str, mode: str, value: float = 0.5) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), uri, mode, str(value)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_loop(script: Path, uri: str, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(script), uri, "loop", "0.5"],
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline(), proc.stderr.read()  # type: ignore[union-attr]
    return proc


def read_trials(uri: str) -> list[Trial]:
    # A writer killed mid-line leaves a torn journal tail, which a reader drops with a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with get_protocol(uri) as protocol:
            return protocol.fetch_trials({"name": "t"})


def test_running_the_same_script_twice_gives_two_runs(script: Path, uri: str, tmp_path: Path) -> None:
    for value in (0.5, 0.9):
        done = run_script(script, uri, "run", value)
        assert done.returncode == 0, done.stderr
    trials = sorted(read_trials(uri), key=lambda t: t.revision)
    assert [(t.revision, t.metrics["v"].values, t.status) for t in trials] == [
        (0, (0.5, 0.5, 0.5), Status.Completed),
        (1, (0.9, 0.9, 0.9), Status.Completed),
    ]
    assert trials[0].hash == trials[1].hash
    if uri.startswith("hdf5"):  # revision N > 0 of trial t is the cox store t_N
        frame = CollectionReader(str(tmp_path / "runs")).df("metrics")
        assert frame.groupby("exp_id")["value"].max().to_dict() == {"t": 0.5, "t_1": 0.9}
        summaries = {
            p.parent.name: json.loads(p.read_text())["uid"] for p in (tmp_path / "runs").glob("*/trial.json")
        }
        assert summaries == {"t": trials[0].uid, "t_1": trials[1].uid}


def test_a_run_left_by_a_normal_exit_is_completed(script: Path, uri: str) -> None:
    done = run_script(script, uri, "exit")
    assert done.returncode == 0, done.stderr
    (trial,) = read_trials(uri)
    assert trial.status is Status.Completed and trial.metrics["v"].to_dict() == {0: 0.5, 1: 0.5, 2: 0.5}


def test_a_run_ended_by_an_uncaught_exception_records_it(script: Path, uri: str) -> None:
    done = run_script(script, uri, "raise")
    assert done.returncode == 1 and "ValueError: boom" in done.stderr
    (trial,) = read_trials(uri)
    assert trial.status is Status.Exception and "ValueError: boom" in trial.errors[-1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_inside_with_client_record_interrupted(
    script: Path, uri: str, signum: int
) -> None:
    proc = start_loop(script, uri)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    # SIGTERM: the process ends as the signal would have (143); Ctrl-C: Python ends it by SIGINT itself.
    assert proc.returncode == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGINT), err
    (trial,) = read_trials(uri)
    assert trial.status is Status.Interrupted, err
    assert "Terminated" in trial.errors[-1] or "KeyboardInterrupt" in trial.errors[-1]


def test_a_killed_run_is_lost_and_a_live_one_beats(script: Path, uri: str) -> None:
    proc = start_loop(script, uri, UNITRACK_HEARTBEAT_S="0.2")
    try:
        (first,) = read_trials(uri)
        assert run_status(first) == "running"
        beat = read_heartbeat(first)
        assert beat is not None and beat.pid == proc.pid and beat.interval_s == 0.2
        assert beat.started == pytest.approx(psutil.Process(proc.pid).create_time(), abs=0.01)
        wait_until(
            lambda: read_heartbeat(read_trials(uri)[0]).last_seen > beat.last_seen,  # type: ignore[union-attr,operator]
            timeout_s=30,
            what="a newer heartbeat",
        )
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    wait_until(
        lambda: run_status(read_trials(uri)[0]) == "lost", timeout_s=30, what="the killed run to be lost"
    )
    (trial,) = read_trials(uri)
    assert trial.status is Status.Running  # lost is derived, never stored
    beat = read_heartbeat(trial)
    assert beat is not None and beat.last_seen is not None
    # Seen from another host only the silence counts: lost once no beat came for the timeout.
    assert run_status(trial, host="elsewhere", now=beat.last_seen + 1.0, timeout_s=5.0) == "running"
    assert run_status(trial, host="elsewhere", now=beat.last_seen + 6.0, timeout_s=5.0) == "lost"
    # The same pid given to a later process (its start time differs) is no longer the run.
    assert (
        run_status(
            replace(
                trial,
                metadata={**trial.metadata, "process": {**trial.metadata["process"], "pid": os.getpid()}},
            )
        )
        == "lost"
    )


STALE_HANDLER = r"""
import os, signal, sys, time
from unitrack import TrackClient

client = TrackClient("ephemeral://")
log = client.new_trial(name="t", parameters={"a": 1})
log.start()
ours = signal.getsignal(signal.SIGTERM)
framework_saved = signal.signal(signal.SIGTERM, lambda s, f: None)  # a framework stacks its handler on ours
log.finish()
signal.signal(signal.SIGTERM, framework_saved)  # ... and puts ours back after our run ended
assert signal.getsignal(signal.SIGTERM) == ours
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


def test_a_handler_put_back_after_its_run_ended_ends_the_process_as_sigterm_would() -> None:
    done = subprocess.run([sys.executable, "-c", STALE_HANDLER], capture_output=True, text=True, timeout=60)
    assert done.stdout == "ready\n", done.stderr
    assert done.returncode == -signal.SIGTERM and "Traceback" not in done.stderr, done.stderr


def test_a_logger_that_does_not_catch_sigterm_leaves_the_handler_alone() -> None:
    client = TrackClient("ephemeral://")
    log = client.new_trial(name="t", parameters={"a": 1})
    log.catch_sigterm = False
    with log:
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert log.refresh().status is Status.Completed
