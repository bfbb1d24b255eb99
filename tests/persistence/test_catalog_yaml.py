"""The run catalog reads params.yml and config.yml with the bounded loader (#12 item 11): a bomb in one folder
lists that run as damaged and every other run as usual; a bomb in config.yml is a ConfigError naming the file."""

from __future__ import annotations

import sys

from tests.experiment.test_yaml_limits import bomb, capped

LIST = r"""
import sys
import unitrack
frame = unitrack.runs(sys.argv[1])
for uid, row in frame.iterrows():
    print(row["name"], row["status"], row["error"])
"""

ROOTS = r"""
import os, sys
from unitrack.errors import ConfigError
from unitrack.persistence.catalog import known_roots
os.environ["UNITRACK_HOME"] = sys.argv[1]
try:
    known_roots()
except ConfigError as exc:
    print("ConfigError:", exc)
"""


def test_a_params_yml_bomb_lists_as_damaged_beside_the_other_runs(tmp_path):
    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.yml").write_text("_status: registered\n_name: " + name + "\na: 1\n")
    (tmp_path / "bad" / "params.yml").write_text("_status: registered\n" + bomb(flow=False))
    done = capped([sys.executable, "-c", LIST, str(tmp_path)])
    assert done.returncode == 0 and "MemoryError" not in done.stderr, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["good"].startswith("registered")
    assert lines["bad"].startswith("damaged") and "alias bomb" in lines["bad"], done.stdout


def test_a_config_yml_bomb_is_a_config_error_naming_the_file(tmp_path):
    (tmp_path / "config.yml").write_text("roots: []\n" + bomb(flow=False))
    done = capped([sys.executable, "-c", ROOTS, str(tmp_path)])
    assert done.returncode == 0 and "MemoryError" not in done.stderr, done.stderr[-2000:]
    assert (
        done.stdout.startswith("ConfigError:") and "config.yml" in done.stdout and "alias bomb" in done.stdout
    )
