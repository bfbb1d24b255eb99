"""The examples of seed 003's experiment and functional sections, with the corrected argument order."""

from __future__ import annotations

import os
import sys
import time

from tests.experiment.experiments_for_tests import AnExperiment
from unitrack.experiment.functional import Root, functional_experiment


def functional(root: Root, greeting: str = "Running experiment"):  # @p what to write
    with open(os.path.join(root.directory, "log.txt"), "w") as f:  # the seed opened root.directory itself
        f.write(greeting)
    root.message({"time": time.time()})


def test_root_example(tmp_path):
    Exp = functional_experiment(functional)
    ex = Exp(str(tmp_path), "ex1")
    ex()
    assert (tmp_path / "ex1" / "log.txt").read_text() == "Running experiment"
    assert isinstance(ex.messages["time"], float)


def test_an_experiment_example_and_main_forms(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["an_experiment.py", "-x", str(tmp_path / "a")])
    exp = AnExperiment().main()
    assert exp.status == "finished"
    monkeypatch.setattr(sys, "argv", ["an_experiment.py", "-x", str(tmp_path / "b")])
    exp = AnExperiment()
    args = exp.parse_args()
    exp.main(args)
    assert exp.status == "finished"
    assert capsys.readouterr().out == "Hello World!\nHello World!\n"


def test_to_defaults_example_spelling(tmp_path):
    AnExperiment().to_yaml(str(tmp_path / "defaults root"))
    assert (tmp_path / "defaults root" / "defaults.yml").is_file()


def test_register_example_lands_in_root_name(tmp_path):
    ex = AnExperiment()
    ex.register(str(tmp_path), "ex1")
    assert ex.directory == str(tmp_path / "ex1")
    ex2 = AnExperiment(str(tmp_path / "an_experiment"), "first_experiment", purpose="inheritance example")
    assert ex2.directory == str(tmp_path / "an_experiment" / "first_experiment")
