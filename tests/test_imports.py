"""Import cost and layering: `import unitrack` and `unitrack --help` stay light; imports point down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import unitrack

ROOT = Path(__file__).resolve().parents[1]
RANK = {
    "errors": 0,
    "store": 1,
    "persistence": 2,
    "experiment": 3,
    "monitor": 3,
    "integrations": 4,
    "ui": 4,
    "lightning": 5,  # unitrack/lightning.py, the seed's path of integrations.lightning
    "cli": 5,
}


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(out.split())


def test_import_unitrack_loads_neither_torch_nor_pandas() -> None:
    loaded = _modules_after("import unitrack; unitrack.get_protocol('ephemeral://')")
    assert not {"torch", "pandas", "tensorboardX", "tables", "typer"} & loaded


def test_cli_help_loads_neither_torch_nor_pandas() -> None:
    loaded = _modules_after(
        "import sys; sys.argv = ['unitrack', '--help']\n"
        "from unitrack.cli.app import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert not {"torch", "pandas", "tables"} & loaded


def test_every_facade_name_resolves() -> None:
    for name in unitrack.__all__:
        assert getattr(unitrack, name) is not None


def _upward_imports(root: Path) -> list[str]:
    bad = []
    for path in (root / "unitrack").rglob("*.py"):
        parts = path.relative_to(root / "unitrack").parts
        layer = parts[0].removesuffix(".py")
        if layer not in RANK:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                p = name.split(".")
                if p[0] == "unitrack" and len(p) > 1 and p[1] in RANK:
                    other = p[1]
                    if RANK[other] > RANK[layer] or (RANK[other] == RANK[layer] and other != layer):
                        bad.append(f"{path.relative_to(root)}:{node.lineno}: {layer} imports {name}")
    return bad


def test_imports_point_down() -> None:
    bad = _upward_imports(ROOT)
    assert not bad, "upward imports:\n" + "\n".join(bad)
