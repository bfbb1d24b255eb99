"""YAML alias bombs are refused with a ConfigError naming the file or argument, wherever YAML is read (#12 item 11).

Every bomb runs in a subprocess whose address space is capped (RLIMIT_AS), so a regression fails with a
MemoryError in that process instead of eating the machine. On the old code a 368-character ``-u`` grew
``register`` past 1.4 GB and a 1.2 kB ``params.yml`` made ``view ROOT`` fail for the whole root.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unitrack.errors import ConfigError
from unitrack.experiment.paramfile import MAX_ALIAS_NODES, parse_user_yaml

WORKTREE = Path(__file__).resolve().parents[2]
CAP_BYTES = 1 << 30  # the processes below need well under 100 MB


def bomb(levels: int = 9, width: int = 9, flow: bool = True) -> str:
    """``width ** levels`` leaves from ``width * levels`` aliases: a few hundred characters."""
    names = [chr(ord("a") + i) for i in range(levels)]
    parts = [f"{names[0]}: &{names[0]} [{','.join(['lol'] * width)}]"]
    for prev, name in zip(names, names[1:], strict=False):
        parts.append(f"{name}: &{name} [{','.join([f'*{prev}'] * width)}]")
    return "{" + ", ".join(parts) + "}" if flow else "\n".join(parts) + "\n"


def bomb_value(key: str, levels: int = 9, width: int = 9) -> str:
    """The same bomb as the value of one parameter: ``{key: [&a [lol, ...], &b [*a, ...], ..., *i]}``."""
    names = [chr(ord("a") + i) for i in range(levels)]
    items = [f"&{names[0]} [{','.join(['lol'] * width)}]"]
    items += [
        f"&{name} [{','.join([f'*{prev}'] * width)}]" for prev, name in zip(names, names[1:], strict=False)
    ]
    return "{" + key + ": [" + ", ".join(items) + "]}"


def capped(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))

    env = {k: v for k, v in os.environ.items() if not k.startswith("UNITRACK_")}
    env["PYTHONPATH"] = str(WORKTREE)
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        args, capture_output=True, text=True, preexec_fn=limit, env=env, timeout=120, **kwargs
    )


def test_the_issue_s_bomb_is_short():
    assert len(bomb()) < 400 and len(bomb_value("x0")) < 400 and 9**9 > 300_000_000


def test_register_refuses_a_bomb_in_u(tmp_path):
    done = capped(
        [sys.executable, "-m", "unitrack", "register", "--root", str(tmp_path / "R"),
         "--experiment", str(WORKTREE / "examples" / "quadratic.py"), "-u", bomb_value("x0")]
    )  # fmt: skip
    assert done.returncode != 0
    assert "MemoryError" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "alias bomb" in done.stderr and "Invalid '{x0: [&a [lol," in done.stderr, done.stderr[-2000:]
    assert not [p for p in (tmp_path / "R").glob("*") if p.is_dir()]  # no experiment registered


def test_view_lists_the_other_runs_when_one_params_yml_is_a_bomb(tmp_path):
    registered = capped(
        [sys.executable, "-m", "unitrack", "register", "--root", str(tmp_path / "R"),
         "--experiment", str(WORKTREE / "examples" / "quadratic.py"), "-u", "{x0: 1.0 | 2.0}"]
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    runs = sorted(p.parent for p in (tmp_path / "R").glob("*/params.yml"))
    assert len(runs) == 2
    params = runs[0] / "params.yml"
    params.write_text(params.read_text() + bomb(flow=False).replace("a:", "zz_a:", 1).replace("*a", "*a"))
    assert len(params.read_bytes()) < 4000
    done = capped([sys.executable, "-m", "unitrack", "view", str(tmp_path / "R")])
    assert "MemoryError" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 0, done.stderr[-2000:]
    assert runs[1].name in done.stdout


LOADERS = r"""
import json, os, sys
from pathlib import Path
from unitrack.errors import UnitrackError

folder = Path(sys.argv[1])
bomb_text = sys.argv[2]
entry = "bomb: " + bomb_text + "\n" if bomb_text.startswith("{") else bomb_text  # after other keys
results = {}

def case(name, call):
    try:
        call()
        results[name] = ["ok", ""]
    except MemoryError:
        results[name] = ["MemoryError", ""]
    except UnitrackError as exc:
        results[name] = [type(exc).__name__ + (" ConfigError" if isinstance(exc, ValueError) else ""), str(exc)]

