from __future__ import annotations

import shlex
import subprocess
import sys

from unitrack.store import Store
from unitrack.store.tensorboard_view import build_command, collect_runs, main


def make_runs(out_dir):
    ids = {}
    for slope in range(5):
        with Store(out_dir, f"s{slope}") as s:
            s.add_table("metadata", {"slope": int, "tag": str})
            s["metadata"].append_row({"slope": slope, "tag": "a,b:c"})
            ids[slope] = s.exp_id
    with Store(out_dir, "nometa") as s:
        s.add_table("other", {"x": int})
    return ids


def test_dry_run_prints_argument_list(out_dir, capsys):
    make_runs(out_dir)
    code = main(
        [
            "--logdir",
            out_dir,
            "--format-str",
            "slope-{slope}",
            "--filter-param",
            "slope",
            "[1-3]",
            "--dry-run",
        ]
    )
    assert code == 0
    argv = shlex.split(capsys.readouterr().out)
    spec = argv[argv.index("--logdir_spec") + 1]
    names = [part.split(":", 1)[0] for part in spec.split(",")]
    assert names == ["slope-1-s1", "slope-2-s2", "slope-3-s3"]
    assert argv[argv.index("--port") + 1] == "6006"


def test_separators_in_names_are_escaped(out_dir):
    make_runs(out_dir)
    runs = collect_runs(out_dir, "metadata", [("slope", "0")], "{tag}")
    assert runs == [("a_b_c-s0", f"{out_dir}/s0/tensorboard")]
    command = build_command(runs, 7000)
    assert command[-4:] == ["--logdir_spec", f"a_b_c-s0:{out_dir}/s0/tensorboard", "--port", "7000"]


def test_multiple_filters_and_bad_template(out_dir, capsys):
    make_runs(out_dir)
    assert [
        n for n, _ in collect_runs(out_dir, "metadata", [("slope", "[0-3]"), ("slope", "[2-9]")], "{slope}")
    ] == [
        "2-s2",
        "3-s3",
    ]
    assert main(["--logdir", out_dir, "--format-str", "{missing}", "--dry-run"]) == 1
    assert "missing" in capsys.readouterr().err


def test_module_entry_point(out_dir):
    make_runs(out_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "unitrack.store.tensorboard_view",
            "--logdir",
            out_dir,
            "--format-str",
            "x{slope}",
            "--port",
            "6007",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "x4-s4:" in result.stdout and "--port 6007" in result.stdout
