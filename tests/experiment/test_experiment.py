"""Experiment: registration, properties, files, messages, lifecycle and the trial in the backend."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.experiment.experiments_for_tests import AnExperiment, Failing, Interrupted, NoRun, Typed
from unitrack.errors import AlreadyExistsError, ConfigError, ExperimentStateError, InvalidNameError
from unitrack.experiment import Experiment
from unitrack.experiment.experiment import Experiment as ExperimentByPath
from unitrack.persistence.registry import get_protocol
from unitrack.persistence.structure import CustomStatus, Status


def read_yaml(path):
    return YAML(typ="safe").load(Path(path).read_text())


def trial_of(ex):
    return ex.backend.fetch_trials({"uid": ex.trial_uid})[0]


def test_module_paths_and_facade():
    import unitrack
    from unitrack.experiment.functional import Root

    assert ExperimentByPath is Experiment is unitrack.Experiment
    assert unitrack.Root is Root and issubclass(Root, Experiment)


def test_register_with_name_second_lands_in_root_slash_name(tmp_path):
    ex = AnExperiment()
    ex.register(str(tmp_path / "x"), "ex1")
    assert ex.directory == ex.root == str(tmp_path / "x" / "ex1")
    assert (tmp_path / "x" / "ex1" / "params.yml").is_file()
    assert ex.status == "registered" and ex.registered and ex.created


def test_constructor_registers_when_root_given(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1", purpose="try", a="Bye")
    assert ex.status == "registered" and ex.purpose == "try" and ex.a == "Bye"
    params = read_yaml(tmp_path / "ex1" / "params.yml")
    assert params["a"] == "Bye" and params["_purpose"] == "try" and params["_status"] == "registered"


def test_link_is_an_alias_of_register(tmp_path):
    ex = AnExperiment().link(str(tmp_path), "ex1")
    assert ex.root == str(tmp_path / "ex1")


def test_params_yml_has_xmen_layout_iso_dates_and_help_comments(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1")
    text = (tmp_path / "ex1" / "params.yml").read_text()
    keys = list(read_yaml(tmp_path / "ex1" / "params.yml"))
    assert keys == [
        "_host", "_messages", "_meta", "_notes", "_purpose", "_root", "_status", "_timestamps", "_user",
        "_version", "a", "b",
    ]  # fmt: skip
    assert "a: Hello # a parameter (default=Hello)" in text
    assert ex.registered[4] == "-" and "T" in ex.registered  # ISO-8601
    assert "environ:" not in text


@pytest.mark.parametrize("name", ["a/b", "..", "../up", "a\\b", ""])
def test_name_with_separator_or_dotdot_is_refused(tmp_path, name):
    with pytest.raises(InvalidNameError):
        AnExperiment().register(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_names_get_suffixes_or_raise(tmp_path):
    AnExperiment(str(tmp_path), "ex1")
    assert AnExperiment(str(tmp_path), "ex1").root.endswith("ex1_1")
    assert AnExperiment(str(tmp_path), "ex1").root.endswith("ex1_2")
    with pytest.raises(AlreadyExistsError, match="already holds a params.yml"):
        AnExperiment().register(str(tmp_path), "ex1", force=False)
    with pytest.raises(ValueError, match="all hold a params.yml"):
        AnExperiment().register(str(tmp_path), "ex1", same_names=2)


def test_restart_reloads_params_messages_and_continues_the_trial(tmp_path):
    ex = Typed(str(tmp_path), "ex1", i=5)
    ex.message({"loss": 1.0})
    with ex:
        ex.message({"loss": 0.5})
    again = Typed().register(str(tmp_path), "ex1", restart=True)
    assert again.root == ex.root and again.i == 5 and again.status == "registered"
    assert again.messages == {"loss": 0.5}
    assert again.trial_uid == ex.trial_uid
    again.message({"loss": 0.25})
    assert trial_of(again).metrics["loss"].values == (1.0, 0.5, 0.25)


@pytest.mark.parametrize(
    "prop",
    ["start", "registered", "stopped", "last", "notes", "root", "directory", "status", "created", "purpose",
     "messages", "version", "user", "host"],
)  # fmt: skip
def test_properties_are_read_only(prop):
    with pytest.raises(AttributeError, match=f"Property {prop} cannot be set."):
        setattr(AnExperiment(), prop, 1)


def test_parameters_cannot_change_once_registered(tmp_path):
    ex = AnExperiment()
    ex.a = "changed while default"
    ex.register(str(tmp_path), "ex1")
    with pytest.raises(AttributeError, match='status = "default" or "detached"'):
        ex.a = "no"
    with pytest.raises(ExperimentStateError, match="parameters of a registered experiment cannot change"):
        ex.update({"a": "no"})


def test_note_add_remove_and_tags(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1")
    ex.note("first")
    ex.note("second")
    assert ex.notes == ["first", "second"]
    ex.note("first", remove=True)
    assert ex.notes == ["second"]
    assert read_yaml(tmp_path / "ex1" / "params.yml")["_notes"] == ["second"]
    assert trial_of(ex).tags["notes"] == ["second"]
    ex.note("second", remove=True)
    assert ex.notes is None


def test_message_keep_rules_leader_and_conversion(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1")
    ex.message({"acc": 0.5, "loss": 2.0})
    ex.message({"acc": 0.4}, keep="max")
    ex.message({"loss": 3.0}, keep="min")
    assert ex.messages == {"acc": 0.5, "loss": 2.0}
    ex.message({"acc": 0.9, "epoch": 3}, keep="max", leader="acc")
    assert ex.messages["epoch"] == 3
    ex.message({"acc": 0.1, "epoch": 4}, keep="max", leader="acc")
    assert ex.messages["epoch"] == 3
    ex.message({"list": [1, 2], "obj": Fraction(1, 4), "text": "ok"})
    assert ex.messages["list"] == "[1, 2]" and ex.messages["obj"] == 0.25 and ex.messages["text"] == "ok"
    with pytest.raises(ConfigError, match="keep="):
        ex.message({"a": 1}, keep="median")


def test_message_is_a_noop_until_registered():
    ex = AnExperiment()
    ex.message({"a": 1})
    assert ex.messages == {}


def test_messages_are_metrics_and_kept_values_are_metadata(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1", backend="ephemeral://")
    for i in range(3):
        ex.message({"loss": 1.0 / (i + 1), "note": "text"}, keep="min")
    ex.message({"loss": 9.0}, keep="min", step=100)
    trial = trial_of(ex)
    assert trial.metrics["loss"].steps == (1, 2, 3, 100)
    assert "note" not in trial.metrics
    assert trial.metadata["messages"] == {"loss": 1.0 / 3, "note": "text"}


def test_params_yml_refreshed_at_most_once_a_second_and_on_exit(tmp_path):
    ex = AnExperiment(str(tmp_path), "ex1")
    path = tmp_path / "ex1" / "params.yml"
    with ex:
        for i in range(50):
            ex.message({"i": i})
        assert read_yaml(path)["_messages"] in ({}, {"i": 0})  # written once at most within a second
    assert read_yaml(path)["_messages"] == {"i": 49}


def test_trial_fields_follow_the_mapping(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITRACK_PROJECT", "vision")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    ex = Typed(str(tmp_path / "root"), "ex1", purpose="a purpose")
    ex()
    protocol = get_protocol(f"hdf5://{tmp_path}/root")
    (trial,) = protocol.fetch_trials({"name": "ex1"})
    assert trial.project_id == "vision" and trial.description == "a purpose"
    assert trial.parameters == {"i": 3, "f": 0.5, "s": "x", "flag": False, "items": [1, 2], "opts": {"k": 1},
                                "maybe": None, "free": "anything", "seed": 42}  # fmt: skip
    assert len(trial.version) == 40 or trial.version.endswith(":Typed")
    assert trial.status == Status.Completed and trial.metadata["status"] == "finished"
    group = protocol.get_trial_group(trial.group_id)
    # The root's own backend: the group is named after the root's folder and records nothing of where it is.
    assert group.name == "root" and group.metadata["experiment_root"] is True
    for path in (tmp_path / "root").rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes(), f"a secret from the environment reached {path}"


def test_statuses_map_to_track_statuses(tmp_path):
    ok = AnExperiment(str(tmp_path), "ok", backend="ephemeral://")
    assert trial_of(ok).status == CustomStatus("registered", 1)
    assert ok() == "Hello World!"
    assert ok.status == "finished" and trial_of(ok).status == Status.Completed and ok.start and ok.stopped

    bad = Failing(str(tmp_path), "bad", backend="ephemeral://")
    with pytest.raises(RuntimeError, match="boom"):
        bad()
    trial = trial_of(bad)
    assert bad.status == "error" and trial.status == Status.Exception
    assert "RuntimeError: boom" in trial.errors[-1] and "Traceback" in trial.errors[-1]

    stopped = Interrupted(str(tmp_path), "stopped", backend="ephemeral://")
    with pytest.raises(KeyboardInterrupt):
        stopped()
    assert stopped.status == "stopped" and trial_of(stopped).status == Status.Interrupted
    assert read_yaml(tmp_path / "stopped" / "params.yml")["_status"] == "stopped"


def test_call_or_enter_without_registration_raises():
    with pytest.raises(ValueError, match="registered"):
        AnExperiment()()
    with pytest.raises(ValueError, match="registered"), AnExperiment():
        pass


def test_run_not_implemented():
    with pytest.raises(NotImplementedError):
        NoRun().run()


def test_to_defaults_and_from_yml_round_trip(tmp_path):
    ex = Typed(i=9, items=[3])
    ex.to_defaults(str(tmp_path))
    defaults = read_yaml(tmp_path / "defaults.yml")
    assert defaults["i"] == 9 and "_created" in defaults and "_version" in defaults
    assert "# an int (default=3)" in (tmp_path / "defaults.yml").read_text()
    loaded = Typed().from_yml(str(tmp_path / "defaults.yml"))
    assert loaded.status == "default" and loaded.i == 9 and loaded.items == [3]
    ex.register(str(tmp_path), "ex1")
    with pytest.raises(ExperimentStateError, match="unregistered experiment; this one is 'registered'"):
        ex.to_defaults(str(tmp_path))
    copied = Typed().from_yml(str(tmp_path / "ex1" / "params.yml"), copy=True)
    assert copied.status == "default" and copied.i == 9
    full = Typed().from_yml(str(tmp_path / "ex1" / "params.yml"))
    assert full.status == "registered" and full.root == ex.root


def test_from_yml_reads_old_xmen_keys_and_dates(tmp_path):
    (tmp_path / "params.yml").write_text(
        "_name: ex1\n_root: /old/root\n_created: 20-11-18-13-17-05-123456\n_status: finished\n"
        "_timestamps:\n  start: 20-11-18-13-17-06-000000\n_messages: {acc: 0.5}\na: Old\n_unknown: 1\nzz: 3\n"
    )
    ex = AnExperiment().from_yml(str(tmp_path / "params.yml"))
    assert ex.root == "/old/root/ex1" and ex.status == "finished" and ex.a == "Old"
    assert ex.created == "2020-11-18T13:17:05.123456" and ex.start == "2020-11-18T13:17:06.000000"
    assert ex.messages == {"acc": 0.5}


def test_from_yml_without_status_infers_it_from_the_file_name(tmp_path):
    (tmp_path / "params.yml").write_text("a: X\n")
    assert AnExperiment().from_yml(str(tmp_path / "params.yml")).status == "registered"


def test_from_yml_keeps_comments_of_a_loaded_params_file(tmp_path):
    AnExperiment(str(tmp_path), "ex1")
    path = tmp_path / "ex1" / "params.yml"
    path.write_text(path.read_text().replace("a: Hello", "# written by a manager\na: Hello"))
    again = AnExperiment().register(str(tmp_path), "ex1", restart=True)
    again.note("kept")
    assert "# written by a manager" in path.read_text()


def test_to_root_writes_defaults_and_a_quoted_script(tmp_path):
    root = tmp_path / "my root; rm -rf x"
    AnExperiment().to_root(str(root))
    script = (root / "script.sh").read_text()
    assert os.access(root / "script.sh", os.X_OK) and (root / "defaults.yml").is_file()
    assert "-m unitrack.experiment.launch tests.experiment.experiments_for_tests:AnExperiment" in script
    assert script.rstrip().endswith('--execute "$1"')
    assert "import" not in script


def test_repr_lists_specials_then_parameters(tmp_path):
    text = repr(AnExperiment())
    assert text.splitlines()[-3:] == ["parameters:", "  a: 'Hello'", "  b: 'World!'"]
    assert "status: default" in text


def test_detached_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = AnExperiment().detach()
    assert ex() == "Hello World!"
    assert ex.status == "finished" and list(tmp_path.iterdir()) == []


def test_uri_from_environment_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("UNITRACK_URI", f"file://{tmp_path}/elsewhere.json")
    AnExperiment(str(tmp_path / "root"), "ex1")()
    trials = get_protocol(f"file://{tmp_path}/elsewhere.json").fetch_trials({"parameters.a": "Hello"})
    assert [t.name for t in trials] == ["ex1"]
    assert not (tmp_path / "root" / ".unitrack").exists()  # nothing of the default backend under the root


def test_stdout_to_txt_tees_until_the_run_ends(tmp_path, capsys):
    ex = AnExperiment(str(tmp_path), "ex1")
    ex.stdout_to_txt()
    ex()
    print("after")
    assert (tmp_path / "ex1" / "out.txt").read_text() == "Hello World!\n"
    assert capsys.readouterr().out == "Hello World!\nafter\n"


class Fraction:
    def __init__(self, a, b):
        self.value = a / b

    def __float__(self):
        return self.value


def test_an_experiment_is_a_monitor_message_sink(tmp_path):
    from unitrack.monitor.sink import MessageSink

    ex = AnExperiment(str(tmp_path), "ex1", backend="ephemeral://")
    assert isinstance(ex, MessageSink)
    ex.message({"last": "01:17PM 18/11/20", "wall": "0:00:01"}, keep="latest", leader=None)
    assert ex.messages["wall"] == "0:00:01" and trial_of(ex).metrics == {}


@pytest.mark.parametrize("backend", ["ephemeral://", None])  # None: the embedded default, hdf5:// at the root
@pytest.mark.parametrize(("bad", "match"), [({"a/../b": 1.0}, "a/../b"), ({"huge": 10**400}, "float64")])
def test_a_message_the_backend_refuses_changes_nothing(tmp_path, backend, bad, match):
    from unitrack.errors import SchemaError

    ex = AnExperiment(str(tmp_path), "ex1", backend=backend)
    ex.message({"ok": 1.0})
    with pytest.raises(SchemaError, match=re.escape(match)):
        ex.message({"ok": 2.0, **bad})
    assert ex.messages == {"ok": 1.0}
    trial = trial_of(ex)
    assert trial.metrics["ok"].values == (1.0,) and trial.metadata["messages"] == {"ok": 1.0}


def test_with_block_handles_sigterm_only_when_nobody_else_does(tmp_path):
    import signal

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ex = AnExperiment(str(tmp_path), "default-handler")
    with ex:
        assert signal.getsignal(signal.SIGTERM) == ex._on_sigterm
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def mine(signum, frame):  # pragma: no cover - never delivered
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with AnExperiment(str(tmp_path), "program-handler"):
            assert signal.getsignal(signal.SIGTERM) is mine  # the program's own handler is left alone
        with AnExperiment(str(tmp_path), "asked").catch_sigterm() as asked:
            assert signal.getsignal(signal.SIGTERM) == asked._on_sigterm  # unless the experiment is told to
        assert signal.getsignal(signal.SIGTERM) is mine
        with AnExperiment(str(tmp_path), "off").catch_sigterm(False):
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_process_forked_inside_the_run_dies_of_sigterm_without_recording_a_status(tmp_path):
    import signal

    ex = AnExperiment(str(tmp_path), "forks")
    with ex:
        pid = os.fork()
        if pid == 0:  # the child: a data-loading worker, say
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000):  # the handler runs at the next bytecode boundary
                    pass
            finally:
                os._exit(3)  # reached only if the signal did not end the child
        _, code = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGTERM
        assert ex.status == "running" and trial_of(ex).metadata["status"] == "running"
    assert trial_of(ex).metadata["status"] == "finished"