from unitrack.experiment.paramfile import dic_from_yml, load_param, parse_user_yaml
from unitrack.experiment.experiment import read_update
from unitrack.experiment.manager import ExperimentManager
from unitrack.experiment.config import GlobalExperimentManager
from unitrack.experiment.sweep import expand

(folder / "update.yml").write_text(bomb_text)
(folder / "run").mkdir()
(folder / "run" / "params.yml").write_text("_status: registered\n" + entry)
(folder / "root").mkdir()
(folder / "root" / "defaults.yml").write_text(bomb_text)
(folder / "root" / "experiment.yml").write_text("defaults: defaults.yml\n" + entry)
(folder / "home").mkdir()
(folder / "home" / "config.yml").write_text("roots: []\n" + entry)
os.environ["UNITRACK_HOME"] = str(folder / "home")

case("--update string", lambda: read_update(bomb_text, ["a"]))
case("--update file", lambda: read_update(str(folder / "update.yml"), ["a"]))
case("params.yml", lambda: load_param(folder / "run"))
case("defaults.yml", lambda: ExperimentManager(folder / "root").load_defaults())
case("experiment.yml", lambda: ExperimentManager(folder / "root").check_initialised())
case("config.yml", lambda: GlobalExperimentManager())
case("register string", lambda: expand(bomb_text, {"a": [], "b": []}))
case("dic_from_yml", lambda: dic_from_yml(string=bomb_text))
print(json.dumps(results))
"""


@pytest.mark.parametrize("flow", [True, False], ids=["flow", "block"])
def test_every_yaml_reader_refuses_a_bomb_naming_its_source(tmp_path, flow):
    text = bomb(flow=flow)
    done = capped([sys.executable, "-c", LOADERS, str(tmp_path), text])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    where = {
        "--update string": "--update value",
        "--update file": "update.yml",
        "params.yml": str(tmp_path / "run" / "params.yml"),
        "defaults.yml": "defaults.yml",
        "experiment.yml": "experiment.yml",
        "config.yml": "config.yml",
        "register string": "Invalid '",
        "dic_from_yml": "YAML string",
    }
    assert set(results) == set(where)
    for name, (kind, message) in results.items():
        assert kind.endswith("ConfigError"), (name, kind, message[:300])
        assert "alias bomb" in message and where[name] in message, (name, message[:500])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: &a [1, *a]", "recursive alias"),
        ("a: &a {b: *a}", "recursive alias"),
        ("[" * 150 + "]" * 150, "depth"),
    ],
)
def test_recursive_aliases_and_deep_nesting_are_refused(text, reason):
    done = capped(
        [sys.executable, "-c",
         "import sys\nfrom unitrack.experiment.paramfile import parse_user_yaml\n"
         "from unitrack.errors import ConfigError\n"
         "try:\n    parse_user_yaml(sys.argv[1])\nexcept ConfigError as exc:\n    print('refused:', exc)\n",
         text]
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("refused:"), done.stderr[-2000:]
    assert reason in done.stdout


def test_ordinary_anchors_and_merge_keys_still_work():
    text = "base: &base {lr: 0.1, depth: 3}\nsmall: {<<: *base, depth: 2}\nlist: &l [1, 2]\ncopy: *l\n"
    assert parse_user_yaml(text) == {
        "base": {"lr": 0.1, "depth": 3},
        "small": {"lr": 0.1, "depth": 2},
        "list": [1, 2],
        "copy": [1, 2],
    }


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 8))
def test_alias_expansion_is_bounded_not_banned(width, levels):
    """A document is refused exactly when its aliases add more than MAX_ALIAS_NODES nodes (computed, not built)."""
    text = bomb(levels=levels, width=width)
    leaves = sum(width**k for k in range(1, levels + 1))  # every sequence's items, expanded
    inner = sum(width ** (k - 1) for k in range(1, levels + 1))  # the sequence nodes themselves
    unique = 1 + 2 * levels + width + (levels - 1) * width  # mapping, keys, sequences, their items
    added = (1 + levels + inner + leaves) - unique
    if added > MAX_ALIAS_NODES:
        with pytest.raises(ConfigError, match="alias bomb"):
            parse_user_yaml(text)
    else:
        assert len(parse_user_yaml(text)) == levels
